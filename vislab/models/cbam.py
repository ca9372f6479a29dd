"""ResNet with CBAM (Woo et al. 2018): channel then spatial attention after every residual block, with a
stride-1 3x3 stem for 32 px (CIFAR) and 64 px (Tiny-ImageNet) inputs."""

from __future__ import annotations

import torch
from torch import nn

from vislab.models._registry import register_model
from vislab.models.cifar_resnet import BasicBlock
from vislab.models.cnn import Classifier

STAGES = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}


class CBAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, kernel: int = 7):
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(True), nn.Conv2d(hidden, channels, 1)
        )
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x):
        # Channel attention from average- and max-pooled descriptors through one shared MLP.
        x = x * torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))
        # Spatial attention from the per-pixel mean and max over channels.
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.spatial(pooled))


@register_model(input_size=64, family="resnet_cbam")
def resnet_cbam(
    num_classes: int, in_chans: int, image_size: int, depth: int = 18, width: int = 64
) -> nn.Module:
    """ResNet-18/34 with a CBAM module after each residual block."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_chans, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(True),
    ]
    chans = width
    for stage, blocks in enumerate(STAGES[depth]):
        out = width * 2**stage
        for index in range(blocks):
            layers += [BasicBlock(chans, out, stride=2 if stage > 0 and index == 0 else 1), CBAM(out)]
            chans = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), nn.Linear(chans, num_classes))
