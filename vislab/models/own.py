"""A user's own model by reference (`model=path/nets.py:TinyNet`, `model=my_pkg.nets:TinyNet`) or, from
Python, as a function, class or `nn.Module` instance: resolved into the one registry, and checked by one
forward of a dummy batch when built.

The task of such a model is the one it was registered with (`@register_model(task=...)`); an unregistered
function or class is a segmentation model if its output is 4-D (B, classes, H, W), else a classifier."""

from __future__ import annotations

import copy
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

from vislab import plugins
from vislab.errors import VislabError
from vislab.models._registry import (
    DEFAULT_INPUT_SIZE,
    ModelEntry,
    add_entry,
    entry_of_builder,
    find_entry,
    register_model,
)

ATTRIBUTE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")  # a name in a module, or Outer.Inner


@dataclass(frozen=True)
class Reference:
    text: str  # as written: "nets.py:TinyNet"
    source: str  # "nets.py" or "my_pkg.nets": what --import takes
    attribute: str  # "TinyNet"

    @property
    def is_file(self) -> bool:
        return self.source.endswith(".py")


def parse_reference(text: str) -> Reference | None:
    """A `FILE.py:NAME` or `package.module:NAME` reference, or None for a plain name (`timm:x` included)."""
    if not isinstance(text, str) or text.startswith("timm:") or ":" not in text:
        return None
    source, _, attribute = text.rpartition(":")
    if not (source.endswith(".py") or plugins.MODULE_NAME.fullmatch(source)):
        return None
    if not ATTRIBUTE.fullmatch(attribute):
        raise VislabError(f"model={text}: expected FILE.py:NAME or package.module:NAME after the colon")
    return Reference(text, source, attribute)


def is_reference(text: str) -> bool:
    return parse_reference(text) is not None


def resolve_model(spec) -> str:
    """The name under which `spec` can be used as `model=`, importing or registering it if need be. This is
    the user's own request (the command line of a new training run, a recipe they chose, a Python call):

    - a registered name or `timm:<name>`: returned as is;
    - `FILE.py:NAME` or `package.module:NAME`: the file or module is imported and NAME (a function or
      `nn.Module` class) registered under that text;
    - a function or `nn.Module` class: its registered name, else registered as `module:qualname` (a
      notebook's or script's own, or one defined inside a function, under its `__name__`);
    - an `nn.Module` instance: registered under its class's name, each build a copy of it (its current
      weights are where training starts; the instance itself is left untouched)."""
    if isinstance(spec, str):
        reference = parse_reference(spec)
        if reference is not None:
            module = (
                plugins.import_code(reference.source)
                if reference.is_file
                else plugins.import_module(reference.source)
            )
            register_reference(reference, module)
        return spec
    if isinstance(spec, nn.Module):
        return register_instance(spec)
    if callable(spec):
        return register_callable(spec)
    raise VislabError(
        f"model={spec!r}: expected a model name, FILE.py:NAME, a function, a class or an nn.Module"
    )


def register_callable(builder: Callable) -> str:
    known = entry_of_builder(builder)
    if known is not None:
        return known.name
    module_name = getattr(builder, "__module__", "__main__")
    given = plugins.file_of_module(module_name)
    if given is not None:
        name = f"{given}:{builder.__qualname__}"
    elif module_name == "__main__" or "<" in builder.__qualname__:  # a notebook's, a function's own
        name = builder.__name__
    else:
        name = f"{module_name}:{builder.__qualname__}"
        if module_name in sys.modules:
            plugins.remember_module(sys.modules[module_name])
    register_model(name)(builder)
    return name


def register_instance(model: nn.Module) -> str:
    name = type(model).__name__

    def copy_of(num_classes: int, in_chans: int) -> nn.Module:
        return copy.deepcopy(model)

    copy_of.__module__ = "__main__"  # a user's model: checked when built, not one of vislab's
    register_model(name)(copy_of)
    return name


def register_reference(reference: Reference, module: ModuleType) -> ModelEntry:
    """NAME of an imported file or module, registered under the reference's text (keeping the task and
    input size it was registered with, if it was)."""
    found = module
    for part in reference.attribute.split("."):
        found = getattr(found, part, None)
    if found is None:
        candidates = model_candidates(module)
        listed = (
            f"its models could be: {', '.join(candidates)}"
            if candidates
            else "it defines no function or nn.Module class"
        )
        raise VislabError(f"{reference.source} has no {reference.attribute!r}; {listed}")
    if isinstance(found, nn.Module):
        name = register_instance(found)
        entry = find_entry(name)
    elif not callable(found):
        raise VislabError(
            f"{reference.text} is a {type(found).__name__}, not a function or nn.Module class that "
            "builds a model"
        )
    else:
        entry = entry_of_builder(found)
        if entry is None:  # not registered: its task follows from its output
            unregistered = ModelEntry(reference.text, found, DEFAULT_INPUT_SIZE, "own", "classification")
            entry = ModelEntry(reference.text, found, DEFAULT_INPUT_SIZE, "own", probed_task(unregistered))
    entry = ModelEntry(reference.text, entry.builder, entry.input_size, entry.family, entry.task)
    add_entry(entry)
    return entry


