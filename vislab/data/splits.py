"""The shape every classification dataset is loaded into: train/val/(test) splits of labelled images,
either decoded into one uint8 tensor (small images) or kept as files to stream (large ones)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from sklearn.model_selection import train_test_split

from vislab.errors import VislabError

SPLIT_SEED = 0  # the train/val split is fixed: the same images are held out whatever the training seed


@dataclass
class Split:
    labels: torch.Tensor  # int64 (N,)
    images: torch.Tensor | None = None  # uint8 (N, C, H, W) when held in memory
    files: list[Path] | None = None  # image files when streamed

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def subset(self, indices: list[int] | torch.Tensor) -> Split:
        indices = torch.as_tensor(indices, dtype=torch.long)
        images = self.images[indices] if self.images is not None else None
        files = [self.files[i] for i in indices.tolist()] if self.files is not None else None
        return Split(self.labels[indices], images, files)


@dataclass
class Splits:
    classes: list[str]
    channels: int
    image_size: int  # every image the model sees is image_size x image_size
    train: Split
    val: Split
    test: Split | None = None
    skipped: list[Path] = field(default_factory=list)  # unreadable files left out with skip_bad_images

    def split(self, name: str) -> Split | None:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def stratified_split(split: Split, val_fraction: float) -> tuple[Split, Split]:
    """Holds out `val_fraction` of each class (at least one image each), always the same images."""
    counts = torch.bincount(split.labels)
    present = counts[counts > 0]
    if present.min() < 2:
        raise VislabError("every class needs at least 2 images to hold one out for validation")
    held_out = max(round(val_fraction * len(split)), len(present))
    if held_out > len(split) - len(present):
        raise VislabError(
            f"{len(split)} images are too few to split {len(present)} classes into train and val"
        )
    train_idx, val_idx = train_test_split(
        list(range(len(split))), test_size=held_out, stratify=split.labels.numpy(), random_state=SPLIT_SEED
    )
    return split.subset(sorted(train_idx)), split.subset(sorted(val_idx))


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in 0..1 units of a uint8 (N, C, H, W) tensor, in chunks to bound memory."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].to(torch.float64) / 255
        total += block.sum(dim=(0, 2, 3))
        squares += block.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return [round(v, 4) for v in mean.tolist()], [round(max(v, 1e-3), 4) for v in std.tolist()]
