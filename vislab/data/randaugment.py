"""RandAugment (Cubuk et al. 2020) for a whole batch at once, with an independent op and sign per image.

The 14 ops and their magnitude ranges are torchvision's. Rather than one call per (op, sign), the ops
are fused by kind so a layer costs a handful of batched calls: the five geometric ops are one
`grid_sample` with a per-image affine matrix; brightness, colour, contrast and sharpness are one blend
`degenerate + factor * (image - degenerate)` with a per-image factor; the four remaining ops have no
magnitude sign and run once each on their images."""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
import torchvision.transforms.v2.functional as F

NUM_BINS = 31  # magnitude scale 0..30
OPS = [
    "identity",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
]
GEOMETRIC = slice(1, 6)
BLENDS = slice(6, 10)


def magnitudes(magnitude: int, height: int, width: int) -> torch.Tensor:
    """The value of every op at this magnitude bin, as torchvision's RandAugment defines them."""
    fraction = magnitude / (NUM_BINS - 1)
    return torch.tensor(
        [
            0.0,
            0.3 * fraction,
            0.3 * fraction,
            150 / 331 * width * fraction,
            150 / 331 * height * fraction,
            30.0 * fraction,
            0.9 * fraction,
            0.9 * fraction,
            0.9 * fraction,
            0.9 * fraction,
            8 - round(magnitude / 7.5),
            1.0 - fraction,
            0.0,
            0.0,
        ]
    )


def geometric(images: torch.Tensor, op: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Shear, translate or rotate each image by its own signed value; empty pixels become 0."""
    batch, _, height, width = images.shape
    aspect = height / width
    theta = torch.zeros(batch, 2, 3, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    is_op = {name: (op == OPS.index(name)).float() for name in OPS[GEOMETRIC]}
    # affine_grid maps output to input in coordinates normalised to [-1, 1] per axis.
    theta[:, 0, 1] += is_op["shear_x"] * value * aspect
    theta[:, 1, 0] += is_op["shear_y"] * value / aspect
    theta[:, 0, 2] = is_op["translate_x"] * -2 * value / width
    theta[:, 1, 2] = is_op["translate_y"] * -2 * value / height
    angle = torch.deg2rad(is_op["rotate"] * value)
    rotating = is_op["rotate"].bool()
    theta[rotating, 0, 0] = torch.cos(angle[rotating])
    theta[rotating, 1, 1] = torch.cos(angle[rotating])
    theta[rotating, 0, 1] = -torch.sin(angle[rotating]) * aspect
    theta[rotating, 1, 0] = torch.sin(angle[rotating]) / aspect
    grid = nnf.affine_grid(theta, list(images.shape), align_corners=False)
    return nnf.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def blend(images: torch.Tensor, op: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Brightness, colour, contrast or sharpness: move each image away from (or toward) its own
    degenerate version by factor 1 + value, as PIL's ImageEnhance does."""
    kind = op - BLENDS.start
    gray = images.mean(1, keepdim=True) if images.shape[1] == 1 else F.rgb_to_grayscale(images)
    degenerate = torch.zeros_like(images)  # brightness blends with black
    degenerate[kind == 1] = gray[kind == 1].expand(-1, images.shape[1], -1, -1)
    degenerate[kind == 2] = gray[kind == 2].mean((1, 2, 3), keepdim=True).expand(-1, *images.shape[1:])
    sharp = images[kind == 3]
    # PIL's smoothing kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 (a 3x3 mean plus extra centre weight),
    # with the border pixels left as they are.
    blurred = (9 * nnf.avg_pool2d(sharp, 3, stride=1, padding=1) + 4 * sharp) / 13
    blurred[..., [0, -1], :] = sharp[..., [0, -1], :]
    blurred[..., :, [0, -1]] = sharp[..., :, [0, -1]]
    degenerate[kind == 3] = blurred
    factor = (1 + value).view(-1, 1, 1, 1)
    return (degenerate + factor * (images - degenerate)).clamp(0, 1)


UNSIGNED = {
    "posterize": lambda x, m: F.posterize(x, int(m)),
    "solarize": lambda x, m: F.solarize(x, m),
    "autocontrast": lambda x, m: F.autocontrast(x),
    "equalize": lambda x, m: F.equalize(x),
}


def rand_augment(images: torch.Tensor, num_ops: int, magnitude: int) -> torch.Tensor:
    """Applies `num_ops` random ops per image to float images in [0, 1]."""
    table = magnitudes(magnitude, images.shape[-2], images.shape[-1]).to(images.device)
    for _ in range(num_ops):
        op = torch.randint(0, len(OPS), (len(images),), device=images.device)
        sign = torch.where(torch.rand(len(images), device=images.device) < 0.5, -1.0, 1.0)
        value = table[op] * sign
        result = images.clone()
        for kind, apply in ((GEOMETRIC, geometric), (BLENDS, blend)):
            index = ((op >= kind.start) & (op < kind.stop)).nonzero().squeeze(1)
            if len(index):
                result[index] = apply(images[index], op[index], value[index])
        for name, apply in UNSIGNED.items():
            index = (op == OPS.index(name)).nonzero().squeeze(1)
            if len(index):
                result[index] = apply(images[index], table[OPS.index(name)].item())
        images = result
    return images
