"""The LightningDataModule that serves uint8 batches: sliced from an in-memory tensor, or decoded by
DataLoader workers for streamed datasets. Augmentation happens after the batch reaches the device."""

from __future__ import annotations

import signal
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vislab.config import AugmentConfig
from vislab.data.images import read_image
from vislab.data.splits import Split, Splits
from vislab.errors import VislabError


class AlternatingFlips:
    """airbench's alternating flip: which images of a split are mirrored in an epoch. A fixed random half
    (drawn from the seed) in even epochs, the other half in odd ones: every two epochs show each image
    both ways, where independent coin flips show a quarter of them one way only."""

    def __init__(self, count: int, seed: int):
        generator = torch.Generator().manual_seed(position_seed(seed, -1))  # -1: before any epoch
        self.even = torch.rand(count, generator=generator) < 0.5

    def __call__(self, epoch: int, index: torch.Tensor) -> torch.Tensor:
        return self.even[index] ^ bool(epoch % 2)


class TensorPairs(Dataset):
    """An in-memory split of (image, target) tensors; `__getitems__` slices a whole batch in one op.
    With `flips`, it is indexed by (epoch, index) keys and mirrors the images those flips choose."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, flips: AlternatingFlips | None = None):
        self.images, self.targets, self.flips = images, targets, flips
        self.keyed = flips is not None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, key):
        images, targets = self.__getitems__([key])
        return images[0], targets[0]

    def __getitems__(self, keys: list):
        if self.flips is None:
            index = torch.as_tensor(keys)
            return self.images[index], self.targets[index]
        epoch, index = keys[0][0], torch.as_tensor([i for _, i in keys])
        images, mirrored = self.images[index], self.flips(epoch, index)
        images[mirrored] = images[mirrored].flip(-1)
        return images, self.targets[index]


def keep_batch(batch):
    """The collate function for TensorPairs: the batch is already stacked."""
    return batch


def position_seed(*position: int) -> int:
    """The seed of a batch's or a streamed sample's randomness (augmentation, MixUp, dropout), as a
    function of where it stands in the run (seed, epoch, index...), not of any generator's state, so a
    resumed run draws exactly the numbers the uninterrupted run drew."""
    return hash(position) & 0x7FFF_FFFF_FFFF


class ResumableSampler(DistributedSampler):
    """A seeded DistributedSampler (with one process, a plain seeded shuffle) whose order is a function of
    (seed, epoch) alone. It asks `position` for (epoch, samples already trained on in it) each time
    iteration starts, because Lightning builds the loader before it restores a checkpoint and, with
    DataLoader workers, starts iterating before it calls set_epoch. An epoch resumed mid-way starts after
    the samples already trained on, while the length stays the whole epoch's, as Lightning's count of
    batches expects. With `keyed`, it yields (epoch, index) so that streamed datasets can seed each sample's
    augmentation (segmentation's) or flips. Without `shuffle` (validation) each rank takes every
    world-th sample, unpadded: no image counts twice, whatever the number of processes."""

    def __init__(
        self, dataset, world: int, rank: int, shuffle: bool, seed: int, keyed: bool, position, weights=None
    ):
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
        self.keyed, self.position, self.weights = keyed, position, weights

    def __iter__(self):
        epoch, done = self.position()
        self.set_epoch(epoch)
        if not self.shuffle:  # evaluation: each sample once, on one rank (no padding with repeats)
            indices = list(range(self.rank, len(self.dataset), self.num_replicas))
        else:
            indices = (self.weighted() if self.weights is not None else list(super().__iter__()))[done:]
        return iter([(epoch, i) for i in indices] if self.keyed else indices)

    def __len__(self) -> int:
        if not self.shuffle:
            return len(range(self.rank, len(self.dataset), self.num_replicas))
        return super().__len__()

    def weighted(self) -> list[int]:
        """An epoch of indices drawn with replacement in proportion to `weights` (class-balanced
        sampling), seeded by (seed, epoch) and split among the ranks like the plain shuffle."""
        generator = torch.Generator().manual_seed(position_seed(self.seed, self.epoch))
        drawn = torch.multinomial(self.weights, self.total_size, replacement=True, generator=generator)
        return drawn[self.rank : self.total_size : self.num_replicas].tolist()


def training_position(trainer, batch_size: int) -> tuple[int, int]:
    """The epoch a run is in (Lightning's own count, as it passes to set_epoch) and, for a run resumed from
    a mid-epoch checkpoint, how many of its samples (on this rank) were already trained on."""
    if trainer is None:
        return 0, 0
    loop = trainer.fit_loop
    done = loop.epoch_loop.batch_progress.current.processed if loop.epoch_loop.restarting else 0
    return loop.epoch_progress.current.processed, done * batch_size


class DeferredLoader(DataLoader):
    """A DataLoader that starts iterating when the first batch is asked for, not when `iter()` is called.
    Lightning calls `iter()` while it sizes the learning-rate schedule, before it restores a checkpoint, and
    DataLoader workers draw their first sample indices at once: deferred, they draw them from the restored
    position (`ResumableSampler`)."""

    def __iter__(self):
        return DeferredIterator(super().__iter__)


class DeferredIterator:
    def __init__(self, start):
        self.start, self.iterator = start, None

    def __iter__(self):
        return self

    def __next__(self):
        if self.iterator is None:
            self.iterator = self.start()
        return next(self.iterator)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM, SIGINT and SIGUSR1 to the main process, which saves a checkpoint
    and then shuts them down: a signal sent to the whole process group (Ctrl-C, a scheduler) must not kill
    them mid-batch first."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)


def seeded_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    trainer,
    seed: int,
    workers: int,
    in_memory: bool,
    weights: torch.Tensor | None = None,
) -> DataLoader:
    """A DataLoader whose order is a function of (seed, epoch) alone, so a resumed run, even one resumed
    mid-epoch, draws the same batches as an uninterrupted one; with `weights` (per sample), drawn in
    proportion to them."""
    world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
    if not train and world > len(dataset):  # a process without images would wait for the others forever
        raise VislabError(
            f"the validation split has {len(dataset)} images for {world} processes: every process needs "
            "at least one (raise val_fraction or use fewer trainer.devices)"
        )
    sampler = None
    if train or world > 1 or not in_memory:
        position = (lambda: training_position(trainer, batch_size)) if train else (lambda: (0, 0))
        keyed = not in_memory or getattr(dataset, "keyed", False)  # TensorPairs: when it alternates flips
        sampler = ResumableSampler(dataset, world, rank, train, seed, keyed, position, weights)
    workers = 0 if in_memory else workers
    return DeferredLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=train and len(dataset) >= batch_size * world,
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=ignore_stop_signals if workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
        collate_fn=keep_batch if isinstance(dataset, TensorPairs) else None,
    )


class ImageFiles(Dataset):
    """A streamed split: each worker decodes its own images at the training size (`read_image`, the same
    `fit` as in-memory data), mirrored by `flips`; every other augmentation happens on the batch, as for
    in-memory data, so a dataset that outgrows memory trains on the same inputs."""

    def __init__(self, files: list[Path], labels: torch.Tensor, channels: int, size: int, flips=None):
        self.files, self.labels, self.channels, self.size, self.flips = files, labels, channels, size, flips

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key  # from ResumableSampler
        image = read_image(self.files[index], self.channels, self.size)
        if self.flips is not None and self.flips(epoch, torch.tensor(index)):
            image = image.flip(-1)
        return image, self.labels[index]


def balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-sample weights that make every class equally likely to be drawn."""
    counts = torch.bincount(labels).clamp(min=1).double()
    return (1.0 / counts)[labels]


class ImageDataModule(L.LightningDataModule):
    def __init__(
        self,
        splits: Splits,
        batch_size: int,
        num_workers: int,
        seed: int,
        augment: AugmentConfig,
        balanced: bool = False,
    ):
        super().__init__()
        self.splits, self.batch_size, self.num_workers = splits, batch_size, num_workers
        self.seed, self.augment, self.balanced = seed, augment, balanced

    def dataset(self, split: Split, train: bool) -> Dataset:
        alternate = train and self.augment.hflip == "alternate"
        flips = AlternatingFlips(len(split), self.seed) if alternate else None
        if split.in_memory:
            return TensorPairs(split.images, split.labels, flips)
        return ImageFiles(split.files, split.labels, self.splits.channels, self.splits.image_size, flips)

    def loader(self, split: Split, train: bool) -> DataLoader:
        dataset = self.dataset(split, train)
        weights = balanced_weights(split.labels) if train and self.balanced else None
        return seeded_loader(
            dataset,
            self.batch_size,
            train,
            self.trainer,
            self.seed,
            self.num_workers,
            split.in_memory,
            weights,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.splits.train, train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.splits.val, train=False)
