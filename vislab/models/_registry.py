"""The model registry: every architecture registers a builder under one name, as in timm."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from vislab.errors import VislabError, unknown_name


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    input_size: int  # the square side the architecture was designed for
    family: str
    task: str  # classification: (B, classes) logits; segmentation: (B, classes, H, W)

    def options(self) -> list[str]:
        """Keyword options a user may set through `model_args`."""
        fixed = {"num_classes", "in_chans", "image_size"}
        return [p for p in inspect.signature(self.builder).parameters if p not in fixed]


_MODELS: dict[str, ModelEntry] = {}


def register_model(input_size: int, family: str) -> Callable:
    task = "segmentation" if family == "segmentation" else "classification"

    """Registers `builder(num_classes, in_chans, image_size, **options)` under its function name."""

    def register(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _MODELS[builder.__name__] = ModelEntry(builder.__name__, builder, input_size, family, task)
        return builder

    return register


def registered_models() -> dict[str, ModelEntry]:
    return dict(_MODELS)


def get_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise unknown_name("model", name, list(_MODELS) + ["timm:<name>"])
    return _MODELS[name]


def check_options(name: str, options: dict, allowed: list[str]) -> None:
    for key in options:
        if key not in allowed:
            listed = ", ".join(allowed) if allowed else "none"
            raise VislabError(f"model '{name}' has no option '{key}' (its options: {listed})")
