"""Image classification as a LightningModule: batched augmentation on the device, cross-entropy
with label smoothing and soft MixUp/CutMix targets, top-1/top-5 from torchmetrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from vislab.checkpoint import ModelMeta
from vislab.config import Config
from vislab.data import load_dataset, stats_sample, with_augment_defaults, with_normalisation
from vislab.data.augment import BatchAugment
from vislab.data.module import ImageDataModule
from vislab.data.splits import Splits
from vislab.memory import check_training_fits, warn_about_batch
from vislab.models import model_input_size, needs_exact_input_size
from vislab.models.timm_models import timm_data_config
from vislab.preprocess import Preprocess
from vislab.tasks.base import Prepared, TaskModule, build_model


class ClassificationModule(TaskModule):
    def __init__(
        self,
        model: nn.Module,
        config: Config,
        batch_augment: BatchAugment,
        meta: ModelMeta,
        class_weight: torch.Tensor | None = None,
    ):
        super().__init__(model, config, meta)
        self.batch_augment, self.class_weight = batch_augment, class_weight
        num_classes = len(meta.classes)
        # Unchecked inputs: the checks read the device on every training step.
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_top1 = MulticlassAccuracy(num_classes, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")

    def forward(self, images):
        return self.model(images)

    def training_step(self, batch, batch_idx: int):
        self.seed_batch(batch_idx)
        images, labels = batch
        inputs, targets = self.batch_augment(images, labels)
        logits = self.model(self.model_inputs(inputs))
        if self.class_weight is not None and self.class_weight.device != logits.device:
            self.class_weight = self.class_weight.to(logits.device)  # once, not a copy every step
        loss = F.cross_entropy(
            logits, targets, weight=self.class_weight, label_smoothing=self.config.label_smoothing
        )
        # With MixUp/CutMix the targets are soft; accuracy is against the dominant label of each mix.
        hard = targets.argmax(1) if targets.ndim == 2 else targets
        self.train_acc(logits, hard)
        self.log_train_loss(loss, len(images))
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        logits = self.model(self.model_inputs(self.preprocess.normalise(images)))
        self.val_top1(logits, labels)
        self.val_top5(logits, labels)
        self.val_loss.update(F.cross_entropy(logits, labels), weight=len(labels))
        self.log("val_loss", self.val_loss, on_epoch=True, prog_bar=True)
        self.log("val_top1", self.val_top1, on_epoch=True, prog_bar=True)
        self.log("val_top5", self.val_top5, on_epoch=True)


def loss_weights(labels: torch.Tensor, num_classes: int, kind: str) -> torch.Tensor | None:
    """Class weights for the loss from the train split's counts, scaled to average 1: inverse frequency
    (auto), or the inverse effective number of samples (1 - beta^n) / (1 - beta), beta = 0.999 (Cui et
    al., "Class-Balanced Loss Based on Effective Number of Samples", 2019)."""
    if kind == "none":
        return None
    counts = torch.bincount(labels, minlength=num_classes).clamp(min=1).double()
    beta = 0.999
    weights = 1.0 / counts if kind == "auto" else (1 - beta) / (1 - beta**counts)
    return (weights * num_classes / weights.sum()).float()


def input_size(config: Config) -> int | None:
    """The size images are loaded at: the config's, else what a timm model needs, else the data's own."""
    if config.image_size is None and needs_exact_input_size(config.model):
        return model_input_size(config.model)
    return config.image_size


def resolve_defaults(config: Config, splits: Splits) -> Config:
    """Fills what the config left to the data: augmentation defaults, normalisation (pretrained weights'
    own, else computed on the train split), image size. The result is what the run folder records."""
    config = with_augment_defaults(config).model_copy(update={"image_size": splits.image_size})
    from_weights = (config.pretrained or config.weights) and needs_exact_input_size(config.model)
    if (config.mean is None or config.std is None) and from_weights:  # what the weights were trained on
        _, mean, std = timm_data_config(config.model.removeprefix("timm:"), config.pretrained)
        if splits.channels == 1:  # timm folds RGB first-layer weights into one channel; so do the statistics
            mean, std = [sum(mean) / 3], [sum(std) / 3]
        config = config.model_copy(update={"mean": mean, "std": std})
    needs_stats = config.mean is None or config.std is None
    return with_normalisation(config, stats_sample(splits) if needs_stats else None, splits.channels)


def init_from_data(model: nn.Module, splits: Splits, preprocess: Preprocess, most: int = 5000) -> None:
    """Layers initialised from the training images (airbench's whitening) get up to `most` of them,
    normalised. A resumed run computes the same, then loads its checkpoint's weights over it."""
    layers = [layer for layer in model.modules() if hasattr(layer, "init_from_data")]
    if layers:
        images = preprocess.normalise(stats_sample(splits)[:most])
        for layer in layers:
            layer.init_from_data(images)


def prepare_classification(config: Config) -> Prepared:
    """The dataset, the model with its on-device augmentation, and the metadata its checkpoints carry."""
    splits = load_dataset(config, input_size(config))
    num_classes = len(splits.classes)
    check_training_fits(config, num_classes, splits.channels, splits.image_size, len(splits.train))
    config = resolve_defaults(config, splits)
    model, config = build_model(config, num_classes, splits.channels, splits.image_size)
    finetune = config.finetune
    meta = ModelMeta(
        "classification",
        splits.classes,
        splits.channels,
        splits.image_size,
        config.mean,
        config.std,
        config.model,
        config.model_args,
        finetune.head_hidden,
        finetune.head_dropout,
        config=config.model_dump(mode="json"),
    )
    init_from_data(model, splits, meta.preprocess)
    augment = BatchAugment(config.augment, config.mean, config.std, num_classes)
    balanced = config.sampler == "balanced"
    datamodule = ImageDataModule(
        splits, config.batch_size, config.num_workers, config.seed, config.augment, balanced
    )
    weights = loss_weights(splits.train.labels, num_classes, config.class_weights)
    info = {
        "train_size": len(splits.train),
        "val_size": len(splits.val),
        "num_classes": num_classes,
        "classes": splits.classes,
        "sampler": config.sampler,
        "class_weights": None if weights is None else [round(w, 4) for w in weights.tolist()],
    }
    module = ClassificationModule(model, config, augment, meta, weights)
    warn_about_batch(config.batch_size, len(splits.train))
    return Prepared(config, module, datamodule, info, splits.skipped)
