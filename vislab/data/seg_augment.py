"""Batched joint augmentation of images and masks on the training device: per sample a random rescale,
a random crop (padded where the rescaled image is smaller), a horizontal flip and colour jitter, done for
the whole batch with one `grid_sample` so that image and mask move together (the mask by nearest
neighbour, padded with the ignore index)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vislab.data.augment import color_jitter
from vislab.data.segmentation import whole_crop
from vislab.preprocess import standardise


def crop_grid(
    batch: int,
    size: tuple[int, int],
    out: tuple[int, int],
    scale_range: tuple[float, float],
    hflip: bool,
    device: torch.device,
) -> torch.Tensor:
    """The sampling grid (B, out_h, out_w, 2) of a random rescale + crop (+ flip) per sample, in
    grid_sample's normalised coordinates (align_corners=False)."""
    height, width = size
    out_h, out_w = out
    low, high = scale_range
    scale = low + torch.rand(batch, 1, 1, device=device) * (high - low)

    def offsets(extent: int, out_extent: int) -> torch.Tensor:
        # Where the crop starts in the rescaled image; negative where the image is smaller than the crop,
        # which places the image at a random position inside it.
        slack = extent * scale - out_extent
        lo, hi = torch.minimum(slack, torch.zeros_like(slack)), torch.maximum(slack, torch.zeros_like(slack))
        # Whole pixels, so that at scale 1 every output pixel is an input pixel, as in a plain crop.
        return (lo + torch.rand(batch, 1, 1, device=device) * (hi - lo)).round()

    top, left = offsets(height, out_h), offsets(width, out_w)
    cols = torch.arange(out_w, device=device, dtype=torch.float32).view(1, 1, out_w)
    if hflip:
        cols = torch.where(torch.rand(batch, 1, 1, device=device) < 0.5, out_w - 1 - cols, cols)
    rows = torch.arange(out_h, device=device, dtype=torch.float32).view(1, out_h, 1)
    x = (left + cols + 0.5) / scale / width * 2 - 1
    y = (top + rows + 0.5) / scale / height * 2 - 1
    return torch.stack(torch.broadcast_tensors(x, y), dim=-1)


class SegmentationAugment(nn.Module):
    """uint8 (B, 3, H, W) images and (B, H, W) masks in; normalised float crops and int64 masks out. Crops
    are `crop_size` squares, or without one the whole image cut to a multiple of the stride."""

    def __init__(
        self,
        mean: list[float],
        std: list[float],
        ignore_index: int,
        crop_size: int | None,
        scale_range: tuple[float, float],
        hflip: bool,
        jitter: float,
    ):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.ignore_index, self.crop_size = ignore_index, crop_size
        self.scale_range, self.hflip, self.jitter = scale_range, hflip, jitter

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = tuple(images.shape[-2:])
        whole = tuple(whole_crop(side) for side in size)
        out = (self.crop_size, self.crop_size) if self.crop_size else whole
        floats = images.float() / 255
        if self.jitter:
            floats = color_jitter(floats, self.jitter)
        # Normalised first, so grid_sample's zero padding is the mean colour, as in padded validation.
        normalised = standardise(floats, self.mean, self.std)
        grid = crop_grid(len(images), size, out, self.scale_range, self.hflip, images.device)
        crops = F.grid_sample(normalised, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # Labels shifted by one so that zero padding marks pixels outside the image: they become ignored.
        shifted = (masks.float() + 1).unsqueeze(1)
        labels = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        labels = labels.squeeze(1).long() - 1
        return crops, labels.masked_fill(labels < 0, self.ignore_index)
