"""Tiny-ImageNet-200 in its original layout: 64x64 images of 200 ImageNet classes, 500 train images per
class and a labelled 10,000-image val set (val/val_annotations.txt); the test set has no labels."""

from __future__ import annotations

from pathlib import Path

from vislab.data.download import download, extract
from vislab.data.folder import files_split
from vislab.data.registry import PHOTO_AUGMENT, DatasetEntry, LoadRequest, register_dataset
from vislab.data.splits import Splits
from vislab.errors import VislabError
from vislab.memory import hold_in_memory

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
FOLDER = "tiny-imagenet-200"
# 64 px images: crop with 8-pixel padding (the CIFAR recipe scaled up) and flip.
AUGMENT = dict(PHOTO_AUGMENT, crop_padding=8)


def class_names(root: Path, wnids: list[str]) -> list[str]:
    """Human-readable names from words.txt (its first synonym), made unique where two classes share one."""
    words = {}
    if (root / "words.txt").is_file():
        for line in (root / "words.txt").read_text().splitlines():
            wnid, _, names = line.partition("\t")
            words[wnid] = names.split(",")[0].strip()
    names = [words.get(wnid, wnid) for wnid in wnids]
    return [f"{name} ({wnid})" if names.count(name) > 1 else name for name, wnid in zip(names, wnids)]


def val_annotations(root: Path) -> dict[str, str]:
    """val image file name -> wnid, from val_annotations.txt."""
    path = root / "val" / "val_annotations.txt"
    if not path.is_file():
        raise VislabError(f"{path} is missing: the val labels of Tiny-ImageNet live there")
    return {
        line.split("\t")[0]: line.split("\t")[1] for line in path.read_text().splitlines() if line.strip()
    }


def ensure_present(data_dir: Path) -> Path:
    root = data_dir / FOLDER
    if not (root / "wnids.txt").is_file():
        archive = download(URL, data_dir / "tiny-imagenet-200.zip", MD5)
        extract(archive, data_dir)
    return root


def load_tiny_imagenet(request: LoadRequest) -> Splits:
    root = ensure_present(request.data_dir)
    wnids = (root / "wnids.txt").read_text().split()
    index = {wnid: i for i, wnid in enumerate(wnids)}
    train_files = [f for wnid in wnids for f in sorted((root / "train" / wnid / "images").glob("*.JPEG"))]
    train_labels = [index[f.parent.parent.name] for f in train_files]
    annotations = val_annotations(root)
    val_files = sorted(root / "val" / "images" / name for name in annotations)
    val_labels = [index[annotations[f.name]] for f in val_files]
    size = request.image_size or 64
    in_memory = hold_in_memory(request.in_memory, len(train_files) + len(val_files), 3 * size * size, size)
    skipped: list[Path] = []
    train = files_split(train_files, train_labels, size, in_memory, request.skip_bad_images, skipped)
    val = files_split(val_files, val_labels, size, in_memory, request.skip_bad_images, skipped)
    return Splits(class_names(root, wnids), 3, size, train, val, skipped=skipped)


register_dataset(
    DatasetEntry(
        "tiny_imagenet",
        "classification",
        load_tiny_imagenet,
        lambda d: (d / FOLDER / "wnids.txt").is_file(),
        "Tiny-ImageNet-200, 64x64, 200 classes (downloads 237 MB)",
        AUGMENT,
    )
)
