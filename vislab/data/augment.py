"""Batched augmentation on the training device. Batches arrive as uint8 (B, C, H, W) and leave as
normalised floats, every random choice drawn per sample with tensor ops instead of one PIL image at a time."""

from __future__ import annotations

import math

import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as F
from torch import nn

from vislab.config import AugmentConfig

NUM_BINS = 31  # RandAugment's magnitude scale 0..30, as in torchvision and the paper


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pads by `padding` and crops the original size at a random offset per image."""
    batch, _, height, width = images.shape
    padded = nn.functional.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (batch, 1), device=images.device)
    dx = torch.randint(0, 2 * padding + 1, (batch, 1), device=images.device)
    rows = (dy + torch.arange(height, device=images.device))[:, None, :, None]
    cols = (dx + torch.arange(width, device=images.device))[:, None, None, :]
    index = torch.arange(batch, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[index, channel, rows, cols]


def random_hflip(images: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(len(images), device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


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


def _affine(images, shear=(0.0, 0.0), translate=(0, 0), angle=0.0):
    return F.affine(images, angle=angle, translate=list(translate), scale=1.0, shear=list(shear), center=[0, 0])


# RandAugment's 14 operations on float images in [0, 1]: (name, function(images, magnitude), magnitudes
# over the 31 bins, signed). The same space as torchvision's RandAugment, applied per sample.
def _ops(height: int, width: int) -> list[tuple[str, object, torch.Tensor, bool]]:
    def linspace(high: float) -> torch.Tensor:
        return torch.linspace(0.0, high, NUM_BINS)

    return [
        ("identity", lambda x, m: x, torch.zeros(NUM_BINS), False),
        ("shear_x", lambda x, m: _affine(x, shear=(math.degrees(math.atan(m)), 0.0)), linspace(0.3), True),
        ("shear_y", lambda x, m: _affine(x, shear=(0.0, math.degrees(math.atan(m)))), linspace(0.3), True),
        ("translate_x", lambda x, m: _affine(x, translate=(int(m), 0)), linspace(150 / 331 * width), True),
        ("translate_y", lambda x, m: _affine(x, translate=(0, int(m))), linspace(150 / 331 * height), True),
        ("rotate", lambda x, m: _affine(x, angle=m), linspace(30.0), True),
        ("brightness", lambda x, m: F.adjust_brightness(x, 1 + m), linspace(0.9), True),
        ("color", lambda x, m: F.adjust_saturation(x, 1 + m), linspace(0.9), True),
        ("contrast", lambda x, m: F.adjust_contrast(x, 1 + m), linspace(0.9), True),
        ("sharpness", lambda x, m: F.adjust_sharpness(x, 1 + m), linspace(0.9), True),
        ("posterize", lambda x, m: F.posterize(x, int(m)),
         8 - (torch.arange(NUM_BINS) / ((NUM_BINS - 1) / 4)).round(), False),  # fmt: skip
        ("solarize", lambda x, m: F.solarize(x, m), torch.linspace(1.0, 0.0, NUM_BINS), False),
        ("autocontrast", lambda x, m: F.autocontrast(x), torch.zeros(NUM_BINS), False),
        ("equalize", lambda x, m: F.equalize(x), torch.zeros(NUM_BINS), False),
    ]


def rand_augment(images: torch.Tensor, num_ops: int, magnitude: int) -> torch.Tensor:
    """RandAugment (Cubuk et al.) with an independent choice of op and sign for every image:
    images are grouped by (op, sign) so each group is one batched call."""
    ops = _ops(images.shape[-2], images.shape[-1])
    for _ in range(num_ops):
        choice = torch.randint(0, len(ops), (len(images),), device=images.device)
        negative = torch.rand(len(images), device=images.device) < 0.5
        groups = choice * 2 + negative
        out = images.clone()
        for group in torch.unique(groups).tolist():
            index = (groups == group).nonzero().squeeze(1)
            _, op, magnitudes, signed = ops[group // 2]
            value = magnitudes[magnitude].item()
            if signed and group % 2:
                value = -value
            out[index] = op(images[index], value).clamp(0, 1)
        images = out
    return images


class BatchAugment(nn.Module):
    """Turns uint8 batches into model inputs: augments (in training), normalises, mixes labels."""

    def __init__(self, augment: AugmentConfig, mean: list[float], std: list[float], num_classes: int,
                 per_image_in_workers: bool = False):  # fmt: skip
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
        if self.on_device and aug.crop_padding:
            images = random_crop(images, aug.crop_padding)
        if self.on_device and aug.hflip:
            images = random_hflip(images)
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
