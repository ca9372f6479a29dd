"""The segmentation DataModule: image/mask pairs decoded by DataLoader workers and transformed jointly with
torchvision transforms v2 (masks are `tv_tensors.Mask`, so they resize with nearest neighbour and pad with
the ignore index); normalisation happens on the training device."""

from __future__ import annotations

import lightning as L
import torch
import torchvision.transforms.v2 as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import tv_tensors

from vislab.config import Config
from vislab.data.images import open_image, to_tensor
from vislab.data.segmentation import SegSplit, SegSplits, read_mask


class SegmentationFiles(Dataset):
    def __init__(self, split: SegSplit, transform: T.Transform):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        image = tv_tensors.Image(to_tensor(open_image(self.split.images[index], 3)))
        mask = tv_tensors.Mask(torch.from_numpy(read_mask(self.split.masks[index]).astype("int64")))
        image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


def train_transform(config: Config) -> T.Transform:
    """Random rescaling of the shorter side, a random crop (padded with the ignore label), a flip, and
    colour jitter, which torchvision applies to the image and not the mask."""
    seg, size = config.segmentation, config.image_size
    low, high = (max(1, round(size * s)) for s in seg.scale_range)
    fill = {tv_tensors.Image: 0, tv_tensors.Mask: seg.ignore_index}
    return T.Compose(
        [
            T.RandomResize(low, high + 1, antialias=True),
            T.RandomCrop(seg.crop_size, pad_if_needed=True, fill=fill),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.3, 0.3, 0.3),
        ]
    )


def eval_transform(config: Config) -> T.Transform:
    """Whole images, their shorter side resized to `image_size`."""
    return T.Resize(config.image_size, antialias=True)


def same_size(split: SegSplit) -> bool:
    sizes = set()
    for path in split.images:
        with Image.open(path) as image:
            sizes.add(image.size)
    return len(sizes) == 1


class SegmentationDataModule(L.LightningDataModule):
    def __init__(self, splits: SegSplits, config: Config):
        super().__init__()
        self.splits, self.config = splits, config

    def loader(self, split: SegSplit, train: bool) -> DataLoader:
        config, trainer = self.config, self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        dataset = SegmentationFiles(split, train_transform(config) if train else eval_transform(config))
        sampler = None
        if train or world > 1:
            sampler = DistributedSampler(
                dataset, num_replicas=world, rank=rank, shuffle=train, seed=config.seed
            )
            sampler.set_epoch(trainer.current_epoch if trainer else 0)
        # Whole validation images of different sizes cannot share a batch.
        batch = config.batch_size if train or same_size(split) else 1
        return DataLoader(
            dataset,
            batch_size=batch,
            sampler=sampler,
            drop_last=train and len(dataset) >= batch * world,
            num_workers=config.num_workers,
            persistent_workers=config.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.splits.train, train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.splits.val, train=False)
