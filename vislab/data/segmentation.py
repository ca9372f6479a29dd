"""Semantic-segmentation datasets: PASCAL VOC 2012 (palette PNG masks, 255 = ignore) and `segfolder:PATH`
(`{train,val}/{images,masks}` with `classes.txt`). Every mask is checked against its image before
training starts, so a bad file stops the run with its name instead of failing mid-epoch."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from vislab.data.images import IMAGE_EXTENSIONS, fit, open_image, opened, resize_mask, to_tensor, upright_size
from vislab.data.registry import SEGFOLDER_PREFIX, DatasetEntry, LoadRequest, register_dataset
from vislab.errors import VislabError
from vislab.memory import hold_in_memory

STRIDE = 32  # every segmentation network's total downsampling divides this: inputs are cut or padded to it
# Flips (colour jitter cost mIoU in short CamVid runs); rescaling and crops are segmentation.* keys.
SEGMENTATION_AUGMENT = dict(hflip=True, color_jitter=0.0)

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
    image_files: list[Path]
    mask_files: list[Path]
    # Training in memory: uint8 (N, 3, H, W) images and (N, H, W) masks at the training size, padded to
    # one size (images with 0, masks with the ignore index); None when streamed from the files.
    images: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    # Validation in memory: each image at the training size and its mask at the image's own size, as
    # `vislab eval` scores them; None when streamed.
    pairs: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.image_files)

    @property
    def in_memory(self) -> bool:
        return self.images is not None or self.pairs is not None


@dataclass
class SegSplits:
    classes: list[str]
    ignore_index: int
    palette: list[tuple[int, int, int]]  # a colour per class, for coloured masks and overlays
    train: SegSplit
    val: SegSplit
    image_size: int = 0  # the shorter side every image is resized to

    def split(self, name: str) -> SegSplit | None:
        return {"train": self.train, "val": self.val}.get(name)


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
    with opened(path, "mask") as mask:
        if mask.mode not in ("P", "L", "I", "I;16"):
            raise VislabError(f"{path} is a {mask.mode} image, not a label mask (palette or grayscale PNG)")
        return np.asarray(mask, dtype=np.uint8 if mask.mode in ("P", "L") else np.int32)


def check_mask(
    mask: np.ndarray,
    mask_path: Path,
    image_path: Path,
    size: tuple[int, int],
    num_classes: int,
    ignore_index: int,
) -> None:
    """The mask has its image's (width, height) and holds only class indices or the ignore index."""
    if (mask.shape[1], mask.shape[0]) != size:
        raise VislabError(
            f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]}, its image {image_path} {size[0]}x{size[1]}"
        )
    values = np.unique(mask)
    bad = [int(v) for v in values if v >= num_classes and v != ignore_index]
    if bad:
        advice = f"; if {bad[0]} marks pixels to leave out (void), set segmentation.ignore_index={bad[0]}"
        raise VislabError(
            f"mask {mask_path} holds {bad}: no class (0..{num_classes - 1}) and not ignore ({ignore_index})"
            + (advice if len(bad) == 1 else "")
        )


def check_pair(image_path: Path, mask_path: Path, num_classes: int, ignore_index: int) -> None:
    """Checks a pair from the image's header and the mask, without decoding the image."""
    mask = read_mask(mask_path)
    with opened(image_path) as image:
        size = upright_size(image)
    check_mask(mask, mask_path, image_path, size, num_classes, ignore_index)


def check_split(split: SegSplit, num_classes: int, ignore_index: int) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(
            pool.map(
                lambda pair: check_pair(*pair, num_classes, ignore_index),
                zip(split.image_files, split.mask_files),
            )
        )


