"""The LightningDataModule that serves uint8 batches: sliced from an in-memory tensor, or decoded by
DataLoader workers for streamed datasets. Augmentation happens after the batch reaches the device."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vislab.config import AugmentConfig
from vislab.data.images import open_image, to_tensor
from vislab.data.splits import Split, Splits


class TensorImages(Dataset):
    """An in-memory split; `__getitems__` slices a whole batch in one indexing op."""

    def __init__(self, split: Split):
        self.images, self.labels = split.images, split.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


def keep_batch(batch):
    """The collate function for TensorImages: the batch is already stacked."""
    return batch


class ImageFiles(Dataset):
    """A streamed split: each worker decodes and transforms its own images."""

    def __init__(self, files: list[Path], labels: torch.Tensor, channels: int, transform: T.Transform):
        self.files, self.labels, self.channels, self.transform = files, labels, channels, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        image = to_tensor(open_image(self.files[index], self.channels))
        return self.transform(image), self.labels[index]


def stream_transform(size: int, augment: AugmentConfig | None) -> T.Transform:
    """Per-image transforms for streamed data: random resized crop, flip and RandAugment in training,
    resize and centre crop for evaluation."""
    if augment is None:
        return T.Compose([T.Resize(size, antialias=True), T.CenterCrop(size)])
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
            return TensorImages(split)
        transform = stream_transform(self.splits.image_size, self.augment if train else None)
        return ImageFiles(split.files, split.labels, self.splits.channels, transform)

    def loader(self, split: Split, train: bool) -> DataLoader:
        dataset = self.dataset(split, train)
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        # A seeded DistributedSampler shuffles by (seed, epoch) alone, so a resumed run draws the same
        # order as an uninterrupted one; with one process it is a plain seeded shuffle.
        sampler = None
        if train or world > 1:
            sampler = DistributedSampler(
                dataset, num_replicas=world, rank=rank, shuffle=train, seed=self.seed
            )
            # Lightning prefetches a resumed run's first batch before it calls set_epoch: set it here.
            sampler.set_epoch(trainer.current_epoch if trainer else 0)
        workers = 0 if split.in_memory else self.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=train and len(dataset) >= self.batch_size * world,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=keep_batch if split.in_memory else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.splits.train, train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.splits.val, train=False)
