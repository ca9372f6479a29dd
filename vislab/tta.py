"""Test-time augmentation: a model's class probabilities averaged over mirrored (and, for classifiers,
shifted) copies of its input. Wraps anything that maps a normalised batch to logits, a network or an
exported model's runner, and returns log-probabilities, which every consumer of logits can take."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vislab.checkpoint import ModelMeta


def shifted(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The batch moved by (dy, dx) pixels, the border reflected in: a crop of a reflect-padded image."""
    pad = max(abs(dy), abs(dx))
    padded = F.pad(images, (pad,) * 4, mode="reflect")
    height, width = images.shape[-2:]
    return padded[..., pad - dy : pad - dy + height, pad - dx : pad - dx + width]


class TestTimeAugment(nn.Module):
    """Classifiers see the image and its mirror, each also shifted by 1/32 of its side up-left and
    down-right (six views; no shifts under 32 pixels); dense models (segmentation) see the image and its
    mirror, whose prediction is mirrored back. What kind of output the model gives decides which. Models
    trained without flips (digits: a mirrored glyph is another glyph) get no mirrored views.
    With `keep_plain`, the output is (N, 2, ...): the input's own log-probabilities, then the augmented
    ones, so that scoring both ways takes one pass over the views, not two."""

    def __init__(
        self,
        model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        mirror: bool = True,
        keep_plain: bool = False,
    ):
        super().__init__()
        self.model, self.mirror, self.keep_plain = model, mirror, keep_plain
        self.train(False)  # for prediction only

    @classmethod
    def for_model(cls, model, meta: ModelMeta, keep_plain: bool = False) -> TestTimeAugment:
        """The views that match the model's training: mirrored only if it was trained on mirror images."""
        return cls(model, meta.config.get("augment", {}).get("hflip") is not False, keep_plain)

    def views(self, inputs: torch.Tensor, dense: bool) -> list[torch.Tensor]:
        """The views besides the input itself; a mirrored one comes first."""
        bases = [inputs, inputs.flip(-1)] if self.mirror else [inputs]
        if dense:
            return bases[1:]
        step = inputs.shape[-1] // 32  # none under 32 pixels, where one pixel is a large part of the image
        shifts = (step, -step) if step else ()
        return bases[1:] + [shifted(view, d, d) for view in bases for d in shifts]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        first = self.model(inputs)
        dense = first.ndim == 4
        probabilities = first.float().softmax(1)
        views = self.views(inputs, dense)
        for index, view in enumerate(views):
            output = self.model(view).float()
            if dense and self.mirror and index == 0:  # the mirrored view's prediction, mirrored back
                output = output.flip(-1)
            probabilities = probabilities + output.softmax(1)
        augmented = (probabilities / (len(views) + 1)).log()
        return torch.stack((first.float().log_softmax(1), augmented), 1) if self.keep_plain else augmented
