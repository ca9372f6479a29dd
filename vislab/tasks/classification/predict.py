"""`vislab predict` for classifiers: top-k classes for images, from a checkpoint or an exported ONNX file
alone (classes, normalisation and input size travel inside both)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from vislab.data.images import image_files
from vislab.errors import VislabError
from vislab.export import Predictor
from vislab.files import write_atomically

OUTPUT_FORMATS = (".csv", ".json")


def class_probabilities(predictor: Predictor, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities for a batch of uint8 images read by the model's `Preprocess`."""
    with torch.inference_mode():
        return predictor(predictor.meta.preprocess.normalise(images)).float().softmax(1)


def predict(predictor: Predictor, target: str | Path, topk: int = 5, batch_size: int = 64) -> list[dict]:
    """One row per image: the file and its top-k classes with probabilities."""
    meta = predictor.meta
    k = max(1, min(topk, len(meta.classes)))
    files = image_files(Path(target))
    rows = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = torch.stack([meta.preprocess.read(f) for f in chunk])
        top = class_probabilities(predictor, images).topk(k, dim=1)
        for file, p, i in zip(chunk, top.values.tolist(), top.indices.tolist()):
            rows.append(
                {"file": str(file), "top": [{"class": meta.classes[c], "prob": q} for c, q in zip(i, p)]}
            )
    return rows


def write_predictions(rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".json":
        write_atomically(out, json.dumps(rows, indent=2) + "\n")
        return
    k = len(rows[0]["top"])
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["file", *(f"{kind}{n}" for n in range(1, k + 1) for kind in ("class", "prob"))])
    for row in rows:
        writer.writerow([row["file"], *(v for t in row["top"] for v in (t["class"], round(t["prob"], 6)))])
    write_atomically(out, table.getvalue())


def predict_command(predictor: Predictor, target: Path, out: Path | None, topk: int) -> list[str]:
    """`vislab predict`: the lines it prints, with the rows also written to `out` (.csv or .json)."""
    if out is not None and out.suffix not in OUTPUT_FORMATS:
        raise VislabError(f"--out must end in {' or '.join(OUTPUT_FORMATS)}, not '{out.suffix or out.name}'")
    rows = predict(predictor, target, topk)
    if out is not None:
        write_predictions(rows, out)
    return [
        row["file"] + " " + "  ".join(f"{t['class']} {t['prob']:.3f}" for t in row["top"]) for row in rows
    ]
