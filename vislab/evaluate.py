"""`vislab eval`: a checkpoint's loss, top-1/top-5, per-class and macro metrics and confusion matrix."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from vislab.checkpoint import find_checkpoint, model_from_checkpoint, read_checkpoint
from vislab.config import build_config, merge, parse_overrides
from vislab.data import load_splits
from vislab.data.module import ImageDataModule
from vislab.errors import VislabError
from vislab.runs import write_json


def run_dir_of(checkpoint_path: Path) -> Path:
    """Where results go: the run folder for a run's checkpoint, else the checkpoint's own folder."""
    parent = checkpoint_path.parent
    return parent.parent if parent.name == "checkpoints" else parent


def classification_metrics(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "top1": MulticlassAccuracy(num_classes, average="micro"),
            "top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
            "per_class_accuracy": MulticlassAccuracy(num_classes, average="none"),
            "macro_precision": MulticlassPrecision(num_classes, average="macro"),
            "macro_recall": MulticlassRecall(num_classes, average="macro"),
            "macro_f1": MulticlassF1Score(num_classes, average="macro"),
            "confusion": MulticlassConfusionMatrix(num_classes),
        }
    )


def evaluate(run_or_checkpoint: str | Path, split: str = "val", overrides: list[str] | None = None) -> dict:
    """Evaluates on the run's own dataset split (or another dataset with the same classes, via overrides)
    and writes eval_<split>.json and confusion_<split>.csv beside the checkpoint's run."""
    path = find_checkpoint(run_or_checkpoint)
    checkpoint = read_checkpoint(path, task="classification")
    meta = checkpoint["vislab"]
    config = build_config(merge(meta["config"], parse_overrides(overrides or [])))
    splits = load_splits(config.model_copy(update={"image_size": meta["image_size"]}))
    classes = meta["classes"]
    if len(splits.classes) != len(classes):
        raise VislabError(
            f"{path} predicts {len(classes)} classes but {config.data} has {len(splits.classes)}"
        )
    if splits.classes != classes:
        raise VislabError(
            f"{config.data} has classes {splits.classes[:5]}... but {path} was trained on {classes[:5]}..."
        )
    data = splits.split(split)
    if data is None:
        raise VislabError(f"{config.data} has no {split} split")

    model = model_from_checkpoint(checkpoint)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (meta["mean"], meta["std"]))
    loader = ImageDataModule(
        splits, config.batch_size, config.num_workers, config.seed, config.augment
    ).loader(data, train=False)
    metrics = classification_metrics(len(classes))
    loss_sum = 0.0
    with torch.inference_mode():
        for images, labels in loader:
            logits = model((images.float() / 255 - mean) / std)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            metrics.update(logits, labels)
    values = metrics.compute()
    confusion = values.pop("confusion").tolist()
    per_class = values.pop("per_class_accuracy").tolist()
    result = {
        "checkpoint": str(path),
        "data": config.data,
        "split": split,
        "images": len(data),
        "loss": round(loss_sum / len(data), 6),
        **{k: round(float(v), 6) for k, v in values.items()},
        "per_class_accuracy": {name: round(v, 6) for name, v in zip(classes, per_class)},
        "classes": classes,
        "confusion_matrix": confusion,
    }
    out_dir = run_dir_of(path)
    write_json(out_dir / f"eval_{split}.json", result)
    with open(out_dir / f"confusion_{split}.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["true \\ predicted", *classes])
        writer.writerows([name, *row] for name, row in zip(classes, confusion))
    return result
