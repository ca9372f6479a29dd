"""The numeric precision a run trains in (`trainer.precision`), and evaluates and predicts in afterwards."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import torch

from vislab.config import TrainerConfig

# CPU flags of the bf16 matrix instructions oneDNN uses for convolutions and matrix products (x86).
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

# Lightning's short names, spelled out: what config.yaml records and evaluation reads.
ALIASES = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed", "64": "64-true", "half": "16-mixed"}

# The dtype evaluation and prediction autocast to for a run trained in each precision (a -true run's
# weights are stored in it; loaded into fp32 they compute in it again under autocast).
AUTOCAST_DTYPES = {
    "bf16-mixed": torch.bfloat16,
    "16-mixed": torch.float16,
    "bf16-true": torch.bfloat16,
    "16-true": torch.float16,
}


@functools.cache
def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU reports bf16 matrix instructions (AVX512-BF16 or AMX-BF16), the same answer on every
    run on a machine. With them a ResNet-20 step runs 1.5-1.8x faster in bf16-mixed than in fp32 on this
    project's CPU; without them PyTorch emulates bf16 and it is slower. Linux reports the flags in
    /proc/cpuinfo; elsewhere (macOS, Windows) the answer is no and runs stay in fp32."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return not BF16_CPU_FLAGS.isdisjoint(line.partition(":")[2].split())
    return False


def legacy_auto(trainer: TrainerConfig) -> str:
    """What `auto` meant in a run from before the decision was recorded: fp32 on a CPU. A resumed run
    continues in the precision it started in."""
    return resolve_precision(trainer) if uses_cuda(trainer) else "32-true"


def uses_cuda(trainer: TrainerConfig) -> bool:
    return trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(trainer: TrainerConfig) -> str:
    """`trainer.precision` in Lightning's full name, with `auto` decided for this machine: on a GPU
    bf16-mixed where it supports it, else 16-mixed; on a CPU bf16-mixed where it has bf16 matrix
    instructions, else 32-true."""
    if trainer.precision != "auto":
        return ALIASES.get(str(trainer.precision), str(trainer.precision))
    if uses_cuda(trainer):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_bf16() else "32-true"


def autocast(precision: str, device: torch.device | str = "cpu") -> torch.autocast:
    """Autocast to the dtype a run trained in `precision` computes in (off for fp32)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


@contextlib.contextmanager
def inference(precision: str, device: torch.device | str = "cpu") -> Iterator[None]:
    """Inference mode, under autocast when the model trained in a mixed precision: a model is evaluated
    and predicts in the precision its run trained and validated in, so that `vislab eval` gives the score
    the run logged. ("auto" is what runs from before the decision was recorded say: they trained in fp32
    on a CPU, and fp32 is the safe reading elsewhere.)"""
    with torch.inference_mode(), autocast(precision, device):
        yield
