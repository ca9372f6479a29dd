"""`vislab augment`: augmented copies of a dataset written to disk as an ImageFolder, through the very
augmentation code that training runs on each batch (the seeds made such copies with OpenCV)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vislab.config import Config
from vislab.data import load_dataset, stats_sample, with_augment_defaults, with_normalisation
from vislab.data.augment import BatchAugment
from vislab.data.images import read_images
from vislab.data.module import position_seed
from vislab.data.splits import Split, Splits
from vislab.errors import VislabError
from vislab.files import replacing

CHUNK = 64  # images augmented together; fixed, so that a resumed run draws what an uninterrupted one drew


@dataclass
class Written:
    originals: int = 0
    copies: int = 0
    untouched: int = 0  # val and test images


def save_png(image: torch.Tensor, path: Path) -> None:
    """A uint8 (C, H, W) image as PNG, renamed into place once complete."""
    array = image.permute(1, 2, 0).numpy()
    with replacing(path) as written:
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else np.ascontiguousarray(array)).save(
            written, format="PNG"
        )


def place(source: Path | None, image: torch.Tensor, path: Path) -> None:
    """The original file copied as it is (renamed into place), or the in-memory image as PNG."""
    if source is None:
        save_png(image, path)
        return
    with replacing(path) as written:
        shutil.copyfile(source, written)


def image_names(split: Split) -> list[str]:
    """The file name each image keeps: its own, or its index (prefixed to names that repeat in a class)."""
    if split.files is None:
        return [f"{i:06d}.png" for i in range(len(split))]
    keys = list(zip(split.labels.tolist(), (f.name for f in split.files)))
    seen: dict[tuple[int, str], int] = {}
    for key in keys:
        seen[key] = seen.get(key, 0) + 1
    return [f"{i:06d}_{name}" if seen[(label, name)] > 1 else name for i, (label, name) in enumerate(keys)]


def chunk_images(splits: Splits, split: Split, indices: list[int]) -> torch.Tensor:
    if split.in_memory:
        return split.images[indices]
    tensors, _ = read_images([split.files[i] for i in indices], splits.channels, splits.image_size, False)
    return torch.stack(tensors)


def write_split(
    splits: Splits, split: Split, folder: Path, copies: int, augment: BatchAugment, seed: int
) -> None:
    """One split's images into folder/<class>/, each training image followed by its augmented copies.
    Chunks whose files all exist already are passed over: written before an interruption."""
    classes = [folder / name for name in splits.classes]
    for path in classes:
        path.mkdir(parents=True, exist_ok=True)
    names, labels = image_names(split), split.labels.tolist()
    for start in range(0, len(split), CHUNK):
        indices = list(range(start, min(start + CHUNK, len(split))))
        targets = [classes[labels[i]] / names[i] for i in indices]
        augmented = [
            [t.with_name(f"{Path(t.name).stem}_aug{k}.png") for t in targets] for k in range(1, copies + 1)
        ]
        if all(p.is_file() for p in targets + [p for paths in augmented for p in paths]):
            continue
        images = chunk_images(splits, split, indices)
        for i, target, image in zip(indices, targets, images):
            place(split.files[i] if split.files is not None else None, image, target)
        for k, paths in enumerate(augmented, 1):
            torch.manual_seed(position_seed(seed, k, start))  # a function of the position alone
            pixels = (augment.pixels(images) * 255).round().clamp(0, 255).to(torch.uint8)
            for image, path in zip(pixels, paths):
                save_png(image, path)


def augment_dataset(config: Config, out: Path, copies: int) -> Written:
    """Writes OUT/train/<class>/ with every training image and `copies` augmented copies of it
    (<name>_aug<k>.png), and val/ (and test/) untouched. Files already written are kept, so an interrupted
    run resumes where it stopped and ends with exactly the files an uninterrupted one writes."""
    if copies < 1:
        raise VislabError(f"--copies must be at least 1, not {copies}")
    if config.augment.mixup or config.augment.cutmix:
        raise VislabError("augment.mixup and augment.cutmix mix labels; an image folder holds one per image")
    if config.augment.hflip == "alternate":
        raise VislabError("augment.hflip=alternate alternates by training epoch; copies take hflip=true")
    splits = load_dataset(config, config.image_size)
    config = with_augment_defaults(config)
    config = with_normalisation(config, stats_sample(splits), splits.channels)
    augment = BatchAugment(config.augment, config.mean, config.std, len(splits.classes))
    written = Written()
    for name in ("train", "val", "test"):
        split = splits.split(name)
        if split is None:
            continue
        train = name == "train"
        write_split(splits, split, out / name, copies if train else 0, augment, config.seed)
        if train:
            written.originals, written.copies = len(split), len(split) * copies
        else:
            written.untouched += len(split)
    return written