def whole_crop(side: int) -> int:
    """The largest multiple of the stride that fits in `side` (at least one stride)."""
    return max(STRIDE, side // STRIDE * STRIDE)


def read_pair(
    image_file: Path,
    mask_file: Path,
    size: int,
    check: tuple[int, int] | None = None,
    whole_mask: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """An image and its mask as uint8 (3, H, W) and int32 (H, W) tensors, the image's shorter side at
    `size` (`Preprocess.fit`), the mask at the image's size, or with `whole_mask` at its own (validation
    scores the prediction there, as `vislab eval` does); with `check` = (number of classes, ignore index),
    the mask is checked against its image first."""
    image = open_image(image_file, 3)
    mask = read_mask(mask_file)
    if check is not None:
        check_mask(mask, mask_file, image_file, image.size, *check)
    image = fit(to_tensor(image), size, crop=False)
    mask = torch.from_numpy(mask.astype(np.int32))
    return image, mask if whole_mask else resize_mask(mask, image.shape[-2:])


def stack_padded(tensors: list[torch.Tensor], fill: int) -> torch.Tensor:
    """One tensor of equally sized items: smaller ones padded at the right and bottom with `fill`."""
    height = max(t.shape[-2] for t in tensors)
    width = max(t.shape[-1] for t in tensors)
    out = torch.full((len(tensors), *tensors[0].shape[:-2], height, width), fill, dtype=tensors[0].dtype)
    for index, tensor in enumerate(tensors):
        out[index, ..., : tensor.shape[-2], : tensor.shape[-1]] = tensor
    return out


def into_memory(split: SegSplit, size: int, num_classes: int, ignore_index: int, train: bool) -> SegSplit:
    """The split decoded and checked once, at the training size (threads: PIL releases the GIL): stacked
    for training, whole pairs for validation (`read_pair`'s `whole_mask`)."""
    check = (num_classes, ignore_index)
    mask_type = torch.uint8 if ignore_index <= 255 else torch.int32
    with ThreadPoolExecutor(max_workers=8) as pool:
        pairs = list(
            pool.map(
                lambda pair: read_pair(*pair, size, check, whole_mask=not train),
                zip(split.image_files, split.mask_files),
            )
        )
    if not train:
        pairs = [(image, mask.to(mask_type)) for image, mask in pairs]
        return SegSplit(split.image_files, split.mask_files, pairs=pairs)
    images = stack_padded([image for image, _ in pairs], 0)
    masks = stack_padded([mask.to(mask_type) for _, mask in pairs], ignore_index)
    return SegSplit(split.image_files, split.mask_files, images, masks)


def finish(splits: SegSplits, request: LoadRequest) -> SegSplits:
    """Fixes the training size (the first image's shorter side unless given), and decodes both splits into
    memory when they fit (4 GiB), else leaves them to stream; every pair is checked before training."""
    with opened(splits.train.image_files[0]) as first:
        width, height = upright_size(first)
    size = request.image_size or min(width, height)
    scale = size / min(width, height)
    pixels = round(width * scale) * round(height * scale)
    mask_bytes = 1 if splits.ignore_index <= 255 else 4
    count = len(splits.train) + len(splits.val)
    # Training pairs at the training size; validation masks stay at their images' own size.
    total = len(splits.train) * (3 + mask_bytes) * pixels
    total += len(splits.val) * (3 * pixels + mask_bytes * width * height)
    pair = "image/mask pairs"
    in_memory = hold_in_memory(request.in_memory, count, -(-total // count), size, what=pair)
    for name in ("train", "val"):
        part = getattr(splits, name)
        if in_memory:
            held = into_memory(part, size, len(splits.classes), splits.ignore_index, train=name == "train")
            setattr(splits, name, held)
        elif not request.skip_bad_images:  # only `vislab check` asks for this: it checks every pair itself
            check_split(part, len(splits.classes), splits.ignore_index)
    splits.image_size = size
    return splits


def voc_root(data_dir: Path) -> Path:
    return data_dir / "VOCdevkit" / "VOC2012"


def load_voc2012(request: LoadRequest) -> SegSplits:
    """VOCdevkit/VOC2012 as torchvision's VOCSegmentation lays it out (downloaded by torchvision into
    `data_dir` when missing); train and val from ImageSets; `sbd` adds SBD's images to train."""
    data_dir = request.data_dir
    root = voc_root(data_dir)
    if not (root / "ImageSets").is_dir():
        from torchvision.datasets import VOCSegmentation

        try:
            VOCSegmentation(data_dir, year="2012", image_set="train", download=True)
        except (OSError, RuntimeError) as error:
            raise VislabError(f"could not get PASCAL VOC 2012 into {data_dir}: {error}") from None
    if not (root / "ImageSets" / "Segmentation").is_dir():
        raise VislabError(f"no PASCAL VOC 2012 under {data_dir} (expected {root}/ImageSets/Segmentation)")

    def split(name: str) -> SegSplit:
        ids = (root / "ImageSets" / "Segmentation" / f"{name}.txt").read_text().split()
        return SegSplit(
            [root / "JPEGImages" / f"{i}.jpg" for i in ids],
            [root / "SegmentationClass" / f"{i}.png" for i in ids],
        )

    ignore = VOC_IGNORE if request.ignore_index is None else request.ignore_index
    splits = SegSplits(VOC_CLASSES, ignore, voc_palette(len(VOC_CLASSES)), split("train"), split("val"))
    if request.sbd:
        splits = with_sbd(splits, data_dir)
    return finish(splits, request)


def segfolder_description(root: Path) -> dict:
    """`root/dataset.yaml`, where a folder declares its `ignore_index` and `palette` (both optional)."""
    path = root / "dataset.yaml"
    if not path.is_file():
        return {}
    try:
        described = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise VislabError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    unknown = set(described) - {"ignore_index", "palette"} if isinstance(described, dict) else {"?"}
    if unknown:
        raise VislabError(f"{path} may set ignore_index and palette, not {', '.join(map(str, unknown))}")
    return described


def folder_classes(root: Path, ignore_index: int | None) -> SegSplits:
    """The classes (classes.txt), ignore index and palette (dataset.yaml) of a segmentation folder, with
    empty splits: what `segfolder:` and `csv:` read before their pairs."""
    if not (root / "classes.txt").is_file():
        raise VislabError(f"{root}/classes.txt is missing: it names one class per line, in label order")
    classes = [line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip()]
    described = segfolder_description(root)
    ignore = ignore_index if ignore_index is not None else int(described.get("ignore_index", VOC_IGNORE))
    palette = [tuple(int(v) for v in colour) for colour in described.get("palette", [])]
    if palette and len(palette) != len(classes):
        raise VislabError(
            f"{root}/dataset.yaml has {len(palette)} palette colours for {len(classes)} classes"
        )
    empty = SegSplit([], [])
    return SegSplits(classes, ignore, palette or voc_palette(len(classes)), empty, empty)


def load_segfolder(request: LoadRequest) -> SegSplits:
    """`root/{train,val}/images/NAME.*`, masks `root/{train,val}/masks/NAME.png`, classes in classes.txt,
    and optionally dataset.yaml with the mask value to ignore and a colour per class."""
    root = request.path
    if root is None or not root.is_dir():
        raise VislabError(f"dataset folder not found: {root}")
    described = folder_classes(root, request.ignore_index)

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

    return finish(replace(described, train=split("train"), val=split("val")), request)


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
    known = {p.stem for p in splits.val.image_files} | {p.stem for p in splits.train.image_files}
    ids = sorted({i for name in ("train", "val") for i in (root / f"{name}.txt").read_text().split()} - known)
    pngs = root / "cls_png"
    pngs.mkdir(exist_ok=True)
    for image_id in ids:
        target = pngs / f"{image_id}.png"
        if not target.is_file():
            mask = loadmat(root / "cls" / f"{image_id}.mat")["GTcls"][0]["Segmentation"][0]
            Image.fromarray(mask.astype(np.uint8)).save(target)
    train = SegSplit(
        splits.train.image_files + [root / "img" / f"{i}.jpg" for i in ids],
        splits.train.mask_files + [pngs / f"{i}.png" for i in ids],
    )
    return SegSplits(splits.classes, splits.ignore_index, splits.palette, train, splits.val)


register_dataset(
    DatasetEntry(
        "voc2012",
        "segmentation",
        load_voc2012,
        lambda d: (voc_root(d) / "ImageSets" / "Segmentation").is_dir(),
        "PASCAL VOC 2012 segmentation, 21 classes (downloads 2 GB)",
        SEGMENTATION_AUGMENT,
    )
)
register_dataset(
    DatasetEntry(
        "segfolder",
        "segmentation",
        load_segfolder,
        lambda _: True,
        f"{SEGFOLDER_PREFIX}PATH: {{train,val}}/{{images,masks}} with classes.txt (and dataset.yaml)",
        SEGMENTATION_AUGMENT,
    )
)
