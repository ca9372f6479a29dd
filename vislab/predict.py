"""`vislab predict`: top-k classes for images, from a checkpoint or an exported ONNX file alone (classes,
normalisation and input size travel inside both)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import torch

from vislab.checkpoint import find_checkpoint, model_from_checkpoint, normalise, read_checkpoint
from vislab.data.images import is_image_file, read_image
from vislab.errors import VislabError
from vislab.export import onnx_runner

OUTPUT_FORMATS = (".csv", ".json")


def image_files(target: Path) -> list[Path]:
    if not target.exists():
        raise VislabError(f"no such image or folder: {target}")
    if target.is_file():
        return [target]
    files = sorted(p for p in target.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise VislabError(f"no images in {target}")
    return files


def load_classifier(source: str | Path) -> tuple[dict, Callable[[torch.Tensor], torch.Tensor]]:
    """The preprocessing metadata and the logits function of a run, a checkpoint or an exported ONNX file."""
    path = Path(source)
    if path.suffix == ".onnx" and path.is_file():
        meta, run = onnx_runner(path)
        return meta, lambda inputs: torch.from_numpy(run(inputs))
    checkpoint = read_checkpoint(find_checkpoint(path), task="classification")
    return checkpoint["vislab"], model_from_checkpoint(checkpoint)


def predict(source: str | Path, target: str | Path, topk: int = 5, batch_size: int = 64) -> list[dict]:
    """One row per image: the file and its top-k classes with probabilities."""
    meta, classify = load_classifier(source)
    classes = meta["classes"]
    k = max(1, min(topk, len(classes)))
    files = image_files(Path(target))
    rows = []
    with torch.inference_mode():
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            images = torch.stack([read_image(f, meta["channels"], meta["image_size"]) for f in chunk])
            top = classify(normalise(images, meta)).softmax(1).topk(k, dim=1)
            for file, p, i in zip(chunk, top.values.tolist(), top.indices.tolist()):
                rows.append(
                    {"file": str(file), "top": [{"class": classes[c], "prob": q} for c, q in zip(i, p)]}
                )
    return rows


def write_predictions(rows: list[dict], out: Path) -> None:
    if out.suffix not in OUTPUT_FORMATS:
        raise VislabError(f"--out must end in {' or '.join(OUTPUT_FORMATS)}, not '{out.suffix or out.name}'")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".json":
        out.write_text(json.dumps(rows, indent=2) + "\n")
        return
    k = len(rows[0]["top"])
    with open(out, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["file", *(f"{kind}{n}" for n in range(1, k + 1) for kind in ("class", "prob"))])
        for row in rows:
            writer.writerow(
                [row["file"], *(v for t in row["top"] for v in (t["class"], round(t["prob"], 6)))]
            )
