"""DenseNet-BC for small images (Huang et al. 2017): three dense blocks of bottleneck layers with
compressing transitions, a stride-1 3x3 stem for 32 and 64 px inputs."""

from __future__ import annotations

import torch
from torch import nn

from vislab.errors import VislabError
from vislab.models._registry import register_model
from vislab.models.cnn import Classifier


def bn_relu_conv(in_chans: int, out_chans: int, kernel: int) -> list[nn.Module]:
    return [
        nn.BatchNorm2d(in_chans),
        nn.ReLU(True),
        nn.Conv2d(in_chans, out_chans, kernel, padding=kernel // 2, bias=False),
    ]


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv to 4k channels, BN-ReLU-3x3 conv to k, concatenated to the input."""

    def __init__(self, in_chans: int, growth: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            *bn_relu_conv(in_chans, 4 * growth, 1), *bn_relu_conv(4 * growth, growth, 3), nn.Dropout(dropout)
        )

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


@register_model(input_size=32, family="densenet")
def densenet_cifar(
    num_classes: int,
    in_chans: int,
    image_size: int,
    depth: int = 100,
    growth: int = 12,
    compression: float = 0.5,
    dropout: float = 0.0,
) -> nn.Module:
    """DenseNet-BC-`depth` with growth rate `growth` (DenseNet-BC-100, k=12 has 0.8M parameters)."""
    if (depth - 4) % 6:
        raise VislabError(f"densenet_cifar depth must be 6n+4 (40, 100, 190...), not {depth}")
    per_block = (depth - 4) // 6
    chans = 2 * growth
    layers: list[nn.Module] = [nn.Conv2d(in_chans, chans, 3, padding=1, bias=False)]
    for block in range(3):
        for _ in range(per_block):
            layers.append(DenseLayer(chans, growth, dropout))
            chans += growth
        if block < 2:
            out = int(chans * compression)
            layers += [*bn_relu_conv(chans, out, 1), nn.AvgPool2d(2)]
            chans = out
    layers += [nn.BatchNorm2d(chans), nn.ReLU(True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), nn.Linear(chans, num_classes))
