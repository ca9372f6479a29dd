"""The model registry: every architecture registers a builder under one name, as in timm. vislab's own
models and a user's (`@register_model`, a plugin package, a file or module reference) share it."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vislab.errors import VislabError, unknown_name

TASKS = ("classification", "segmentation")
DEFAULT_INPUT_SIZE = 32  # what a model that declares no input size is listed and probed at
FIXED_ARGUMENTS = ("num_classes", "in_chans", "image_size")  # what vislab passes; the rest is model_args


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]  # a function or an nn.Module class
    input_size: int  # the square side the architecture was designed for
    family: str
    task: str  # classification: (B, classes) logits; segmentation: (B, classes, H, W)

    @property
    def builtin(self) -> bool:
        """vislab's own models, whose output shapes are tested; a user's are checked when built."""
        return getattr(self.builder, "__module__", "").startswith("vislab.models.")

    def parameters(self) -> dict[str, inspect.Parameter]:
        try:
            return dict(inspect.signature(self.builder).parameters)
        except (TypeError, ValueError):  # a builtin or C callable: nothing to read
            return {}

    def takes_any_keyword(self) -> bool:
        return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in self.parameters().values())

    def options(self) -> list[str]:
        """Keyword options a user may set through `model_args`."""
        return [
            name
            for name, p in self.parameters().items()
            if name not in FIXED_ARGUMENTS
            and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        ]

    def build(self, num_classes: int, in_chans: int, image_size: int | None, options: dict) -> nn.Module:
        """Calls the builder with num_classes and in_chans, image_size where its signature takes one (or
        takes **kwargs), and the options."""
        taken = self.parameters()
        fixed = {"num_classes": num_classes, "in_chans": in_chans, "image_size": image_size}
        given = {k: v for k, v in fixed.items() if k in taken or self.takes_any_keyword()}
        if self.builtin:
            return self.builder(**given, **options)
        if "num_classes" not in given:
            raise VislabError(
                f"model={self.name} must take num_classes (vislab passes num_classes, in_chans)"
            )
        try:
            return self.builder(**given, **options)
        except Exception as error:  # the user's code: where it failed, in one line
            from vislab.plugins import describe_failure

            if torch.empty(0).device.type == "meta":  # a shape-only build: the real one will tell
                raise
            raise VislabError(f"model={self.name} failed to build: {describe_failure(error)}") from None


_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str | Callable | None = None,
    *,
    task: str = "classification",
    input_size: int | None = None,
    family: str | None = None,
) -> Callable:
    """Registers a model builder, a function or an `nn.Module` class called with `num_classes`, `in_chans`
    (and `image_size` where its signature takes one) and keyword options from `model_args`, under its name
    or `name`; then `model=NAME` works everywhere. timm's style, bare or with arguments:

        @register_model
        def tiny_cnn(num_classes, in_chans, width=32): ...

        @register_model("my_unet", task="segmentation", input_size=128)
        class MyUNet(nn.Module): ...

    `task` says what the output is for: classification, (B, num_classes) logits; segmentation,
    (B, num_classes, H, W). `input_size` is the square side it is designed for (default 32)."""
    if callable(name):  # bare @register_model
        return register_model(task=task, input_size=input_size, family=family)(name)
    if task not in TASKS:
        raise VislabError(f"register_model: task={task!r}, expected one of {', '.join(TASKS)}")

    def register(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not callable(builder):
            raise VislabError(f"register_model: {builder!r} is not a function or class")
        entry = ModelEntry(
            name or builder.__name__,
            builder,
            input_size or DEFAULT_INPUT_SIZE,
            family or ("own" if not builder.__module__.startswith("vislab.") else builder.__name__),
            task,
        )
        known = _MODELS.get(entry.name)
        if known is not None and known.builtin and not entry.builtin:
            raise VislabError(f"register_model: {entry.name} is one of vislab's models; pick another name")
        _MODELS[entry.name] = entry
        return builder

    return register


def add_entry(entry: ModelEntry) -> None:
    """Registers an entry made elsewhere (a file or module reference resolved under its own text)."""
    _MODELS[entry.name] = entry


def find_entry(name: str) -> ModelEntry | None:
    return _MODELS.get(name)


def entry_of_builder(builder: Callable) -> ModelEntry | None:
    """The entry a function or class is already registered under, if any."""
    return next((e for e in _MODELS.values() if e.builder is builder), None)


def registered_models() -> dict[str, ModelEntry]:
    from vislab.plugins import load_entry_points  # plugin packages register on first look

    load_entry_points()
    return dict(_MODELS)


def known_names() -> list[str]:
    return list(_MODELS) + ["timm:<name>", "FILE.py:NAME", "package.module:NAME"]


def get_entry(name: str) -> ModelEntry:
    if name in _MODELS:
        return _MODELS[name]
    from vislab.models.own import entry_for_reference, is_reference
    from vislab.plugins import load_entry_points

    load_entry_points()
    if name in _MODELS:
        return _MODELS[name]
    if is_reference(name):
        return entry_for_reference(name)
    raise unknown_name("model", name, known_names())


def check_options(name: str, options: dict, entry: ModelEntry) -> None:
    if entry.takes_any_keyword():
        return
    allowed = entry.options()
    for key in options:
        if key not in allowed:
            listed = ", ".join(allowed) if allowed else "none"
            raise VislabError(f"model '{name}' has no option '{key}' (its options: {listed})")
