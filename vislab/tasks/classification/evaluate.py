"""`vislab eval`: a checkpoint's loss, top-1/top-5, per-class and macro metrics and confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

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

from vislab.checkpoint import Checkpoint, ModelMeta
from vislab.config import Config
from vislab.data import load_dataset
from vislab.data.module import ImageDataModule
from vislab.data.splits import Split, Splits
from vislab.errors import VislabError
from vislab.precision import inference
from vislab.tasks.base import eval_config, with_tta
from vislab.tta import TestTimeAugment


def classification_metrics(num_classes: int) -> MetricCollection:
    """Scores computed by one process over the whole split: never gathered across processes, so that rank 0
    scoring the test split after a DDP run (`test=true`) does not wait for ranks that are not scoring."""
    local = {"sync_on_compute": False}
    return MetricCollection(
        {
            "top1": MulticlassAccuracy(num_classes, average="micro", **local),
            "top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro", **local),
            "per_class_accuracy": MulticlassAccuracy(num_classes, average="none", **local),
            "macro_precision": MulticlassPrecision(num_classes, average="macro", **local),
            "macro_recall": MulticlassRecall(num_classes, average="macro", **local),
            "macro_f1": MulticlassF1Score(num_classes, average="macro", **local),
            "confusion": MulticlassConfusionMatrix(num_classes, **local),
        }
    )


@dataclass
class EvalData:
    """A checkpoint with the dataset split it is evaluated on."""

    checkpoint: Checkpoint
    config: Config
    splits: Splits
    split_name: str
    split: Split

    @property
    def meta(self) -> ModelMeta:
        return self.checkpoint.meta

    def images(self, indices: list[int]) -> torch.Tensor:
        """uint8 images of the split at the model's input size, exactly as evaluation sees them."""
        return images_of(self.split, self.meta, indices)

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        return self.meta.preprocess.normalise(images)


def images_of(split: Split, meta: ModelMeta, indices: list[int]) -> torch.Tensor:
    """uint8 images of a split at the model's input size, exactly as evaluation sees them."""
    if split.in_memory:
        return split.images[indices]
    return torch.stack([meta.preprocess.read(split.files[i]) for i in indices])


def load_eval_data(
    checkpoint: Checkpoint, split: str = "val", overrides: list[str] | None = None
) -> EvalData:
    """The checkpoint's run's dataset split (or, via overrides, another dataset with its classes)."""
    meta = checkpoint.meta
    config = eval_config(meta, overrides)
    splits = load_dataset(config, meta.image_size)
    if len(splits.classes) != len(meta.classes):
        raise VislabError(
            f"{checkpoint.path} predicts {len(meta.classes)} classes "
            f"but {config.data} has {len(splits.classes)}"
        )
    if splits.classes != meta.classes:
        raise VislabError(
            f"{config.data} has classes {splits.classes[:5]}... but {checkpoint.path} was trained on "
            f"{meta.classes[:5]}..."
        )
    data = splits.split(split)
    if data is None:
        raise VislabError(f"{config.data} has no {split} split")
    return EvalData(checkpoint, config, splits, split, data)


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
            lambda m, args, out: captured.append(args[0].flatten(1).float().cpu())
        )
    logits, labels = [], []
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    try:
        with inference(config.trainer.precision, device):
            for images, batch_labels in module.loader(data.split, train=False):
                logits.append(model(data.model_input(images.to(device))).float().cpu())
                labels.append(batch_labels)
    finally:
        if hook is not None:
            hook.remove()
    return Outputs(torch.cat(logits), torch.cat(labels), torch.cat(captured) if with_features else None)


def scores(checkpoint: Checkpoint, data: EvalData, outputs: Outputs) -> dict:
    """The metrics of a model's outputs on the split, as eval_<split>.json holds them."""
    classes = checkpoint.meta.classes
    metrics = classification_metrics(len(classes))
    metrics.update(outputs.logits, outputs.labels)
    values = metrics.compute()
    confusion = values.pop("confusion").tolist()
    per_class = values.pop("per_class_accuracy").tolist()
    return {
        "checkpoint": str(checkpoint.path),
        "data": data.config.data,
        "split": data.split_name,
        "images": len(outputs.labels),
        "loss": round(F.cross_entropy(outputs.logits, outputs.labels).item(), 6),
        **{k: round(float(v), 6) for k, v in values.items()},
        "per_class_accuracy": {name: round(v, 6) for name, v in zip(classes, per_class)},
        "classes": classes,
        "confusion_matrix": confusion,
    }


def evaluate(
    checkpoint: Checkpoint, split: str = "val", overrides: list[str] | None = None, tta: bool = False
) -> dict:
    """A checkpoint's scores on a split, as eval_<split>.json holds them (written by the caller, if at
    all); with `tta`, the scores are those with test-time augmentation, the gain over none beside them."""
    data = load_eval_data(checkpoint, split, overrides)
    model = checkpoint.model()
    if not tta:
        return scores(checkpoint, data, collect_outputs(model, data))
    both = collect_outputs(TestTimeAugment.for_model(model, checkpoint.meta, keep_plain=True), data)
    plain, augmented = (Outputs(both.logits[:, i], both.labels, None) for i in (0, 1))
    return with_tta(scores(checkpoint, data, augmented), scores(checkpoint, data, plain), "top1")


def describe_eval(result: dict) -> str:
    # Top-5 of five classes or fewer is 1.0 whatever the model: left out.
    top5 = f"top-5 {result['top5']:.4f}  " if len(result["classes"]) > 5 else ""
    return (
        f"{result['split']}: loss {result['loss']:.4f}  top-1 {result['top1']:.4f}  {top5}"
        f"macro F1 {result['macro_f1']:.4f}  ({result['images']} images)"
    )


def export_inputs(checkpoint: Checkpoint, count: int) -> torch.Tensor:
    """The first `count` validation images as model input: what an export is checked on."""
    data = load_eval_data(checkpoint)
    return data.model_input(data.images(list(range(min(count, len(data.split))))))
