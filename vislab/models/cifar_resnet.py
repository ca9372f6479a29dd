"""ResNets for 32x32 images: He et al.'s CIFAR ResNets (6n+2 layers), their pre-activation variants,
and ResNet-18 with a CIFAR stem (3x3 stride-1 first conv, no max-pool)."""

from __future__ import annotations

import torch.nn.functional as F
import torchvision
from torch import nn

from vislab.models._registry import register_model
from vislab.models.cnn import Classifier


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus shortcut, then ReLU (He et al. 2015)."""

    def __init__(self, in_chans: int, out_chans: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chans)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chans)
        self.shortcut = projection(in_chans, out_chans, stride, with_bn=True)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv plus shortcut, with no activation after the sum (He et al. 2016)."""

    def __init__(self, in_chans: int, out_chans: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chans)
        self.conv1 = nn.Conv2d(in_chans, out_chans, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chans)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, 1, 1, bias=False)
        self.shortcut = projection(in_chans, out_chans, stride, with_bn=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if isinstance(self.shortcut, nn.Conv2d) else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + shortcut


def projection(in_chans: int, out_chans: int, stride: int, with_bn: bool) -> nn.Module:
    """Identity when shapes match, else a 1x1 strided conv (the paper's option B)."""
    if stride == 1 and in_chans == out_chans:
        return nn.Identity()
    conv = nn.Conv2d(in_chans, out_chans, 1, stride, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_chans)) if with_bn else conv


def cifar_resnet(depth: int, num_classes: int, in_chans: int, width: int, preact: bool) -> nn.Module:
    blocks_per_stage = (depth - 2) // 6
    block = PreActBlock if preact else BasicBlock
    layers: list[nn.Module] = [nn.Conv2d(in_chans, width, 3, 1, 1, bias=False)]
    if not preact:
        layers += [nn.BatchNorm2d(width), nn.ReLU(True)]
    chans = width
    for stage in range(3):
        out = width * 2**stage
        for index in range(blocks_per_stage):
            layers.append(block(chans, out, stride=2 if stage > 0 and index == 0 else 1))
            chans = out
    if preact:  # pre-activation nets end with the BN-ReLU that the last block left out
        layers += [nn.BatchNorm2d(chans), nn.ReLU(True)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    model = Classifier(nn.Sequential(*layers), nn.Linear(chans, num_classes))
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model


def _register_depth(depth: int, preact: bool) -> None:
    name = f"{'preact_' if preact else ''}resnet{depth}"

    def builder(num_classes: int, in_chans: int, image_size: int, width: int = 16) -> nn.Module:
        return cifar_resnet(depth, num_classes, in_chans, width, preact)

    builder.__name__ = name
    builder.__doc__ = (
        f"CIFAR {'pre-activation ' if preact else ''}ResNet-{depth} (3 stages of {(depth - 2) // 6})."
    )
    register_model(input_size=32, family="cifar_resnet")(builder)


for _depth in (8, 14, 20, 32, 56):
    _register_depth(_depth, preact=False)
    _register_depth(_depth, preact=True)


@register_model(input_size=32, family="cifar_resnet")
def cifar_resnet18(num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    """torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool, for 32x32 inputs."""
    net = torchvision.models.resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    head, net.fc = net.fc, nn.Identity()
    return Classifier(net, head)
