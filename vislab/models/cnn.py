"""The seed experiments' baselines: an MLP, plain and small CNNs, and a configurable VGG-style net."""

from __future__ import annotations

from torch import nn

from vislab.errors import VislabError
from vislab.models._registry import register_model


def conv_bn_relu(in_chans: int, out_chans: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_chans),
        nn.ReLU(True),
    ]


class Classifier(nn.Module):
    """A feature extractor (`features`, the backbone that fine-tuning freezes) followed by a `head`."""

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x):
        return self.head(self.features(x))


@register_model(input_size=32, family="mlp")
def mlp(
    num_classes: int, in_chans: int, image_size: int, hidden: int = 512, dropout: float = 0.2
) -> nn.Module:
    """Three fully connected layers on the flattened image."""
    features = nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_chans * image_size * image_size, hidden),
        nn.ReLU(True),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden // 2),
        nn.ReLU(True),
        nn.Dropout(dropout),
    )
    return Classifier(features, nn.Linear(hidden // 2, num_classes))


@register_model(input_size=32, family="cnn")
def small_cnn(
    num_classes: int, in_chans: int, image_size: int, width: int = 32, dropout: float = 0.2
) -> nn.Module:
    """Three conv layers and global pooling: the fast default that fits any input size."""
    features = nn.Sequential(
        *conv_bn_relu(in_chans, width),
        *conv_bn_relu(width, 2 * width),
        nn.MaxPool2d(2),
        *conv_bn_relu(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return Classifier(features, nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * width, num_classes)))


@register_model(input_size=32, family="cnn")
def plain_cnn(
    num_classes: int,
    in_chans: int,
    image_size: int,
    depth: int = 4,
    width: int = 64,
    max_width: int = 512,
    hidden: int = 256,
    dropout: float = 0.3,
) -> nn.Module:
    """`depth` conv-BN-ReLU-pool stages doubling the width up to `max_width`, then two FC layers."""
    layers, chans, size = [], in_chans, image_size
    for stage in range(depth):
        out = min(width * 2**stage, max_width)
        layers += conv_bn_relu(chans, out)
        if size >= 2:  # stop pooling once the map is a single pixel, so any depth fits small inputs
            layers.append(nn.MaxPool2d(2))
            size //= 2
        chans = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chans, hidden), nn.ReLU(True)]
    return Classifier(
        nn.Sequential(*layers), nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))
    )


VGG_STAGES = {
    11: [1, 1, 2, 2, 2],
    13: [2, 2, 2, 2, 2],
    16: [2, 2, 3, 3, 3],
    19: [2, 2, 4, 4, 4],
}


@register_model(input_size=32, family="vgg")
def vgg_cifar(
    num_classes: int, in_chans: int, image_size: int, depth: int = 11, width: int = 64, dropout: float = 0.0
) -> nn.Module:
    """VGG-11/13/16/19 with batch norm for small images: five stages of 3x3 convs, widths 64..512."""
    if depth not in VGG_STAGES:
        raise VislabError(f"vgg_cifar depth must be one of {sorted(VGG_STAGES)}, not {depth}")
    layers, chans = [], in_chans
    for stage, convs in enumerate(VGG_STAGES[depth]):
        out = min(width * 2**stage, 8 * width)
        for _ in range(convs):
            layers += conv_bn_relu(chans, out)
            chans = out
        layers.append(nn.MaxPool2d(2) if image_size >= 2 ** (stage + 1) else nn.Identity())
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(
        nn.Sequential(*layers), nn.Sequential(nn.Dropout(dropout), nn.Linear(chans, num_classes))
    )
