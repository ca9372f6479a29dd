"""Batched augmentation on the training device. Batches arrive as uint8 (B, C, H, W) and leave as
normalised floats, every random choice drawn per sample with tensor ops instead of one PIL image at a time."""

from __future__ import annotations

import torch
import torchvision.transforms.v2 as T
from torch import nn

from vislab.config import AugmentConfig
from vislab.data.randaugment import rand_augment
from vislab.preprocess import standardise


def random_crop_flip(images: torch.Tensor, padding: int, hflip: bool, reflect: bool = False) -> torch.Tensor:
    """Pads by `padding` (zeros, or with `reflect` the image mirrored at its border, as airbench), crops
    the original size at a random offset per image and, with `hflip`, mirrors a random half of them: one
    gather for the whole batch, the padding never materialised."""
    batch, chans, height, width = images.shape
    device = images.device
    dy = torch.randint(-padding, padding + 1, (batch, 1, 1), device=device)
    dx = torch.randint(-padding, padding + 1, (batch, 1, 1), device=device)
    cols = torch.arange(width, device=device).view(1, 1, width)
    if hflip:
        cols = torch.where(torch.rand(batch, 1, 1, device=device) < 0.5, width - 1 - cols, cols)
    rows = torch.arange(height, device=device).view(1, height, 1) + dy
    cols = cols + dx
    if reflect:  # -1 -> 1, size -> size - 2: a padding smaller than the image reflects once
        rows = (height - 1) - ((height - 1) - rows.abs()).abs()
        cols = (width - 1) - ((width - 1) - cols.abs()).abs()
    index = (rows.clamp(0, height - 1) * width + cols.clamp(0, width - 1)).view(batch, 1, -1)
    cropped = images.flatten(2).gather(2, index.expand(batch, chans, -1)).view_as(images)
    if reflect:
        return cropped
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)  # the rest is the zero padding
    return cropped * inside.view(batch, 1, height, width)


def random_affine(images: torch.Tensor, crop_scale: float, rotation: float, hflip: bool) -> torch.Tensor:
    """Random resized crop (a part of at least `crop_scale` of the area, aspect 3:4 to 4:3, at a random
    place, resized back; 1 = whole image), rotation within +-`rotation` degrees and, with `hflip`, a mirror
    for a random half: one affine grid per image, all sampled in one `grid_sample` call. Corners that a
    rotation brings in from outside the image are its reflection, not black."""
    batch, _, height, width = images.shape
    device = images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, device=device)

    area = uniform(crop_scale, 1.0)
    log_ratio = 0.2877 if crop_scale < 1 else 0.0  # log(4/3): torchvision's aspect range, when cropping
    aspect = uniform(-log_ratio, log_ratio).exp()
    crop_w, crop_h = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
    centre_x, centre_y = uniform(-1, 1) * (1 - crop_w), uniform(-1, 1) * (1 - crop_h)
    angle = uniform(-rotation, rotation).deg2rad()
    cos, sin = angle.cos(), angle.sin()
    mirror = torch.where(torch.rand(batch, device=device) < 0.5, -1.0, 1.0) if hflip else torch.ones_like(cos)
    # Output (x, y) in [-1, 1] maps to input coordinates; the rotation is in pixels, hence the aspect terms.
    theta = torch.stack(
        [
            torch.stack([cos * crop_w * mirror, -sin * crop_h * height / width, centre_x], 1),
            torch.stack([sin * crop_w * mirror * width / height, cos * crop_h, centre_y], 1),
        ],
        1,
    )
    grid = nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return nn.functional.grid_sample(images.float(), grid, padding_mode="reflection", align_corners=False)


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


def hue_shift(images: torch.Tensor, strength: float) -> torch.Tensor:
    """Turns each image's hue (HSV) by a random fraction of the colour wheel in [-strength, strength],
    as torchvision's ColorJitter does image by image, for the whole batch in a few tensor ops."""
    if images.shape[1] != 3:
        return images
    shift = (torch.rand(len(images), 1, 1, device=images.device) * 2 - 1) * strength
    red, green, blue = images.unbind(1)
    value, _ = images.max(1)
    chroma = value - images.min(1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    sector = torch.where(
        value == red,
        ((green - blue) / safe) % 6,
        torch.where(value == green, (blue - red) / safe + 2, (red - green) / safe + 4),
    )
    hue = (sector / 6 + shift) % 1  # greys (no chroma) stay grey whatever their hue
    # HSV -> RGB: channel n is value - chroma * clamp(min(k, 4 - k), 0, 1), k = (n + 6 hue) mod 6.
    k = (torch.tensor([5.0, 3.0, 1.0], device=images.device).view(1, 3, 1, 1) + 6 * hue[:, None]) % 6
    return value[:, None] - chroma[:, None] * torch.minimum(k, 4 - k).clamp(0, 1)


def cutout(images: torch.Tensor, size: int, fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Fills a size x size square (clipped at the border) at a random centre per image with `fill`."""
    batch, _, height, width = images.shape
    top = torch.randint(0, height, (batch, 1, 1), device=images.device) - size // 2
    left = torch.randint(0, width, (batch, 1, 1), device=images.device) - size // 2
    ys = torch.arange(height, device=images.device)[None, :, None]
    xs = torch.arange(width, device=images.device)[None, None, :]
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    return torch.where(inside[:, None], fill, images)


class BatchAugment(nn.Module):
    """Turns uint8 batches into model inputs: augments (in training), normalises, mixes labels."""

    def __init__(
        self,
        augment: AugmentConfig,
        mean: list[float],
        std: list[float],
        num_classes: int,
    ):
        super().__init__()
        self.augment = augment
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        mixers = []
        if augment.mixup:
            mixers.append(T.MixUp(alpha=augment.mixup, num_classes=num_classes))
        if augment.cutmix:
            mixers.append(T.CutMix(alpha=augment.cutmix, num_classes=num_classes))
        self.mix = T.RandomChoice(mixers) if mixers else None

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """The augmentations that change pixels alone, uint8 in, floats in [0, 1] out: what training
        normalises, and what `vislab augment` writes to disk."""
        aug = self.augment
        random_flip = aug.hflip is True  # alternating flips come with the batch (`AlternatingFlips`)
        if (aug.crop_padding or random_flip) and not aug.crop_scale:
            reflect = aug.crop_padding_mode == "reflect"
            images = random_crop_flip(images, aug.crop_padding or 0, random_flip, reflect)
        if aug.crop_scale or aug.rotation:
            flip = random_flip and bool(aug.crop_scale)  # else the padded crop above has flipped already
            images = random_affine(images, aug.crop_scale or 1.0, aug.rotation, flip)
        images = images.float() / 255
        if aug.color_jitter:
            images = color_jitter(images, aug.color_jitter)
        if aug.hue:
            images = hue_shift(images, aug.hue)
        if aug.randaugment_n:
            images = rand_augment(images, aug.randaugment_n, aug.randaugment_m)
        if aug.cutout:  # filled with the mean colour: zero once normalised
            images = cutout(images, aug.cutout, self.mean)
        return images

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-time path: returns normalised images and targets (class indices, or soft labels
        when MixUp/CutMix are on)."""
        images = standardise(self.pixels(images), self.mean, self.std)
        if self.mix is not None:
            images, labels = self.mix(images, labels)
        return images, labels
