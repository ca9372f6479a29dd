"""The one preprocessing of a model's input: how an image (a file, a PIL image, an array, a tensor) becomes
the uint8 picture a model trains and is validated on, and the normalised batch it sees.

A model resized one way in training and another in prediction loses accuracy silently, so there is one
rule, built once from the data and the model and recorded in every checkpoint and export
(`ModelMeta.preprocess`): classification takes the shorter side to `size` and the centre square,
segmentation the shorter side and the whole image, padded to the stride with the mean colour; both resize
bilinear and antialiased (`vislab.data.images.resize`) and normalise with the training set's mean and std.
Training's loaders use the same resize (`fit`), and validation, eval, predict, reports, TTA, the web UI and
exported models read their input through this object."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

from vislab.data.images import decode_any, fit


def standardise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Float images in 0..1 standardised per channel (`mean`, `std`: (1, C, 1, 1) on their device)."""
    return (images - mean) / std


@lru_cache(maxsize=32)
def channel_statistics(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """mean and std as (1, C, 1, 1) tensors on `device`, made once: a copy to a GPU per batch would wait
    for it."""
    return tuple(torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (mean, std))


@dataclass(frozen=True)
class Preprocess:
    channels: int  # 3: RGB, 1: grayscale
    size: int  # classification: the square input's side; segmentation: the shorter side
    mean: tuple[float, ...]  # per channel, in 0..1 units
    std: tuple[float, ...]
    crop: bool = True  # classification: the centre square; segmentation: the whole image
    stride: int = 1  # inputs are padded (right and bottom) to a multiple of it

    def fit(self, image: torch.Tensor) -> torch.Tensor:
        """A uint8 (..., C, H, W) image resized (and cropped) as the model takes it."""
        return fit(image, self.size, self.crop)

    def read(self, image: Any) -> torch.Tensor:
        """A path, PIL image, array or tensor as the uint8 (C, H, W) picture the model takes: upright, in
        its colour mode, fitted."""
        return self.fit(decode_any(image, self.channels))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) pictures as float model input: scaled to 0..1, then standardised."""
        mean, std = channel_statistics(self.mean, self.std, images.device)
        return standardise(images.float() / 255, mean, std)

    def pad(self, inputs: torch.Tensor) -> torch.Tensor:
        """Normalised inputs padded at the right and bottom to the stride, with zeros: the mean colour."""
        height, width = inputs.shape[-2:]
        return F.pad(inputs, (0, -width % self.stride, 0, -height % self.stride))

    def logits(self, model, inputs: torch.Tensor) -> torch.Tensor:
        """A model's output for normalised inputs of any size (`model`: a network or an exported model's
        runner): padded to the stride and, for dense output (segmentation), cropped back."""
        output = model(self.pad(inputs))
        return output[..., : inputs.shape[-2], : inputs.shape[-1]] if output.ndim == 4 else output

    def restore(self, logits: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Dense logits (N, K, h, w) at an image's own (height, width), bilinear: where segmentation is
        scored and predicted masks are drawn."""
        if tuple(logits.shape[-2:]) == tuple(shape):
            return logits
        return F.interpolate(logits.float(), size=tuple(shape), mode="bilinear", align_corners=False)

    def to_dict(self) -> dict:
        """The rule in words and numbers, for the ONNX metadata of an exported model: enough to prepare
        its input without vislab."""
        return {
            "resize": "shorter side to size, bilinear, antialiased (as PIL)",
            "crop": "centre size x size" if self.crop else "none",
            "size": self.size,
            "channels": "RGB" if self.channels == 3 else "grayscale",
            "scale": "pixel / 255",
            "mean": list(self.mean),
            "std": list(self.std),
            "pad_to_multiple_of": self.stride,
            "pad_value": "0 after normalising (the mean colour), right and bottom",
            "upright": "EXIF orientation applied",
        }
