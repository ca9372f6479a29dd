"""The fast CIFAR network of airbench (Jordan 2024, arXiv 2404.00498): a frozen 2x2 convolution that whitens
the input patches, initialised from the training data; three conv-pool-BatchNorm-GELU groups; BatchNorm
with fixed scale and fast running statistics; a max-pooled linear head whose logits are scaled down."""

from __future__ import annotations

import torch
from torch import nn

from vislab.errors import VislabError
from vislab.models._registry import register_model
from vislab.models.cnn import Classifier


class Whitening(nn.Conv2d):
    """A frozen 2x2 convolution whose filters are the eigenvectors of the training images' 2x2 patch
    covariance, scaled by their inverse square-root eigenvalues (each also negated, so that the GELU after
    it keeps both signs). `init_from_data` sets them; only the bias learns, and only for the first
    `bias_epochs` epochs (all when None), as airbench's `whiten_bias_epochs`: once it is frozen, nothing
    before the first 3x3 convolution needs a gradient and backpropagation stops there."""

    EPS = 5e-4

    def __init__(self, in_chans: int, bias_epochs: int | None = None):
        patch = in_chans * 2 * 2
        super().__init__(in_chans, 2 * patch, kernel_size=2, bias=True)
        self.weight.requires_grad_(False)
        self.bias_epochs = bias_epochs
        self.start_epoch(0)  # a bias frozen from the start is frozen before DDP wraps the model

    def start_epoch(self, epoch: int) -> None:
        """Called by the training loop as each epoch (0-based) starts, a resumed one included."""
        self.bias.requires_grad_(self.bias_epochs is None or epoch < self.bias_epochs)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """`images`: normalised training images (N, C, H, W)."""
        chans = images.shape[1]
        windows = images.float().unfold(2, 2, 1).unfold(3, 2, 1)  # (N, C, H-1, W-1, 2, 2)
        patches = windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, chans * 4)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / (eigenvalues[:, None] + self.EPS).sqrt()).flip(0).view(-1, chans, 2, 2)
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight))


def batch_norm(chans: int) -> nn.BatchNorm2d:
    """airbench's BatchNorm: running statistics with momentum 0.6 (PyTorch's 0.4), scale fixed at 1."""
    norm = nn.BatchNorm2d(chans, momentum=0.4, eps=1e-12)
    norm.weight.requires_grad_(False)
    return norm


def conv(in_chans: int, out_chans: int) -> nn.Conv2d:
    """A 3x3 convolution whose first filters pass their input through (identity, "dirac") at the start."""
    layer = nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(layer.weight[: min(in_chans, out_chans)])
    return layer


def conv_group(in_chans: int, out_chans: int) -> nn.Sequential:
    return nn.Sequential(
        conv(in_chans, out_chans),
        nn.MaxPool2d(2),
        batch_norm(out_chans),
        nn.GELU(),
        conv(out_chans, out_chans),
        batch_norm(out_chans),
        nn.GELU(),
    )


class ScaledLinear(nn.Linear):
    """The head: a linear layer without bias whose logits are scaled by 1/9, as airbench's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) / 9


@register_model(input_size=32, family="airbench")
def airbench(
    num_classes: int,
    in_chans: int = 3,
    image_size: int = 32,
    widths: tuple = (64, 256, 256),
    whiten_bias_epochs: int | None = None,
):
    """airbench94's network (1.97M parameters); smaller `widths` for CPUs, e.g. [32, 128, 128];
    `whiten_bias_epochs`: the epochs the whitening layer's bias trains for (airbench: 3), then frozen."""
    if image_size < 16:  # the whitening and three 2x poolings need that much
        raise VislabError(f"airbench needs images of 16 pixels or more, not {image_size} (set image_size=32)")
    if whiten_bias_epochs is not None and whiten_bias_epochs < 0:
        raise VislabError(f"model_args.whiten_bias_epochs must be 0 or more, not {whiten_bias_epochs}")
    whitening = Whitening(in_chans, whiten_bias_epochs)
    chans = [whitening.out_channels, *widths]
    groups = [conv_group(a, b) for a, b in zip(chans, chans[1:])]
    features = nn.Sequential(whitening, nn.GELU(), *groups, nn.AdaptiveMaxPool2d(1), nn.Flatten())
    return Classifier(features, ScaledLinear(widths[-1], num_classes, bias=False))
