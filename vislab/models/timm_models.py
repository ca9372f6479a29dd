"""Any timm architecture as `timm:<name>`, so users get timm's whole zoo through the same factory."""

from __future__ import annotations

from torch import nn

from vislab.errors import VislabError, unknown_name

PREFIX = "timm:"


def create_timm_model(name: str, num_classes: int, in_chans: int, **options) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise unknown_name("timm model", name, timm.list_models())
    try:
        return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **options)
    except TypeError as error:
        raise VislabError(f"timm model '{name}' rejected its options: {error}") from None


def timm_input_size(name: str) -> int:
    import timm

    if not timm.is_model(name):
        raise unknown_name("timm model", name, timm.list_models())
    return timm.get_pretrained_cfg(name).input_size[-1]
