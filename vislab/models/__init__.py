"""Models: one registry, one factory. `create_model(name, num_classes, ...)` builds any of them: vislab's own,
timm's, a user's registered with `register_model`, or a user's own by reference (`resolve_model`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vislab.errors import VislabError
from vislab.models import (  # noqa: F401  (importing registers the models)
    airbench,
    cbam,
    cifar_resnet,
    cnn,
    densenet,
    segmentation,
)
from vislab.models._registry import check_options, get_entry, register_model, registered_models
from vislab.models.own import check_output, is_reference, require_model_code, resolve_model
from vislab.models.timm_models import PREFIX, create_timm_model, timm_data_config


def create_model(
    name: str,
    num_classes: int,
    in_chans: int = 3,
    image_size: int | None = None,
    pretrained: bool = False,
    weights: str | Path | None = None,
    head_hidden: int = 0,
    head_dropout: float = 0.0,
    **options,
) -> nn.Module:
    """Builds a registered model, or `timm:<name>` through timm, for `num_classes` outputs. A user's model
    is checked by one forward of a dummy batch: its output must fit the classes. `pretrained` loads
    ImageNet weights (timm models); `weights` loads a local state dict, leaving out tensors whose shapes do
    not fit (a head for another number of classes)."""
    if name.startswith(PREFIX):
        timm_name = name.removeprefix(PREFIX)
        model = create_timm_model(
            timm_name, num_classes, in_chans, pretrained, head_hidden, head_dropout, **options
        )
    else:
        if pretrained:
            raise VislabError(
                f"ImageNet weights come with timm models (timm:<name>), not {name}: use weights=PATH"
            )
        entry = get_entry(name)
        check_options(name, options, entry)
        size = image_size or entry.input_size
        model = entry.build(num_classes, in_chans, size, options)
        if not entry.builtin:
            check_output(model, entry, num_classes, in_chans, size)
    if weights:
        load_weights(model, Path(weights))
    return model


def load_weights(model: nn.Module, path: Path) -> None:
    """Loads a state dict (or a vislab/Lightning checkpoint) into the model or its backbone, whichever its
    keys fit; tensors whose shape differs, such as a head for other classes, keep their fresh values."""
    if not path.is_file():
        raise VislabError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from vislab.checkpoint import load_safetensors  # checkpoint.py builds models: import when used

        state = load_safetensors(path)[0]
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # torch.load raises many types for files that are not safe weight files
            raise VislabError(f"{path} is not a weights file that loads with weights_only=True") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    state = {k.removeprefix("model."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    backbone = backbone_of(model)
    targets = [model] + ([backbone] if backbone is not None else [])
    target = max(targets, key=lambda t: len(state.keys() & t.state_dict().keys()))
    own = target.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise VislabError(f"no tensor in {path} fits the model")
    target.load_state_dict(usable, strict=False)


def model_input_size(name: str) -> int:
    """The square input side the model was designed for."""
    if name.startswith(PREFIX):
        return timm_data_config(name.removeprefix(PREFIX))[0]
    return get_entry(name).input_size


def needs_exact_input_size(name: str) -> bool:
    """timm models (ViTs especially) expect their pretrained size; our CNNs pool globally, any size fits."""
    return name.startswith(PREFIX)


def model_task(name: str) -> str:
    """Which task the model's outputs are for: timm models classify; a user's model says so when
    registered, else its output decides (4-D: segmentation), see vislab.models.own."""
    return "classification" if name.startswith(PREFIX) else get_entry(name).task


def run_label(name: str) -> str:
    """How a model names a run folder: `nets.py:TinyNet` as TinyNet, not as the file's whole path."""
    return name.rpartition(":")[2] if is_reference(name) else name


def backbone_of(model: nn.Module) -> nn.Module | None:
    """The pretrained part that fine-tuning freezes: a classifier's `features`, a segmenter's `encoder`."""
    for name in ("features", "encoder"):
        part = getattr(model, name, None)
        if isinstance(part, nn.Module):
            return part
    return None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "create_model",
    "model_input_size",
    "needs_exact_input_size",
    "count_parameters",
    "backbone_of",
    "registered_models",
    "register_model",
    "resolve_model",
    "require_model_code",
    "is_reference",
    "run_label",
]
