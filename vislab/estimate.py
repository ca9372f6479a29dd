"""How long a run will take on this machine, before it starts: a few timed training steps of the configured
model at its input size, memory layout and precision, scaled to the training set and the epochs."""

from __future__ import annotations

import time

import torch

from vislab.config import Config
from vislab.memory import batch_warning
from vislab.precision import autocast, uses_cuda

TIMED_BATCH = 16  # images a timed step; small enough to time a large model in seconds on a CPU
LONG_RUN_S = 3600  # a run estimated longer than this gets a warning


def seconds_per_image(config: Config, num_classes: int, channels: int, size: int) -> float:
    """Seconds one training image costs in forward, backward and an optimizer step (the second and third
    of three steps on random input: the first pays for the kernels' set-up). Data loading is not timed."""
    from vislab.tasks.base import build_model

    unweighted = config.model_copy(update={"pretrained": False, "weights": None})  # the time is the same
    model, decided = build_model(unweighted, num_classes, channels, size)
    device = torch.device("cuda" if uses_cuda(decided.trainer) else "cpu")
    model = model.to(device).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    images = torch.randn(TIMED_BATCH, channels, size, size, device=device)
    if decided.trainer.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with autocast(decided.trainer.precision, device):
            loss = model(images).float().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / (2 * TIMED_BATCH)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def run_time_lines(config: Config, num_classes: int, channels: int, size: int, train_size: int) -> list[str]:
    """The estimate as the web UI shows it before Start, with a warning for a run over an hour."""
    try:
        epoch_s = seconds_per_image(config, num_classes, channels, size) * train_size
    except Exception as error:  # an estimate is a courtesy: the data's check is shown without it
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        return [f"no time estimate: {first}"]
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the UI server keeps nothing on the GPU that a training job could use
    total_s = epoch_s * config.epochs
    lines = [
        f"training takes about {duration(epoch_s)} an epoch on this machine, {duration(total_s)} for "
        f"{config.epochs} epochs (timed on {TIMED_BATCH} images of {size} px; reading data not counted)"
    ]
    what = f"{config.epochs} epochs of {config.model} on {train_size:,} images at {size} px"
    return lines + [line for line in [long_run_warning(what, total_s)] if line]


def long_run_warning(what: str, seconds: float) -> str | None:
    """The line for a run of over an hour, as Check data says it before Start and the terminal once the
    first steps are timed (vislab.progress)."""
    if seconds <= LONG_RUN_S:
        return None
    return (
        f"vislab: warning: {what} take about {duration(seconds)} here: lower epochs or image_size, or "
        "choose a smaller model"
    )


def before_start(config: Config, num_classes: int, channels: int, size: int, train_size: int) -> list[str]:
    """What Check data says before Start besides the data's summary: the time estimate and the warnings."""
    warning = batch_warning(config.batch_size, train_size)
    return run_time_lines(config, num_classes, channels, size, train_size) + ([warning] if warning else [])
