"""The LightningDataModule that serves uint8 batches: sliced from an in-memory tensor, or decoded by
DataLoader workers for streamed datasets. Augmentation happens after the batch reaches the device."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vislab.config import AugmentConfig
from vislab.data.images import open_image, resize_center_crop, to_tensor
from vislab.data.splits import Split, Splits


class TensorPairs(Dataset):
    """An in-memory split of (image, target) tensors; `__getitems__` slices a whole batch in one op."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor):
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.images[index], self.targets[index]

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices)
        return self.images[index], self.targets[index]


def keep_batch(batch):
    """The collate function for TensorPairs: the batch is already stacked."""
    return batch


def seeded_loader(
    dataset: Dataset, batch_size: int, train: bool, trainer, seed: int, workers: int, in_memory: bool
) -> DataLoader:
    """A DataLoader whose order is a function of (seed, epoch) alone: a seeded DistributedSampler
    (with one process, a plain seeded shuffle), so a resumed run draws the same order as an
    uninterrupted one."""
    world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
    sampler = None
    if train or world > 1:
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=train, seed=seed)
        # Lightning prefetches a resumed run's first batch before it calls set_epoch: set it here.
        sampler.set_epoch(trainer.current_epoch if trainer else 0)
    workers = 0 if in_memory else workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=train and len(dataset) >= batch_size * world,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        collate_fn=keep_batch if in_memory else None,
    )


class ImageFiles(Dataset):
    """A streamed split: each worker decodes its own images and, in training, transforms them. Evaluation
    resizes and centre-crops exactly as `read_image` does for in-memory data, predict and export."""

    def __init__(
        self, files: list[Path], labels: torch.Tensor, channels: int, size: int, transform: T.Transform | None
    ):
        self.files, self.labels, self.channels = files, labels, channels
        self.size, self.transform = size, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        image = open_image(self.files[index], self.channels)
        if self.transform is None:
            return to_tensor(resize_center_crop(image, self.size)), self.labels[index]
        return self.transform(to_tensor(image)), self.labels[index]


def stream_transform(size: int, augment: AugmentConfig) -> T.Transform:
    """Per-image training transforms for streamed data: random resized crop, flip and RandAugment."""
    steps = [T.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True)]
    if augment.hflip:
        steps.append(T.RandomHorizontalFlip())
    if augment.randaugment_n:
        steps.append(T.RandAugment(augment.randaugment_n, augment.randaugment_m))
    return T.Compose(steps)


class ImageDataModule(L.LightningDataModule):
    def __init__(self, splits: Splits, batch_size: int, num_workers: int, seed: int, augment: AugmentConfig):
        super().__init__()
        self.splits, self.batch_size, self.num_workers = splits, batch_size, num_workers
        self.seed, self.augment = seed, augment

    def dataset(self, split: Split, train: bool) -> Dataset:
        if split.in_memory:
            return TensorPairs(split.images, split.labels)
        size = self.splits.image_size
        transform = stream_transform(size, self.augment) if train else None
        return ImageFiles(split.files, split.labels, self.splits.channels, size, transform)

    def loader(self, split: Split, train: bool) -> DataLoader:
        dataset = self.dataset(split, train)
        return seeded_loader(
            dataset, self.batch_size, train, self.trainer, self.seed, self.num_workers, split.in_memory
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.splits.train, train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.splits.val, train=False)
