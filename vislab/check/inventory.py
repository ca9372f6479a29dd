"""What a dataset holds, image by image: its split, label and file, whether the file decodes, and the
fingerprints the duplicate search compares (content hash, perceptual hashes, a small thumbnail)."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps

from vislab.config import Config
from vislab.data import load_dataset
from vislab.data.images import opened
from vislab.data.segmentation import SegSplits, check_pair
from vislab.errors import VislabError

FORMAT_SUFFIXES = {
    "JPEG": {".jpg", ".jpeg"},
    "PNG": {".png"},
    "BMP": {".bmp"},
    "GIF": {".gif"},
    "WEBP": {".webp"},
    "TIFF": {".tif", ".tiff"},
    "PPM": {".ppm", ".pgm"},
}
TINY = 16  # images with a side below this many pixels are listed as tiny


@dataclass
class Item:
    split: str
    label: int
    path: Path | None  # None for a built-in dataset held as tensors
    image: np.ndarray | None = None  # HxWxC uint8, for tensors only
    index_in_split: int = 0
    # Filled by `fingerprint`:
    problem: str | None = None
    size: tuple[int, int] | None = None
    mode: str = ""
    digest: str = ""
    hashes: tuple[int, int] = (0, 0)  # perceptual hash of the image and of its mirror image
    thumbnail: np.ndarray | None = None  # 16x16 grayscale, zero mean and unit norm

    @property
    def name(self) -> str:
        return str(self.path) if self.path else f"{self.split}#{self.index_in_split}"


def collect(config: Config) -> tuple[list[str], list[Item], list[tuple[Path, str]]]:
    """The classes, one Item per image of every split, and the files that could not even be opened."""
    checked = config.model_copy(update={"in_memory": False, "skip_bad_images": True})
    splits = load_dataset(checked)
    if isinstance(splits, SegSplits):
        return segmentation_items(splits)
    items = []
    for name in ("train", "val", "test"):
        split = splits.split(name)
        if split is None:
            continue
        for index, label in enumerate(split.labels.tolist()):
            if split.in_memory:
                image = split.images[index].permute(1, 2, 0).numpy()
                items.append(Item(name, label, None, image, index_in_split=index))
            else:
                items.append(Item(name, label, split.files[index], index_in_split=index))
    unreadable = []
    for path in splits.skipped:
        try:
            with opened(path):
                pass
        except VislabError as error:
            unreadable.append((path, str(error)))
    return splits.classes, items, unreadable


def segmentation_items(splits: SegSplits) -> tuple[list[str], list[Item], list[tuple[Path, str]]]:
    """Images of a segmentation dataset (label -1: a mask is no class), and the pairs whose mask is
    missing, unreadable or does not fit its image, named by the check training runs itself."""
    items, bad = [], []
    for name in ("train", "val"):
        split = splits.split(name)
        for index, (image, mask) in enumerate(zip(split.image_files, split.mask_files)):
            items.append(Item(name, -1, image, index_in_split=index))
            try:
                check_pair(image, mask, len(splits.classes), splits.ignore_index)
            except VislabError as error:
                bad.append((mask, str(error)))
    return splits.classes, items, bad


def fingerprint(item: Item) -> Item:
    """Decodes the image completely (a truncated file fails here, not in its header) and fingerprints it."""
    try:
        if item.path is None:
            image = Image.fromarray(item.image.squeeze(2) if item.image.shape[2] == 1 else item.image)
            item.digest = hashlib.sha256(item.image.tobytes()).hexdigest()
        else:
            item.digest = hashlib.sha256(item.path.read_bytes()).hexdigest()
            with opened(item.path) as opened_image:
                image = ImageOps.exif_transpose(opened_image)  # decodes every byte, upright
                fmt = opened_image.format
            if fmt in FORMAT_SUFFIXES and item.path.suffix.lower() not in FORMAT_SUFFIXES[fmt]:
                item.problem = f"wrongly named: a {fmt} file with the suffix {item.path.suffix}"
    except (VislabError, OSError) as error:
        item.problem = str(error)
        return item
    item.size, item.mode = image.size, image.mode
    rgb = image.convert("RGB")
    item.hashes = (hash_bits(rgb), hash_bits(ImageOps.mirror(rgb)))
    small = np.asarray(rgb.convert("L").resize((16, 16), Image.BILINEAR), dtype=np.float32).ravel()
    small -= small.mean()
    item.thumbnail = small / max(float(np.linalg.norm(small)), 1e-6)
    return item


def hash_bits(image: Image.Image) -> int:
    return int(str(imagehash.phash(image)), 16)


def fingerprint_all(items: list[Item]) -> list[Item]:
    with ThreadPoolExecutor(max_workers=8) as pool:  # PIL decodes outside the GIL
        return list(pool.map(fingerprint, items, chunksize=64))
