"""`vislab export RUN --format onnx|torchscript`: the model with its preprocessing metadata, checked against
PyTorch on real images. `vislab predict` runs the exported ONNX file through onnxruntime."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vislab.checkpoint import find_checkpoint, model_from_checkpoint, normalise
from vislab.errors import VislabError, unknown_name
from vislab.evaluate import load_eval_data, run_dir_of

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
METADATA_KEY = "vislab"  # ONNX metadata_props key / TorchScript extra file holding the preprocessing
METADATA_FIELDS = ("task", "classes", "channels", "image_size", "mean", "std", "model")


def preprocessing(meta: dict) -> dict:
    return {key: meta[key] for key in METADATA_FIELDS}


def export_onnx(model: torch.nn.Module, example: torch.Tensor, meta: dict, path: Path) -> None:
    import onnx

    batch = torch.export.Dim("batch", min=1)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates its passes
        program = torch.onnx.export(
            model,
            (example,),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            dynamo=True,
        )
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(preprocessing(meta))
    onnx.save(proto, path)


def export_torchscript(model: torch.nn.Module, example: torch.Tensor, meta: dict, path: Path) -> None:
    traced = torch.jit.trace(model, example)
    torch.jit.save(traced, str(path), _extra_files={f"{METADATA_KEY}.json": json.dumps(preprocessing(meta))})


def onnx_runner(path: Path) -> tuple[dict, Callable[[torch.Tensor], np.ndarray]]:
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
    name = session.get_inputs()[0].name
    return json.loads(props[METADATA_KEY]), lambda inputs: session.run(None, {name: inputs.numpy()})[0]


def export(
    run_or_checkpoint: str | Path, fmt: str, out: Path | None = None, check_images: int = 64
) -> tuple[Path, float]:
    """Exports and returns the file and the largest absolute logit difference from PyTorch on real images."""
    if fmt not in FORMATS:
        raise unknown_name("export format", fmt, FORMATS)
    data = load_eval_data(run_or_checkpoint)
    model = model_from_checkpoint(data.checkpoint)
    path = out or run_dir_of(find_checkpoint(run_or_checkpoint)) / "export" / f"model{FORMATS[fmt]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    split = data.split.subset(range(min(check_images, len(data.split))))
    if split.in_memory:
        images = split.images
    else:
        from vislab.data.images import read_image

        images = torch.stack(
            [read_image(f, data.meta["channels"], data.meta["image_size"]) for f in split.files]
        )
    inputs = normalise(images, data.meta)
    with torch.no_grad():
        expected = model(inputs).numpy()
        if fmt == "onnx":
            export_onnx(model, inputs[:2], data.meta, path)
            exported = onnx_runner(path)[1](inputs)
        else:
            export_torchscript(model, inputs[:2], data.meta, path)
            exported = torch.jit.load(str(path))(inputs).numpy()
    return path, float(np.abs(exported - expected).max())
