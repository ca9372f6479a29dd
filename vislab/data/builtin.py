"""Datasets vislab knows by name: the embedded digits, and CIFAR-10/100 through torchvision."""

from __future__ import annotations

from pathlib import Path

import torch

from vislab.data.images import fit
from vislab.data.registry import PHOTO_AUGMENT, DatasetEntry, LoadRequest, register_dataset
from vislab.data.splits import Split, Splits, stratified_split
from vislab.errors import VislabError
from vislab.memory import hold_in_memory

# Digits are 8x8: a one-pixel shift is a real variation, a mirror image is a different glyph.
DIGITS_AUGMENT = dict(PHOTO_AUGMENT, crop_padding=1, hflip=False)


def check_resized_fits(count: int, channels: int, native: int, size: int | None) -> None:
    """Built-in datasets are always held in memory: refuses an `image_size` they cannot be held at."""
    side = size or native
    hold_in_memory(True, count, channels * side * side, side, can_stream=False)


def load_digits(request: LoadRequest) -> Splits:
    """scikit-learn's 1,797 real 8x8 handwritten digits (values 0..16), shipped inside scikit-learn."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = torch.from_numpy(digits.images).mul(255 / 16).round().to(torch.uint8).unsqueeze(1)
    check_resized_fits(len(images), 1, images.shape[-1], request.image_size)
    everything = Split(torch.from_numpy(digits.target).long(), fit(images, request.image_size))
    train, val = stratified_split(everything, request.val_fraction)
    return Splits([str(d) for d in range(10)], 1, train.images.shape[-1], train, val)


def load_cifar(request: LoadRequest, hundred: bool) -> Splits:
    """CIFAR from torchvision (downloaded with an MD5 check, reused when present). Val is held out
    from train; the official test set stays untouched for `vislab eval --split test`."""
    from torchvision.datasets import CIFAR10, CIFAR100

    dataset_class = CIFAR100 if hundred else CIFAR10
    root = request.data_dir
    try:
        root.mkdir(parents=True, exist_ok=True)
        train_set = dataset_class(
            root, train=True, download=True
        )  # verifies the MD5 first, downloads if needed
        test_set = dataset_class(root, train=False)
    except (OSError, RuntimeError) as error:
        raise VislabError(f"could not get {dataset_class.__name__} into {root}: {error}") from None

    def to_split(dataset) -> Split:
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        return Split(torch.tensor(dataset.targets, dtype=torch.long), fit(images, request.image_size))

    check_resized_fits(len(train_set) + len(test_set), 3, 32, request.image_size)
    train, val = stratified_split(to_split(train_set), request.val_fraction)
    return Splits(list(train_set.classes), 3, train.images.shape[-1], train, val, to_split(test_set))


def cifar_present(root: Path, hundred: bool) -> bool:
    from torchvision.datasets import CIFAR10, CIFAR100

    try:
        (CIFAR100 if hundred else CIFAR10)(root, train=False, download=False)
    except RuntimeError:
        return False
    return True


register_dataset(
    DatasetEntry(
        "digits",
        "classification",
        load_digits,
        lambda _: True,
        "8x8 handwritten digits, 10 classes (embedded)",
        DIGITS_AUGMENT,
    )
)
register_dataset(
    DatasetEntry(
        "cifar10",
        "classification",
        lambda r: load_cifar(r, False),
        lambda d: cifar_present(d, False),
        "CIFAR-10, 32x32, 10 classes (downloads 163 MB)",
        PHOTO_AUGMENT,
    )
)
register_dataset(
    DatasetEntry(
        "cifar100",
        "classification",
        lambda r: load_cifar(r, True),
        lambda d: cifar_present(d, True),
        "CIFAR-100, 32x32, 100 classes (downloads 161 MB)",
        PHOTO_AUGMENT,
    )
)


def load_flowers102(request: LoadRequest) -> Splits:
    """Oxford Flowers-102 from torchvision (downloaded with MD5 checks), its official train/val/test split.
    The photos vary in size: they are resized and centre-cropped to `image_size` (default 224)."""
    from torchvision.datasets import Flowers102

    from vislab.data.folder import files_split

    try:
        parts = {
            name: Flowers102(request.data_dir, split=name, download=True) for name in ("train", "val", "test")
        }
    except (OSError, RuntimeError) as error:
        raise VislabError(f"could not get Flowers102 into {request.data_dir}: {error}") from None
    size = request.image_size or 224
    count = sum(len(part) for part in parts.values())
    in_memory = hold_in_memory(request.in_memory, count, 3 * size * size, size)
    skipped: list[Path] = []
    # torchvision keeps each split's files and labels; vislab reads them itself to decode in parallel.
    loaded = {
        name: files_split(
            list(part._image_files), list(part._labels), size, in_memory, request.skip_bad_images, skipped
        )
        for name, part in parts.items()
    }
    return Splits(
        list(parts["train"].classes), 3, size, loaded["train"], loaded["val"], loaded["test"], skipped
    )


register_dataset(
    DatasetEntry(
        "flowers102",
        "classification",
        load_flowers102,
        lambda d: (d / "flowers-102" / "jpg").is_dir(),
        "Oxford Flowers-102, photos, 102 classes (downloads 330 MB)",
        PHOTO_AUGMENT,
    )
)
