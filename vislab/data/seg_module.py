"""The segmentation DataModule. In-memory splits serve uint8 image/mask batches that the task augments on
the device (`seg_augment.py`); streamed ones are decoded by DataLoader workers and transformed jointly with
torchvision transforms v2 (masks are `tv_tensors.Mask`, resized with nearest neighbour and padded with the
ignore index). Validation sees whole images, their shorter side at `image_size`, one at a time where their
sizes differ (batched with others, an image's prediction would depend on its neighbours' padding), and
scores them against their masks at the images' own sizes: exactly what `vislab eval` does."""

from __future__ import annotations

import lightning as L
import torch
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from vislab.config import Config
from vislab.data.images import opened, upright_size
from vislab.data.module import TensorPairs, position_seed, seeded_loader
from vislab.data.segmentation import SegSplit, SegSplits, read_pair, whole_crop


class SegmentationFiles(Dataset):
    """Streamed pairs: training crops from `transform`, or whole images at the validation size."""

    def __init__(self, split: SegSplit, size: int, transform: T.Transform | None, seed: int):
        self.split, self.size, self.transform, self.seed = split, size, transform, seed

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key  # from ResumableSampler
        files = self.split.image_files[index], self.split.mask_files[index]
        image, mask = read_pair(*files, self.size, whole_mask=self.transform is None)
        mask = mask.long()
        if self.transform is None:
            return image, mask
        torch.manual_seed(position_seed(self.seed, epoch, index))  # a worker process's own generator
        image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


def train_transform(config: Config) -> T.Transform:
    """Random rescaling, a random crop (padded with the ignore label), a flip, and colour jitter, which
    torchvision applies to the image and not the mask: the per-image twin of `SegmentationAugment`."""
    seg, size = config.segmentation, config.image_size
    low, high = (max(1, round(size * s)) for s in seg.scale_range)
    fill = {tv_tensors.Image: 0, tv_tensors.Mask: seg.ignore_index}
    steps = [
        T.RandomResize(low, high + 1, antialias=True),
        T.RandomCrop(seg.crop_size or whole_crop(size), pad_if_needed=True, fill=fill),
    ]
    if config.augment.hflip:
        steps.append(T.RandomHorizontalFlip())
    if config.augment.color_jitter:
        strength = config.augment.color_jitter
        steps.append(T.ColorJitter(strength, strength, strength))
    return T.Compose(steps)


class WholePairs(Dataset):
    """A validation split held in memory: whole images and their masks (`SegSplit.pairs`)."""

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        image, mask = self.pairs[index]
        return image, mask.long()


def same_size(split: SegSplit) -> bool:
    if split.pairs is not None:
        return len({(image.shape, mask.shape) for image, mask in split.pairs}) == 1
    sizes = set()
    for path in split.image_files:
        with opened(path) as image:
            sizes.add(upright_size(image))
    return len(sizes) == 1


class SegmentationDataModule(L.LightningDataModule):
    def __init__(self, splits: SegSplits, config: Config):
        super().__init__()
        self.splits, self.config = splits, config

    def loader(self, split: SegSplit, train: bool) -> DataLoader:
        config = self.config
        if train and split.in_memory:
            dataset = TensorPairs(split.images, split.masks)
        elif split.in_memory:
            dataset = WholePairs(split.pairs)
        else:
            transform = train_transform(config) if train else None
            dataset = SegmentationFiles(split, config.image_size, transform, config.seed)
        # Whole validation images of different sizes cannot share a batch.
        batch = config.batch_size if train or same_size(split) else 1
        return seeded_loader(
            dataset, batch, train, self.trainer, config.seed, config.num_workers, split.in_memory
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.splits.train, train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.splits.val, train=False)
