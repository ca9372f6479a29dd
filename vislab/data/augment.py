"""Batched augmentation on the training device. Batches arrive as uint8 (B, C, H, W) and leave as
normalised floats, every random choice drawn per sample with tensor ops instead of one PIL image at a time."""

from __future__ import annotations

import torch
import torchvision.transforms.v2 as T
from torch import nn

from vislab.config import AugmentConfig
from vislab.data.randaugment import rand_augment


def random_crop_flip(images: torch.Tensor, padding: int, hflip: bool) -> torch.Tensor:
    """Zero-pads by `padding`, crops the original size at a random offset per image and, with `hflip`,
    mirrors a random half of them: one gather for the whole batch."""
    batch, chans, height, width = images.shape
    device = images.device
    padded = nn.functional.pad(images, (padding,) * 4)
    padded_width = width + 2 * padding
    dy = torch.randint(0, 2 * padding + 1, (batch, 1, 1), device=device)
    dx = torch.randint(0, 2 * padding + 1, (batch, 1, 1), device=device)
    cols = torch.arange(width, device=device).view(1, 1, width)
    if hflip:
        cols = torch.where(torch.rand(batch, 1, 1, device=device) < 0.5, width - 1 - cols, cols)
    rows = torch.arange(height, device=device).view(1, height, 1) + dy
    index = (rows * padded_width + cols + dx).view(batch, 1, -1).expand(batch, chans, -1)
    return padded.flatten(2).gather(2, index).view_as(images)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    weights = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype)
    return (images * weights[None, :, None, None]).sum(1, keepdim=True)


def color_jitter(images: torch.Tensor, strength: float) -> torch.Tensor:
    """Brightness, contrast and saturation, each scaled by a per-image factor in [1-s, 1+s]."""

    def factors() -> torch.Tensor:
        return 1 + (torch.rand(len(images), 1, 1, 1, device=images.device) * 2 - 1) * strength

    images = images * factors()
    mean = grayscale(images).mean(dim=(2, 3), keepdim=True)
    images = mean + (images - mean) * factors()
    images = grayscale(images) + (images - grayscale(images)) * factors()
    return images.clamp(0, 1)


def cutout(images: torch.Tensor, size: int) -> torch.Tensor:
    """Zeroes a size x size square (clipped at the border) at a random centre per image."""
    batch, _, height, width = images.shape
    top = torch.randint(0, height, (batch, 1, 1), device=images.device) - size // 2
    left = torch.randint(0, width, (batch, 1, 1), device=images.device) - size // 2
    ys = torch.arange(height, device=images.device)[None, :, None]
    xs = torch.arange(width, device=images.device)[None, None, :]
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    return images.masked_fill(inside[:, None], 0.0)


class BatchAugment(nn.Module):
    """Turns uint8 batches into model inputs: augments (in training), normalises, mixes labels."""

    def __init__(
        self,
        augment: AugmentConfig,
        mean: list[float],
        std: list[float],
        num_classes: int,
        per_image_in_workers: bool = False,
    ):
        super().__init__()
        self.augment = augment
        # Streamed datasets crop, flip and RandAugment each image in DataLoader workers; in-memory ones here.
        self.on_device = not per_image_in_workers
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        mixers = []
        if augment.mixup:
            mixers.append(T.MixUp(alpha=augment.mixup, num_classes=num_classes))
        if augment.cutmix:
            mixers.append(T.CutMix(alpha=augment.cutmix, num_classes=num_classes))
        self.mix = T.RandomChoice(mixers) if mixers else None

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255 - self.mean) / self.std

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-time path: returns normalised images and targets (class indices, or soft labels
        when MixUp/CutMix are on)."""
        aug = self.augment
        if self.on_device and (aug.crop_padding or aug.hflip):
            images = random_crop_flip(images, aug.crop_padding, aug.hflip)
        images = images.float() / 255
        if aug.color_jitter:
            images = color_jitter(images, aug.color_jitter)
        if self.on_device and aug.randaugment_n:
            images = rand_augment(images, aug.randaugment_n, aug.randaugment_m)
        images = (images - self.mean) / self.std
        if aug.cutout:
            images = cutout(images, aug.cutout)
        if self.mix is not None:
            images, labels = self.mix(images, labels)
        return images, labels
