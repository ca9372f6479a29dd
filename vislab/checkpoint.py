"""Checkpoints: written atomically, read with `weights_only=True`, and checked to be vislab's own."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from vislab.errors import VislabError
from vislab.models import create_model


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves to a temporary file beside the target and renames it into place, so a run killed while
    saving leaves the previous checkpoint intact instead of half a file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        with open(temporary, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)

    def load_checkpoint(self, path, map_location=None, weights_only=True) -> dict[str, Any]:
        return read_checkpoint(Path(path))


def find_checkpoint(run_or_checkpoint: str | Path, prefer: str = "best") -> Path:
    """A checkpoint file, or a run folder's best (else last) checkpoint."""
    path = Path(run_or_checkpoint)
    if path.is_dir():
        for name in (prefer, "last", "best"):
            candidate = path / "checkpoints" / f"{name}.ckpt"
            if candidate.is_file():
                return candidate
        raise VislabError(f"no checkpoints in {path} (expected {path}/checkpoints/best.ckpt)")
    if not path.exists():
        raise VislabError(f"no such run folder or checkpoint: {path}")
    return path


def read_checkpoint(path: Path, task: str | None = None) -> dict[str, Any]:
    """Loads a checkpoint without running any code from it (`weights_only=True`) and checks it is ours."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError):
        raise VislabError(
            f"{path} is not a vislab checkpoint (not readable as a weights-only PyTorch file)"
        ) from None
    if not isinstance(checkpoint, dict) or "vislab" not in checkpoint or "state_dict" not in checkpoint:
        raise VislabError(f"{path} is not a vislab checkpoint (no vislab metadata)")
    found = checkpoint["vislab"].get("task")
    if task is not None and found != task:
        raise VislabError(f"{path} is a {found} checkpoint, not a {task} one")
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any]) -> nn.Module:
    """Rebuilds the network from the checkpoint's own metadata and loads its weights."""
    meta = checkpoint["vislab"]
    model = create_model(
        meta["model"],
        len(meta["classes"]),
        meta["channels"],
        meta["image_size"],
        head_hidden=meta.get("head_hidden", 0),
        head_dropout=meta.get("head_dropout", 0.0),
        **meta["model_args"],
    )
    prefix = "model."
    weights = {k.removeprefix(prefix): v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(weights)
    return model.eval()


def normalise(images: torch.Tensor, meta: dict) -> torch.Tensor:
    """uint8 (N, C, H, W) images as the float input of the model that `meta` describes."""
    mean, std = (torch.tensor(v, device=images.device).view(1, -1, 1, 1) for v in (meta["mean"], meta["std"]))
    return (images.float() / 255 - mean) / std
