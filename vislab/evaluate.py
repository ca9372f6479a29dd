"""`vislab eval`: a checkpoint's loss, top-1/top-5, per-class and macro metrics and confusion matrix."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from vislab.checkpoint import find_checkpoint, model_from_checkpoint, normalise, read_checkpoint
from vislab.config import Config, build_config, merge, parse_overrides
from vislab.data import load_splits
from vislab.data.module import ImageDataModule
from vislab.data.splits import Split, Splits
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


@dataclass
class EvalData:
    """A checkpoint with the dataset split it is evaluated on."""

    path: Path
    checkpoint: dict
    config: Config
    splits: Splits
    split_name: str
    split: Split

    @property
    def meta(self) -> dict:
        return self.checkpoint["vislab"]


def load_eval_data(
    run_or_checkpoint: str | Path, split: str = "val", overrides: list[str] | None = None
) -> EvalData:
    """The checkpoint and its run's dataset split (or, via overrides, another dataset with its classes)."""
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
    return EvalData(path, checkpoint, config, splits, split, data)


@dataclass
class Outputs:
    logits: torch.Tensor  # (N, classes)
    labels: torch.Tensor  # (N,)
    features: torch.Tensor | None  # (N, D) penultimate-layer features, when asked for


def penultimate_layer(model: nn.Module) -> nn.Module:
    """The final classifier layer, whose input is the penultimate feature vector."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise VislabError("the model has no final linear layer to read features from")
    return linears[-1]


def collect_outputs(model: nn.Module, data: EvalData, with_features: bool = False) -> Outputs:
    """Runs the model over the split in evaluation mode."""
    config = data.config
    module = ImageDataModule(data.splits, config.batch_size, config.num_workers, config.seed, config.augment)
    captured: list[torch.Tensor] = []
    hook = None
    if with_features:
        hook = penultimate_layer(model).register_forward_hook(
            lambda m, args, out: captured.append(args[0].flatten(1))
        )
    logits, labels = [], []
    try:
        with torch.inference_mode():
            for images, batch_labels in module.loader(data.split, train=False):
                logits.append(model(normalise(images, data.meta)))
                labels.append(batch_labels)
    finally:
        if hook is not None:
            hook.remove()
    return Outputs(torch.cat(logits), torch.cat(labels), torch.cat(captured) if with_features else None)


def evaluate(run_or_checkpoint: str | Path, split: str = "val", overrides: list[str] | None = None) -> dict:
    """Evaluates a checkpoint and writes eval_<split>.json and confusion_<split>.csv into its run folder."""
    data = load_eval_data(run_or_checkpoint, split, overrides)
    outputs = collect_outputs(model_from_checkpoint(data.checkpoint), data)
    classes = data.meta["classes"]
    metrics = classification_metrics(len(classes))
    metrics.update(outputs.logits, outputs.labels)
    values = metrics.compute()
    confusion = values.pop("confusion").tolist()
    per_class = values.pop("per_class_accuracy").tolist()
    result = {
        "checkpoint": str(data.path),
        "data": data.config.data,
        "split": split,
        "images": len(outputs.labels),
        "loss": round(F.cross_entropy(outputs.logits, outputs.labels).item(), 6),
        **{k: round(float(v), 6) for k, v in values.items()},
        "per_class_accuracy": {name: round(v, 6) for name, v in zip(classes, per_class)},
        "classes": classes,
        "confusion_matrix": confusion,
    }
    write_eval(run_dir_of(data.path), split, result)
    return result


def write_eval(run_dir: Path, split: str, result: dict) -> None:
    """eval_<split>.json, and the confusion matrix as confusion_<split>.csv with class names."""
    write_json(run_dir / f"eval_{split}.json", result)
    with open(run_dir / f"confusion_{split}.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["true \\ predicted", *result["classes"]])
        writer.writerows([name, *row] for name, row in zip(result["classes"], result["confusion_matrix"]))
