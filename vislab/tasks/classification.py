"""Image classification as a LightningModule: batched augmentation on the device, cross-entropy
with label smoothing and soft MixUp/CutMix targets, top-1/top-5 from torchmetrics."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from vislab.config import Config
from vislab.data import load_splits, resolve_defaults
from vislab.data.augment import BatchAugment
from vislab.data.module import ImageDataModule
from vislab.errors import VislabError
from vislab.models import create_model, model_task
from vislab.optim import optimizers_for
from vislab.tasks.prepared import Prepared


def batch_seed(seed: int, rank: int, epoch: int, batch_idx: int) -> int:
    """Every training batch's randomness (augmentation, MixUp, dropout) derives from where it stands in
    the run alone, so a resumed run draws exactly the numbers the uninterrupted run drew."""
    return hash((seed, rank, epoch, batch_idx)) & 0x7FFF_FFFF_FFFF


class ClassificationTask(L.LightningModule):
    def __init__(self, model: nn.Module, config: Config, batch_augment: BatchAugment, meta: dict):
        super().__init__()
        self.model = model
        self.config = config
        self.batch_augment = batch_augment
        self.meta = meta  # what predict needs without the dataset: classes, normalisation, input size
        num_classes = len(meta["classes"])
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_top1 = MulticlassAccuracy(num_classes, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def model_inputs(self, images: torch.Tensor) -> torch.Tensor:
        if self.config.trainer.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        torch.manual_seed(batch_seed(self.config.seed, self.global_rank, self.current_epoch, batch_idx))
        images, labels = batch
        inputs, targets = self.batch_augment(images, labels)
        logits = self.model(self.model_inputs(inputs))
        loss = F.cross_entropy(logits, targets, label_smoothing=self.config.label_smoothing)
        # With MixUp/CutMix the targets are soft; accuracy is against the dominant label of each mix.
        hard = targets.argmax(1) if targets.ndim == 2 else targets
        self.train_acc(logits, hard)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        logits = self.model(self.model_inputs(self.batch_augment.normalize(images)))
        self.val_top1(logits, labels)
        self.val_top5(logits, labels)
        self.log("val_loss", F.cross_entropy(logits, labels), on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("val_top1", self.val_top1, on_epoch=True, prog_bar=True)
        self.log("val_top5", self.val_top5, on_epoch=True)

    def parameter_groups(self) -> list[dict]:
        """Backbone and head as two groups when fine-tuning with discriminative learning rates."""
        finetune, lr = self.config.finetune, self.config.optim.lr
        scale = finetune.backbone_lr_scale
        if scale is None:
            scale = 0.1 if finetune.mode == "two_stage" else 1.0
        if scale == 1.0 or not hasattr(self.model, "features"):
            return [{"params": list(self.model.parameters()), "lr": lr}]
        backbone = set(self.model.features.parameters())
        head = [p for p in self.model.parameters() if p not in backbone]
        return [
            {"params": list(self.model.features.parameters()), "lr": lr * scale},
            {"params": head, "lr": lr},
        ]

    def configure_optimizers(self):
        return optimizers_for(self, self.parameter_groups())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vislab"] = self.meta


def prepare_classification(config: Config) -> Prepared:
    """The dataset, the model with its on-device augmentation, and the metadata its checkpoints carry."""
    splits = load_splits(config)
    config = resolve_defaults(config, splits)
    if model_task(config.model) != "classification":
        raise VislabError(
            f"{config.model} is a {model_task(config.model)} model: set task={model_task(config.model)}"
        )
    num_classes, finetune = len(splits.classes), config.finetune
    model = create_model(
        config.model,
        num_classes,
        splits.channels,
        splits.image_size,
        config.pretrained,
        config.weights,
        finetune.head_hidden,
        finetune.head_dropout,
        **config.model_args,
    )
    if config.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.trainer.compile:
        model.compile()  # in place, so checkpoints keep the plain parameter names
    meta = {
        "task": config.task,
        "classes": splits.classes,
        "channels": splits.channels,
        "image_size": splits.image_size,
        "mean": config.mean,
        "std": config.std,
        "model": config.model,
        "model_args": config.model_args,
        "head_hidden": finetune.head_hidden,
        "head_dropout": finetune.head_dropout,
        "config": config.model_dump(mode="json"),
    }
    in_workers = not splits.train.in_memory
    augment = BatchAugment(
        config.augment, config.mean, config.std, num_classes, per_image_in_workers=in_workers
    )
    datamodule = ImageDataModule(splits, config.batch_size, config.num_workers, config.seed, config.augment)
    info = {
        "train_size": len(splits.train),
        "val_size": len(splits.val),
        "num_classes": num_classes,
        "classes": splits.classes,
    }
    return Prepared(
        config, ClassificationTask(model, config, augment, meta), datamodule, info, splits.skipped
    )
