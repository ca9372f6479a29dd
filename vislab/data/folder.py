"""`folder:PATH`: any ImageFolder tree, split into train/val(/test) and decoded into memory when it fits."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from vislab.data.images import is_image_file, opened, read_images
from vislab.data.registry import PHOTO_AUGMENT, DatasetEntry, LoadRequest, register_dataset
from vislab.data.splits import Split, Splits, stratified_split
from vislab.errors import VislabError
from vislab.memory import hold_in_memory

LARGE_IMAGE_DEFAULT_SIZE = 224  # photos larger than this are resized to the usual ImageNet input size
PHOTO_SIDE = 64  # images at least this big, as trained, are photos: ImageNet weights suit them


def train_root(root: Path) -> Path:
    """Where a class-folder tree's training classes are: its train/ where it has one, else itself."""
    return root / "train" if (root / "train").is_dir() else root


def subfolders(root: Path) -> list[Path]:
    """A folder's candidate class folders: its subfolders but hidden ones, in name order."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def class_folders(root: Path) -> dict[str, list[Path]]:
    """Class name -> its image files, for every subfolder that holds at least one image."""
    classes = {}
    for folder in subfolders(root):
        files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
        if files:
            classes[folder.name] = files
    return classes


def labelled_files(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[Path], list[int]]:
    found = class_folders(root)
    if not found:
        raise VislabError(f"no class folders with images in {root} (expected {root}/<class>/<image>)")
    if classes is None:
        classes = list(found)
        if len(classes) < 2:
            raise VislabError(
                f"{root} has only one class folder ({classes[0]}); a classifier needs at least two"
            )
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise VislabError(f"{root} has class folders not in the training set: {', '.join(unknown)}")
    files = [f for name in classes for f in found.get(name, [])]
    labels = [index for index, name in enumerate(classes) for _ in found.get(name, [])]
    return classes, files, labels


def check_headers(files: list[Path], skip_bad: bool) -> list[bool]:
    """Opens every file's header (cheap) so that a streamed run fails, or skips, before training starts."""

    def readable(path: Path) -> bool:
        try:
            with opened(path):
                return True
        except VislabError:
            if not skip_bad:
                raise
            return False

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(readable, files, chunksize=256))


def native_size(files: list[Path], skip_bad: bool) -> int:
    """The first readable image's shorter side (with `skip_bad`, unreadable ones before it are passed)."""
    for file in files:
        try:
            with opened(file) as image:
                side = min(image.size)
            return side if side <= 256 else LARGE_IMAGE_DEFAULT_SIZE
        except VislabError:
            if not skip_bad:
                raise
    raise VislabError(f"no readable image among {len(files)} files in {files[0].parent.parent}")


def photo_side(root: Path, image_size: int | None) -> int | None:
    """The side a class-folder tree's photos train at by default (their own, at most 224 px), or None where
    they are not photos as the run trains them: the first image's shorter side, and `image_size` where
    given, below PHOTO_SIDE. One header is read; a folder that cannot be read is not photos (loading it
    says why)."""
    if image_size is not None and image_size < PHOTO_SIDE:
        return None
    try:
        for folder in subfolders(train_root(root)):
            names = sorted(os.listdir(folder))  # names only: a large class folder is not stat'ed
            first = next((folder / n for n in names if is_image_file(folder / n)), None) or next(
                (p for p in sorted(folder.rglob("*")) if p.is_file() and is_image_file(p)), None
            )  # images only in subfolders
            if first is not None and first.is_file():
                side = min(native_size([first], skip_bad=False), LARGE_IMAGE_DEFAULT_SIZE)
                return side if side >= PHOTO_SIDE else None
    except (OSError, VislabError):
        pass
    return None


def files_split(
    files: list[Path], labels: list[int], size: int, in_memory: bool, skip_bad: bool, skipped: list[Path]
) -> Split:
    """A split of labelled image files: decoded at size x size into memory, or checked and kept as files.
    Unreadable files stop with an error naming them, or with `skip_bad` are appended to `skipped`."""
    if in_memory:
        tensors, bad = read_images(files, 3, size, skip_bad)
        readable = [t is not None for t in tensors]
    else:
        readable = check_headers(files, skip_bad)
        bad = [f for f, ok in zip(files, readable) if not ok]
    skipped.extend(bad)
    keep = [i for i, ok in enumerate(readable) if ok]
    if not keep:
        raise VislabError(f"none of the {len(files)} images could be read (the first: {files[0]})")
    images = torch.stack([tensors[i] for i in keep]) if in_memory else None
    return Split(torch.tensor(labels)[keep], images, [files[i] for i in keep])


def load_folder(request: LoadRequest) -> Splits:
    root = request.path
    if root is None or not root.exists():
        raise VislabError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise VislabError(f"dataset path is not a folder: {root}")
    classes, files, labels = labelled_files(train_root(root))
    size = request.image_size or native_size(files, request.skip_bad_images)
    in_memory = hold_in_memory(request.in_memory, len(files), 3 * size * size, size)
    skipped: list[Path] = []

    def make_split(split_files: list[Path], split_labels: list[int]) -> Split:
        return files_split(split_files, split_labels, size, in_memory, request.skip_bad_images, skipped)

    train = make_split(files, labels)
    if (root / "val").is_dir():
        val = make_split(*labelled_files(root / "val", classes)[1:])
    else:
        train, val = stratified_split(train, request.val_fraction)
    test = make_split(*labelled_files(root / "test", classes)[1:]) if (root / "test").is_dir() else None
    return Splits(classes, 3, size, train, val, test, skipped)


register_dataset(
    DatasetEntry(
        "folder",
        "classification",
        load_folder,
        lambda _: True,
        "any ImageFolder tree: folder:PATH",
        PHOTO_AUGMENT,
    )
)
