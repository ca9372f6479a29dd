"""Checkpoints: written atomically, read with `weights_only=True`, checked to be vislab's own, and the one
typed record of what a model needs besides its weights (`ModelMeta`)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from vislab.config import INFERENCE_PRECISIONS
from vislab.data.segmentation import STRIDE
from vislab.errors import VislabError
from vislab.files import replacing
from vislab.models import create_model, require_model_code
from vislab.precision import ALIASES
from vislab.preprocess import Preprocess
from vislab.runs import run_dir_of


@dataclass
class ModelMeta:
    """Everything a checkpoint or an exported model carries besides weights: how to rebuild the network,
    how to preprocess its input, and how to read its output."""

    task: str
    classes: list[str]
    channels: int
    image_size: int  # classification: the square input side; segmentation: the shorter side
    mean: list[float]
    std: list[float]
    model: str
    model_args: dict = field(default_factory=dict)
    head_hidden: int = 0
    head_dropout: float = 0.0
    palette: list[list[int]] | None = None  # segmentation: a colour per class
    ignore_index: int | None = None  # segmentation: the mask value that is not a class
    config: dict = field(default_factory=dict)  # the run's resolved config

    PREPROCESSING = (
        "task",
        "classes",
        "channels",
        "image_size",
        "mean",
        "std",
        "model",
        "palette",
        "ignore_index",
    )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def precision(self) -> str:
        """The precision the run trained in, which evaluation and prediction use (`vislab.precision`)."""
        precision = str(self.config.get("trainer", {}).get("precision", "32-true"))
        return ALIASES.get(precision, precision)

    def in_precision(self, precision: str) -> ModelMeta:
        """The same model evaluated and predicted in another precision: 32-true, bf16-mixed or 16-mixed."""
        if precision not in INFERENCE_PRECISIONS:
            *others, last = INFERENCE_PRECISIONS
            raise VislabError(
                f"precision {precision}: evaluation and prediction run in {', '.join(others)} or {last}"
            )
        trainer = self.config.get("trainer", {}) | {"precision": precision}
        return dataclasses.replace(self, config=self.config | {"trainer": trainer})

    @property
    def preprocess(self) -> Preprocess:
        """How an image becomes this model's input, in training's validation and everywhere after it."""
        dense = self.task == "segmentation"
        return Preprocess(
            self.channels,
            self.image_size,
            tuple(self.mean),
            tuple(self.std),
            crop=not dense,
            stride=STRIDE if dense else 1,
        )

    def preprocessing(self) -> dict:
        """What an exported model needs to be used without vislab's model code; `preprocess` spells the
        input's preparation out for other programs, and the flip setting tells TTA whether mirrored views
        suit the model (`TestTimeAugment.for_model`)."""
        flips = {"augment": {"hflip": self.config.get("augment", {}).get("hflip")}}
        return {
            **{key: getattr(self, key) for key in self.PREPROCESSING},
            "preprocess": self.preprocess.to_dict(),
            "config": flips,
        }

    @classmethod
    def from_dict(cls, values: Any, source: Path | str) -> ModelMeta:
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in values.items() if k in known})
        except (TypeError, AttributeError):
            raise VislabError(f"{source} has malformed vislab metadata") from None


@dataclass
class Checkpoint:
    path: Path
    meta: ModelMeta
    state_dict: dict[str, torch.Tensor]

    @property
    def run_dir(self) -> Path:
        return run_dir_of(self.path)

    def model(self) -> nn.Module:
        """The network rebuilt from the metadata, with the checkpoint's weights, in evaluation mode and in
        the memory layout it trained in (channels-last convolutions run 1.7 times faster on a CPU)."""
        meta = self.meta
        require_model_code(meta.model, self.run_dir)  # a user's code is never imported from a checkpoint
        model = create_model(
            meta.model,
            len(meta.classes),
            meta.channels,
            meta.image_size,
            head_hidden=meta.head_hidden,
            head_dropout=meta.head_dropout,
            **meta.model_args,
        )
        prefix = "model."
        weights = {k.removeprefix(prefix): v for k, v in self.state_dict.items() if k.startswith(prefix)}
        try:
            model.load_state_dict(weights)
        except RuntimeError:
            raise VislabError(f"{self.path}: its weights do not fit the {meta.model} it describes") from None
        if meta.config.get("trainer", {}).get("channels_last"):
            model = model.to(memory_format=torch.channels_last)
        return model.eval()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves to a temporary file beside the target, flushed to disk, and renames it into place, so a run
    killed while saving leaves the previous checkpoint intact instead of half a file. The checkpoint is
    serialised in memory first: a full disk then fails as an OSError that says so, not as torch's
    "unexpected pos" from deep inside its zip writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        try:
            with replacing(path) as temporary, open(temporary, "wb") as file:
                file.write(buffer.getbuffer())
                file.flush()
                os.fsync(file.fileno())
        except OSError as error:
            raise OSError(error.errno, error.strerror, str(path)) from None

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


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Loads a checkpoint without running any code from it (`weights_only=True`) and checks it is ours."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError):
        raise VislabError(
            f"{path} is not a vislab checkpoint (not readable as a weights-only PyTorch file)"
        ) from None
    if not isinstance(checkpoint, dict) or "vislab" not in checkpoint or "state_dict" not in checkpoint:
        raise VislabError(f"{path} is not a vislab checkpoint (no vislab metadata)")
    return checkpoint


def load_checkpoint(run_or_checkpoint: str | Path, prefer: str = "best") -> Checkpoint:
    """A run's (or a file's) checkpoint with its typed metadata, read once; `.safetensors` exports too."""
    path = find_checkpoint(run_or_checkpoint, prefer)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    raw = read_checkpoint(path)
    return Checkpoint(path, ModelMeta.from_dict(raw["vislab"], path), raw["state_dict"])


def save_safetensors(model: nn.Module, meta: ModelMeta, path: Path) -> None:
    """The model's weights and its metadata (as JSON text) in safetensors, a format that holds tensors and
    strings only, so that loading it cannot run code, whoever made the file."""
    tensors = {name: tensor.detach().clone().contiguous() for name, tensor in model.state_dict().items()}
    safetensors.torch.save_file(tensors, str(path), metadata={"vislab": json.dumps(meta.to_dict())})


def load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A safetensors file's tensors and metadata, or an error naming the file."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as file:
            return {name: file.get_tensor(name) for name in file.keys()}, file.metadata() or {}
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else "unreadable"
        raise VislabError(f"{path} is not a readable safetensors file ({reason})") from None


def read_safetensors(path: Path) -> Checkpoint:
    tensors, metadata = load_safetensors(path)
    if "vislab" not in metadata:
        raise VislabError(
            f"{path} has no vislab metadata: write it with `vislab export --format safetensors`"
        )
    try:
        values = json.loads(metadata["vislab"])
    except json.JSONDecodeError:
        raise VislabError(f"{path} has malformed vislab metadata") from None
    state = {f"model.{name}": tensor for name, tensor in tensors.items()}  # as in a Lightning checkpoint
    return Checkpoint(path, ModelMeta.from_dict(values, path), state)