def model_candidates(module: ModuleType) -> list[str]:
    """The names a module defines that could build a model: its public functions and nn.Module classes."""
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(value) or (inspect.isclass(value) and issubclass(value, nn.Module)):
            names.append(name)
    return names


def imported_code(reference: Reference) -> ModuleType | None:
    """The module a reference points into, if the user has imported it (nothing is imported here)."""
    if reference.is_file:
        found = plugins.imported_file(reference.source)
        return found[1] if found else None
    return plugins.imported_module(reference.source)


def entry_for_reference(text: str) -> ModelEntry:
    """A reference resolved against code the user has imported (never importing anything itself)."""
    reference = parse_reference(text)
    module = imported_code(reference)
    if module is None:
        raise VislabError(
            f"model={text} is code that vislab does not import by itself: pass --import {reference.source}"
        )
    return register_reference(reference, module)


def require_model_code(model: str, where) -> None:
    """Before a checkpoint's or a run's model is built: the one line saying what to pass when its code is
    not here. Nothing is imported."""
    from vislab.models._registry import get_entry

    if model.startswith("timm:"):
        return
    reference = parse_reference(model)
    if reference is not None:
        if find_entry(model) is None and imported_code(reference) is None:
            raise VislabError(
                f"{where} was trained with model={model}, which vislab does not import by itself: "
                f"pass --import {reference.source}"
            )
        get_entry(model)  # imported: a name it lacks is named with the ones it has
        return
    try:
        get_entry(model)
    except VislabError:
        raise VislabError(
            f"{where} was trained with model={model}, which is not registered here: pass --import with "
            "the file or module that registers it, install the plugin package that provides it, or "
            "register it in Python (vislab.models.register_model)"
        ) from None


def check_output(model, entry: ModelEntry, num_classes: int, in_chans: int, size: int) -> None:
    """One forward of a dummy batch of two: a user's model must return (2, num_classes) logits, or
    (2, num_classes, side, side) for segmentation (`size` padded to a multiple of 32, as images are).
    Weights, BatchNorm statistics, training flags and the random state are left as they were, so a
    resumed run builds the same model."""
    if not isinstance(model, nn.Module):
        raise VislabError(f"model={entry.name} returned a {type(model).__name__}, not a torch nn.Module")
    if entry.task == "segmentation":  # segmentation pads its images to a multiple of 32
        size = -(-size // 32) * 32
    tensor = next(iter(model.parameters()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    batch = torch.zeros(2, in_chans, size, size, device=device)
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            output = model.eval()(batch)
    except Exception as error:
        if device.type == "meta":  # an op without meta support: the real build checks it
            return
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise VislabError(
            f"model={entry.name} fails on a batch of shape {tuple(batch.shape)}: "
            f"{type(error).__name__}: {reason}"
        ) from None
    finally:
        for module, training in modes.items():
            module.training = training
    expected = (2, num_classes) if entry.task == "classification" else (2, num_classes, size, size)
    shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
    if shape != expected:
        hint = ""
        if isinstance(output, torch.Tensor) and output.ndim == 4 and entry.task == "classification":
            hint = " (a 4-D output is a segmentation model's: register it with task='segmentation')"
        raise VislabError(
            f"model={entry.name} gives output {shape} for a batch of shape {tuple(batch.shape)} where "
            f"{expected} was expected ({num_classes} classes){hint}"
        )


def probed_task(entry: ModelEntry) -> str:
    """An unregistered function or class's task: segmentation if a forward of a dummy batch of 3-channel
    images at its input size gives a 4-D output, else (a 2-D output, or a model that cannot be built
    without options or run on such a batch) classification. Built on the meta device where it can be
    (no weights allocated), and outside the random state a run draws from."""
    for device in ("meta", "cpu"):
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad(), torch.device(device):
                model = entry.build(10, 3, entry.input_size, {})
                output = model.eval()(torch.zeros(2, 3, entry.input_size, entry.input_size))
        except Exception:
            continue
        return "segmentation" if isinstance(output, torch.Tensor) and output.ndim == 4 else "classification"
    return "classification"
