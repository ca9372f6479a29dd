"""What a run will need in memory, estimated before anything large is allocated, so that a config that
cannot fit (in-memory images at `image_size`, an absurd `batch_size`, a size the model cannot take) is one
line naming the estimate and the key to change, not an allocator's traceback minutes in.

The estimates are deliberately generous: a config is refused only when its estimate exceeds all the
memory the machine has free, never a fraction of it that a real run would still fit in."""

from __future__ import annotations

import os
import sys

import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from vislab.config import Config
from vislab.errors import VislabError
from vislab.models import backbone_of, create_model, model_input_size
from vislab.precision import resolve_precision, uses_cuda

IN_MEMORY_BUDGET = 4 * 2**30  # left to choose, datasets larger than this are streamed from their files
DECODE_FACTOR = 5  # a decoded image is held as uint8 and, while it is resized or batched, as float32 too
# Weights, their gradients and the optimizer's state (momentum; Adam's second moment is left out: generous).
WEIGHT_COPIES = 3


def free_memory() -> int | None:
    """Bytes the machine can still give this process: MemAvailable plus free swap on Linux, else the
    physical memory (generous where nothing better is known); None when even that is unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in meminfo if ":" in line}
        return fields["MemAvailable"] + fields.get("SwapFree", 0)
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def size_text(count: float) -> str:
    """1.5 GiB, 16.3 TiB."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError  # unreachable


def hold_in_memory(
    asked: bool | None,
    count: int,
    image_bytes: int,
    image_size: int,
    can_stream: bool = True,
    what: str = "images",
) -> bool:
    """Whether a loader decodes `count` items of `image_bytes` each into memory: as `in_memory` asks, else
    when they fit in 4 GiB and in free memory. Refuses (naming `image_size`, and `in_memory` where it
    helps) data that must be held but cannot be, and streamed images too large to decode even one."""
    free = free_memory()
    total = count * image_bytes
    if not can_stream:
        held = True
    elif asked is not None:
        held = asked
    else:
        held = total <= IN_MEMORY_BUDGET and (free is None or total <= free)
    if free is None:
        return held
    if held and total > free:
        fix = "lower image_size or set in_memory=false" if can_stream else "lower image_size"
        raise VislabError(
            f"{count:,} {what} at image_size={image_size} need {size_text(total)} in memory, more than the "
            f"{size_text(free)} free: {fix}"
        )
    if not held and image_bytes * DECODE_FACTOR > free:
        raise VislabError(
            f"one image at image_size={image_size} needs {size_text(image_bytes * DECODE_FACTOR)} to decode "
            f"and batch, more than the {size_text(free)} free: lower image_size"
        )
    return held


def training_memory(config: Config) -> tuple[int | None, str]:
    """Bytes free where the model trains, and where that is, for the message."""
    if uses_cuda(config.trainer):
        try:
            return torch.cuda.mem_get_info()[0], "free on the GPU"
        except RuntimeError:
            return None, ""
    return free_memory(), "free"


def activation_bytes(config: Config) -> int:
    """Bytes per kept activation at the precision the run will train in."""
    precision = resolve_precision(config.trainer)
    return 2 if "16" in precision else 8 if "64" in precision else 4


def meta_model(config: Config, num_classes: int, channels: int, size: int) -> nn.Module:
    """The configured network with shapes but no storage (no weights are read or downloaded)."""
    finetune = config.finetune
    with torch.device("meta"):
        return create_model(
            config.model,
            num_classes,
            channels,
            size,
            False,
            None,
            finetune.head_hidden,
            finetune.head_dropout,
            **config.model_args,
        )


def tensors_in(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in tensors_in(item)]
    if isinstance(output, dict):
        return [t for item in output.values() for t in tensors_in(item)]
    return []


