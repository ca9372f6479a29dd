"""Exported models: ONNX and TorchScript files that carry their preprocessing metadata, checked against
PyTorch on real images, and `Predictor`, which runs a checkpoint or an exported ONNX file alike."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vislab.checkpoint import Checkpoint, ModelMeta, load_checkpoint, save_safetensors
from vislab.errors import VislabError, unknown_name
from vislab.files import replacing

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors"}
METADATA_KEY = "vislab"  # ONNX metadata_props key / TorchScript extra file holding the preprocessing


@dataclass
class Predictor:
    """A model as a function from normalised input to logits, with the metadata to prepare that input."""

    path: Path
    meta: ModelMeta
    run: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.run(inputs)


def load_predictor(source: str | Path) -> Predictor:
    """A run, a checkpoint or an exported ONNX file, ready to predict."""
    path = Path(source)
    if path.suffix == ".onnx" and path.is_file():
        meta, run = onnx_runner(path)
        return Predictor(path, meta, lambda inputs: torch.from_numpy(run(inputs)))
    checkpoint = load_checkpoint(path)
    return Predictor(checkpoint.path, checkpoint.meta, checkpoint.model())


def export_onnx(model: nn.Module, example: torch.Tensor, meta: ModelMeta, path: Path, any_size: bool) -> None:
    """The dynamo exporter with a dynamic batch size, and dynamic height and width (multiples of 32)
    for models that take any size."""
    import onnx

    dims = {0: torch.export.Dim("batch", min=1)}
    if any_size:  # the exporter works out which sizes the network takes (multiples of its stride)
        dims |= {2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates its passes
            program = torch.onnx.export(
                model,
                (example,),
                input_names=["images"],
                output_names=["logits"],
                dynamic_shapes=(dims,),
                dynamo=True,
            )
    except Exception as error:  # the exporter raises many types; the user needs the model named
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise VislabError(f"PyTorch's ONNX exporter cannot export {meta.model}: {first}") from None
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta.preprocessing())
    onnx.save(proto, path)


def export_torchscript(model: nn.Module, example: torch.Tensor, meta: ModelMeta, path: Path) -> None:
    traced = torch.jit.trace(model, example)
    torch.jit.save(traced, str(path), _extra_files={f"{METADATA_KEY}.json": json.dumps(meta.preprocessing())})


def onnx_runner(path: Path) -> tuple[ModelMeta, Callable[[torch.Tensor], np.ndarray]]:
    """The preprocessing metadata of an exported ONNX file and a function from model input to logits."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own untyped errors for files it cannot parse
        raise VislabError(
            f"{path} is not a readable ONNX model ({str(error).splitlines()[0][:100]})"
        ) from None
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise VislabError(f"{path} has no vislab metadata: export it with `vislab export`")
    try:
        values = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError:
        raise VislabError(f"{path} has malformed vislab metadata") from None
    name = session.get_inputs()[0].name
    return ModelMeta.from_dict(values, path), lambda inputs: session.run(None, {name: inputs.numpy()})[0]


def export_model(
    checkpoint: Checkpoint, inputs: torch.Tensor, fmt: str, out: Path | None = None, any_size: bool = False
) -> tuple[Path, float]:
    """Exports the checkpoint's model and returns the file and the largest absolute logit difference
    from PyTorch on `inputs` (real images, normalised). `any_size`: the model takes any height and width."""
    if fmt not in FORMATS:
        raise unknown_name("export format", fmt, FORMATS)
    model = checkpoint.model()
    path = out or checkpoint.run_dir / "export" / f"model{FORMATS[fmt]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Two example images, even from a split of one: traced on a batch of one, the exporter takes the
    # batch size for the constant 1 and refuses to keep it dynamic.
    example = torch.cat([inputs, inputs])[:2]
    with torch.no_grad(), replacing(path) as written:  # checked before it takes the place of the old
        expected = model(inputs).numpy()
        if fmt == "onnx":
            export_onnx(model, example, checkpoint.meta, written, any_size)
            exported = onnx_runner(written)[1](inputs)
        elif fmt == "safetensors":
            save_safetensors(model, checkpoint.meta, written)
            exported = load_checkpoint(written).model()(inputs).numpy()
        else:
            export_torchscript(model, example, checkpoint.meta, written)
            exported = torch.jit.load(str(written))(inputs).numpy()
    return path, float(np.abs(exported - expected).max())
