"""Semantic-segmentation datasets: PASCAL VOC 2012 (palette PNG masks, 255 = ignore) and `segfolder:PATH`
(`{train,val}/{images,masks}` with `classes.txt`). Every mask is checked against its image before
training starts, so a bad file stops the run with its name instead of failing mid-epoch."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vislab.data.images import IMAGE_EXTENSIONS
from vislab.errors import VislabError, unknown_name

VOC_CLASSES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
VOC_IGNORE = 255


@dataclass
class SegSplit:
    images: list[Path]
    masks: list[Path]

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class SegSplits:
    classes: list[str]
    ignore_index: int
    palette: list[tuple[int, int, int]]  # a colour per class, for coloured masks and overlays
    train: SegSplit
    val: SegSplit


def voc_palette(count: int = 256) -> list[tuple[int, int, int]]:
    """PASCAL VOC's colour map: the bits of the class index spread over R, G and B, high bits first."""
    palette = []
    for index in range(count):
        colour, value = [0, 0, 0], index
        for shift in range(7, -1, -1):
            for channel in range(3):
                colour[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette.append(tuple(colour))
    return palette


def colour_mask(labels: np.ndarray, palette: list, ignore_index: int | None = None) -> np.ndarray:
    colours = np.zeros((256, 3), dtype=np.uint8)
    colours[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    if ignore_index is not None and ignore_index < 256:
        colours[ignore_index] = 255  # ignored pixels in white
    return colours[labels]


def overlay(image: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    return (image.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha).astype(np.uint8)


def read_mask(path: Path) -> np.ndarray:
    """A label mask as an (H, W) uint8 array of class indices (palette PNGs hold the indices themselves)."""
    if not path.is_file():
        raise VislabError(f"mask not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as mask:
                if mask.mode not in ("P", "L", "I", "I;16"):
                    raise VislabError(
                        f"{path} is a {mask.mode} image, not a label mask (palette or grayscale PNG)"
                    )
                return np.asarray(mask, dtype=np.uint8 if mask.mode in ("P", "L") else np.int32)
    except (OSError, SyntaxError) as error:
        raise VislabError(f"cannot read mask {path}: {error}") from None


def check_pair(image_path: Path, mask_path: Path, num_classes: int, ignore_index: int) -> None:
    """The mask exists, has its image's size, and holds only class indices or the ignore index."""
    mask = read_mask(mask_path)
    try:
        with Image.open(image_path) as image:
            size = image.size
    except OSError as error:
        raise VislabError(f"cannot read image {image_path}: {error}") from None
    if (mask.shape[1], mask.shape[0]) != size:
        raise VislabError(
            f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]}, its image {image_path} {size[0]}x{size[1]}"
        )
    values = np.unique(mask)
    bad = [int(v) for v in values if v >= num_classes and v != ignore_index]
    if bad:
        raise VislabError(
            f"mask {mask_path} holds {bad}: no class (0..{num_classes - 1}) and not ignore ({ignore_index})"
        )


def check_split(split: SegSplit, num_classes: int, ignore_index: int) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(
            pool.map(
                lambda pair: check_pair(*pair, num_classes, ignore_index), zip(split.images, split.masks)
            )
        )


def load_voc2012(data_dir: Path) -> SegSplits:
    """VOCdevkit/VOC2012 as torchvision's VOCSegmentation lays it out; train and val from ImageSets."""
    root = data_dir / "VOCdevkit" / "VOC2012"
    if not (root / "ImageSets" / "Segmentation").is_dir():
        raise VislabError(f"no PASCAL VOC 2012 under {data_dir} (expected {root}/ImageSets/Segmentation)")

    def split(name: str) -> SegSplit:
        ids = (root / "ImageSets" / "Segmentation" / f"{name}.txt").read_text().split()
        return SegSplit(
            [root / "JPEGImages" / f"{i}.jpg" for i in ids],
            [root / "SegmentationClass" / f"{i}.png" for i in ids],
        )

    splits = SegSplits(VOC_CLASSES, VOC_IGNORE, voc_palette(len(VOC_CLASSES)), split("train"), split("val"))
    for part in (splits.train, splits.val):
        check_split(part, len(VOC_CLASSES), VOC_IGNORE)
    return splits


def load_segfolder(root: Path, ignore_index: int) -> SegSplits:
    """`root/{train,val}/images/NAME.*`, masks `root/{train,val}/masks/NAME.png`, classes in classes.txt."""
    if not root.is_dir():
        raise VislabError(f"dataset folder not found: {root}")
    if not (root / "classes.txt").is_file():
        raise VislabError(f"{root}/classes.txt is missing: it names one class per line, in label order")
    classes = [line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip()]

    def split(name: str) -> SegSplit:
        folder = root / name / "images"
        images = (
            sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            if folder.is_dir()
            else []
        )
        if not images:
            raise VislabError(f"no images in {folder}")
        return SegSplit(images, [root / name / "masks" / f"{p.stem}.png" for p in images])

    splits = SegSplits(classes, ignore_index, voc_palette(len(classes)), split("train"), split("val"))
    for part in (splits.train, splits.val):
        check_split(part, len(classes), ignore_index)
    return splits


SEGFOLDER_PREFIX = "segfolder:"
SEGMENTATION_DATASETS = ["voc2012", "segfolder:PATH"]


def with_sbd(splits: SegSplits, data_dir: Path) -> SegSplits:
    """Adds the Semantic Boundaries Dataset (Hariharan et al.) to VOC's train split: its train and val
    images that are not VOC 2012 val images, the usual 10,582-image "train_aug" set. SBD ships masks
    as .mat files; they are converted to label PNGs once, next to them."""
    from scipy.io import loadmat

    root = data_dir / "SBD"
    if not (root / "cls").is_dir():
        from torchvision.datasets import SBDataset

        try:
            SBDataset(root, image_set="train", mode="segmentation", download=True)
        except (OSError, RuntimeError) as error:
            raise VislabError(f"could not get SBD into {root}: {error}") from None
    known = {p.stem for p in splits.val.images} | {p.stem for p in splits.train.images}
    ids = sorted({i for name in ("train", "val") for i in (root / f"{name}.txt").read_text().split()} - known)
    pngs = root / "cls_png"
    pngs.mkdir(exist_ok=True)
    for image_id in ids:
        target = pngs / f"{image_id}.png"
        if not target.is_file():
            mask = loadmat(root / "cls" / f"{image_id}.mat")["GTcls"][0]["Segmentation"][0]
            Image.fromarray(mask.astype(np.uint8)).save(target)
    extra = SegSplit([root / "img" / f"{i}.jpg" for i in ids], [pngs / f"{i}.png" for i in ids])
    check_split(extra, len(splits.classes), splits.ignore_index)
    train = SegSplit(splits.train.images + extra.images, splits.train.masks + extra.masks)
    return SegSplits(splits.classes, splits.ignore_index, splits.palette, train, splits.val)


def load_segmentation(data: str, data_dir: Path, ignore_index: int, sbd: bool = False) -> SegSplits:
    """`voc2012` (downloaded by torchvision into `data_dir` when missing; `sbd` adds SBD's images to
    train) or `segfolder:PATH`."""
    if data.startswith(SEGFOLDER_PREFIX):
        return load_segfolder(Path(data.removeprefix(SEGFOLDER_PREFIX)).expanduser(), ignore_index)
    if data == "voc2012":
        if not (data_dir / "VOCdevkit" / "VOC2012" / "ImageSets").is_dir():
            from torchvision.datasets import VOCSegmentation

            try:
                VOCSegmentation(data_dir, year="2012", image_set="train", download=True)
            except (OSError, RuntimeError) as error:
                raise VislabError(f"could not get PASCAL VOC 2012 into {data_dir}: {error}") from None
        voc = load_voc2012(data_dir)
        return with_sbd(voc, data_dir) if sbd else voc
    raise unknown_name("segmentation dataset", data, SEGMENTATION_DATASETS)
