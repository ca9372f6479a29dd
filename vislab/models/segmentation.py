"""Segmentation networks: FCN-8s on VGG-16, U-Nets with plain or residual levels, and DeepLabV3 on an
ImageNet ResNet-50. Each maps (B, C, H, W) images to (B, classes, H, W) logits and exposes its
`encoder`, the part that two-stage training freezes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from vislab.models._registry import register_model


class Segmenter(nn.Module):
    """An encoder and a decoder; the decoder sees the input size so it can return full-size logits."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x):
        return self.decoder(self.encoder(x), x.shape[-2:])


class VGGStages(nn.Module):
    """torchvision's VGG-16 features, returning the outputs of pool3, pool4 and pool5."""

    def __init__(self, in_chans: int, pretrained: bool):
        super().__init__()
        weights = torchvision.models.VGG16_Weights.IMAGENET1K_V1 if pretrained else None
        features = torchvision.models.vgg16(weights=weights).features
        if in_chans != 3:
            features[0] = nn.Conv2d(in_chans, 64, 3, padding=1)
        pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
        self.to_pool3 = features[: pools[2] + 1]
        self.to_pool4 = features[pools[2] + 1 : pools[3] + 1]
        self.to_pool5 = features[pools[3] + 1 :]

    def forward(self, x):
        pool3 = self.to_pool3(x)
        pool4 = self.to_pool4(pool3)
        return pool3, pool4, self.to_pool5(pool4)


class FCN8sDecoder(nn.Module):
    """Long et al.'s FCN-8s head: fc6/fc7 as convolutions, scores from pool5, pool4 and pool3 fused
    by upsampling (bilinear here) and summed, then upsampled to the input size."""

    def __init__(self, num_classes: int, width: int = 1024):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Conv2d(512, width, 7, padding=3),
            nn.ReLU(True),
            nn.Dropout2d(0.5),
            nn.Conv2d(width, width, 1),
            nn.ReLU(True),
            nn.Dropout2d(0.5),
        )
        self.score5 = nn.Conv2d(width, num_classes, 1)
        self.score4 = nn.Conv2d(512, num_classes, 1)
        self.score3 = nn.Conv2d(256, num_classes, 1)

    def forward(self, features, size):
        pool3, pool4, pool5 = features
        score = self.score5(self.fc(pool5))
        score = F.interpolate(
            score, size=pool4.shape[-2:], mode="bilinear", align_corners=False
        ) + self.score4(pool4)
        score = F.interpolate(
            score, size=pool3.shape[-2:], mode="bilinear", align_corners=False
        ) + self.score3(pool3)
        return F.interpolate(score, size=size, mode="bilinear", align_corners=False)


@register_model(input_size=256, family="segmentation", task="segmentation")
def fcn8s(
    num_classes: int, in_chans: int, image_size: int, pretrained_vgg: bool = False, width: int = 1024
) -> nn.Module:
    """FCN-8s with a VGG-16 encoder (`pretrained_vgg=true`: torchvision's ImageNet weights)."""
    return Segmenter(VGGStages(in_chans, pretrained_vgg), FCN8sDecoder(num_classes, width))


def conv_block(in_chans: int, out_chans: int, residual: bool, depth: int = 2) -> nn.Module:
    """`depth` conv-BN-ReLU layers, or with `residual` that many residual units."""
    if residual:
        from vislab.models.cifar_resnet import BasicBlock

        return nn.Sequential(
            *[BasicBlock(in_chans if i == 0 else out_chans, out_chans, 1) for i in range(depth)]
        )
    layers = []
    for i in range(depth):
        layers += [
            nn.Conv2d(in_chans if i == 0 else out_chans, out_chans, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_chans),
            nn.ReLU(True),
        ]
    return nn.Sequential(*layers)


class UNetEncoder(nn.Module):
    def __init__(self, in_chans: int, widths: list[int], residual: bool, depth: int):
        super().__init__()
        self.levels = nn.ModuleList(
            conv_block(in_chans if i == 0 else widths[i - 1], w, residual, depth)
            for i, w in enumerate(widths)
        )

    def forward(self, x):
        skips = []
        for index, level in enumerate(self.levels):
            x = level(x if index == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        return skips


class UNetDecoder(nn.Module):
    def __init__(self, num_classes: int, widths: list[int], residual: bool, depth: int):
        super().__init__()
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(len(widths) - 1)
        )
        self.levels = nn.ModuleList(
            conv_block(2 * widths[i], widths[i], residual, depth) for i in range(len(widths) - 1)
        )
        self.classify = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, skips, size):
        x = skips[-1]
        for index in reversed(range(len(self.up))):
            x = self.up[index](x)
            x = self.levels[index](
                torch.cat([skips[index], x[..., : skips[index].shape[-2], : skips[index].shape[-1]]], 1)
            )
        return self.classify(x)


def unet(num_classes: int, in_chans: int, width: int, levels: int, residual: bool, depth: int) -> nn.Module:
    widths = [width * 2**i for i in range(levels)]
    return Segmenter(
        UNetEncoder(in_chans, widths, residual, depth), UNetDecoder(num_classes, widths, residual, depth)
    )


@register_model(input_size=256, family="segmentation", task="segmentation")
def deep_unet(
    num_classes: int, in_chans: int, image_size: int, width: int = 32, levels: int = 5
) -> nn.Module:
    """U-Net (Ronneberger et al.) with two Conv-BN-ReLU layers per level."""
    return unet(num_classes, in_chans, width, levels, residual=False, depth=2)


@register_model(input_size=256, family="segmentation", task="segmentation")
def resunet(num_classes: int, in_chans: int, image_size: int, width: int = 32, levels: int = 5) -> nn.Module:
    """U-Net whose levels are two residual blocks."""
    return unet(num_classes, in_chans, width, levels, residual=True, depth=2)


@register_model(input_size=256, family="segmentation", task="segmentation")
def resunet_4444(
    num_classes: int, in_chans: int, image_size: int, width: int = 32, levels: int = 5
) -> nn.Module:
    """U-Net whose levels are four residual blocks each (the seed's ResUNet 4-4-4-4)."""
    return unet(num_classes, in_chans, width, levels, residual=True, depth=4)


class DeepLabDecoder(nn.Module):
    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, features, size):
        return F.interpolate(self.head(features["out"]), size=size, mode="bilinear", align_corners=False)


@register_model(input_size=256, family="segmentation", task="segmentation")
def deeplabv3_resnet50(
    num_classes: int, in_chans: int, image_size: int, pretrained_backbone: bool = False
) -> nn.Module:
    """torchvision's DeepLabV3 with a ResNet-50 encoder (`pretrained_backbone=true`: ImageNet weights)."""
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V1 if pretrained_backbone else None
    model = torchvision.models.segmentation.deeplabv3_resnet50(
        num_classes=num_classes, weights_backbone=weights
    )
    return Segmenter(model.backbone, DeepLabDecoder(model.classifier))