def kept_elements(model: nn.Module, channels: int, side: int, frozen: nn.Module | None = None) -> int:
    """Elements per image that training keeps for the backward pass: the input and the output of every
    leaf module outside `frozen` (a part that computes no gradient), each storage once (an in-place
    layer's output or a view is no new memory), from a forward on the meta device of two images
    (BatchNorm refuses one image of 1x1 maps in training)."""
    inputs = torch.empty(2, channels, side, side, device="meta")
    kept = {inputs.untyped_storage()._cdata: inputs}  # the tensors are held, so no storage is reused

    def keep(module, args, output):
        for tensor in tensors_in(output):
            kept.setdefault(tensor.untyped_storage()._cdata, tensor)

    skipped = set(frozen.modules()) if frozen is not None else set()
    leaves = [m for m in model.modules() if next(m.children(), None) is None and m not in skipped]
    hooks = [leaf.register_forward_hook(keep) for leaf in leaves]
    try:
        with torch.no_grad():
            model.train()(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return sum(t.untyped_storage().nbytes() // t.element_size() for t in kept.values()) // 2


def check_model_input(config: Config, num_classes: int, channels: int, side: int, error: Exception) -> None:
    """After a failed meta forward at `side`: refuses the size if the model runs at its designed size (so
    it was a shape error), and otherwise returns, leaving a failure of the meta device itself unjudged."""
    try:
        designed = model_input_size(config.model)
        kept_elements(meta_model(config, num_classes, channels, designed), channels, designed)
    except Exception:
        return
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise VislabError(
        f"{config.model} cannot take {side}x{side} images ({reason}): change image_size "
        f"({config.model} is designed for {designed})"
    )


def check_training_fits(
    config: Config, num_classes: int, channels: int, size: int, train_size: int, side: int | None = None
) -> None:
    """Refuses, before the model is built or a batch read, a model that cannot take `side` x `side`
    inputs (default `size`) and a batch whose weights and kept activations exceed the memory free where
    it trains. A model the meta device cannot run (an op without meta support) is not judged."""
    side = side or size
    try:
        model = meta_model(config, num_classes, channels, size)
    except VislabError:
        raise  # the real build would say the same: an unknown model or option
    except Exception:
        return
    frozen = backbone_of(model) if config.finetune.mode == "linear" else None
    try:
        per_image = kept_elements(model, channels, side, frozen) * activation_bytes(config)
    except Exception as error:
        check_model_input(config, num_classes, channels, side, error)
        return
    free, where = training_memory(config)
    if free is None:
        return
    fixed = sum(p.numel() for p in frozen.parameters()) if frozen is not None else 0
    weights = (fixed + (sum(p.numel() for p in model.parameters()) - fixed) * WEIGHT_COPIES) * 4
    batch = min(config.batch_size, train_size)  # a batch never holds more than the whole train split
    if weights + batch * per_image <= free:
        return
    parts = f"{size_text(per_image)} of activations per image, {size_text(weights)} for the weights"
    if weights + per_image > free:
        raise VislabError(
            f"training {config.model} at image_size={size} needs {size_text(weights + per_image)} for a "
            f"single image ({parts}), more than the {size_text(free)} {where}: lower image_size"
        )
    capped = f" ({batch:,} images a batch)" if batch < config.batch_size else ""
    raise VislabError(
        f"batch_size={config.batch_size}{capped} of {config.model} at image_size={size} needs "
        f"{size_text(weights + batch * per_image)} ({parts}), more than the {size_text(free)} {where}: "
        f"lower batch_size (about {(free - weights) // per_image:,} fit) or image_size"
    )


def batch_warning(batch_size: int, train_size: int) -> str | None:
    """The line for a batch larger than the training set (it trains, one smaller batch an epoch), as the
    terminal and the web UI show it."""
    if batch_size <= train_size:
        return None
    return (
        f"vislab: warning: batch_size={batch_size} is larger than the {train_size:,} training images: "
        f"each epoch is one batch of {train_size:,} (lower batch_size for more steps per epoch)"
    )


@rank_zero_only  # once, not once per DDP process
def warn_about_batch(batch_size: int, train_size: int) -> None:
    line = batch_warning(batch_size, train_size)
    if line:
        print(line, file=sys.stderr)
