"""Models: one registry, one factory. `create_model(name, num_classes, ...)` builds any of them."""

from __future__ import annotations

from torch import nn

from vislab.models import cifar_resnet, cnn  # noqa: F401  (importing registers the models)
from vislab.models._registry import check_options, get_entry, registered_models
from vislab.models.timm_models import PREFIX, create_timm_model, timm_input_size


def create_model(
    name: str, num_classes: int, in_chans: int = 3, image_size: int | None = None, **options
) -> nn.Module:
    """Builds a registered model, or `timm:<name>` through timm, for `num_classes` outputs."""
    if name.startswith(PREFIX):
        return create_timm_model(name.removeprefix(PREFIX), num_classes, in_chans, **options)
    entry = get_entry(name)
    check_options(name, options, entry.options())
    return entry.builder(
        num_classes=num_classes, in_chans=in_chans, image_size=image_size or entry.input_size, **options
    )


def model_input_size(name: str) -> int:
    """The square input side the model was designed for."""
    if name.startswith(PREFIX):
        return timm_input_size(name.removeprefix(PREFIX))
    return get_entry(name).input_size


def needs_exact_input_size(name: str) -> bool:
    """timm models (ViTs especially) expect their pretrained size; our CNNs pool globally, any size fits."""
    return name.startswith(PREFIX)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "create_model",
    "model_input_size",
    "needs_exact_input_size",
    "count_parameters",
    "registered_models",
]
