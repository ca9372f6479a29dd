"""Semantic segmentation as a LightningModule: per-pixel losses that skip the ignore index, and mIoU,
per-class IoU, pixel accuracy and mean class accuracy from torchmetrics on full-size validation images."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from vislab.checkpoint import normalise
from vislab.config import Config
from vislab.data import data_dir_of
from vislab.data.images import read_image
from vislab.data.seg_module import SegmentationDataModule
from vislab.data.segmentation import colour_mask, load_segmentation, read_mask
from vislab.data.splits import channel_stats
from vislab.errors import VislabError
from vislab.models import create_model, model_task
from vislab.optim import optimizers_for
from vislab.tasks.classification import batch_seed
from vislab.tasks.losses import class_weights, segmentation_loss
from vislab.tasks.prepared import Prepared

STRIDE = 32  # every model's total downsampling divides this: inputs are padded to a multiple of it


def segmentation_metrics(num_classes: int, ignore_index: int) -> MetricCollection:
    kwargs = {"num_classes": num_classes, "ignore_index": ignore_index}
    return MetricCollection(
        {
            "miou": MulticlassJaccardIndex(average="macro", **kwargs),
            "pixel_acc": MulticlassAccuracy(average="micro", **kwargs),
            "mean_acc": MulticlassAccuracy(average="macro", **kwargs),
        }
    )


def padded_logits(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Logits for whole images of any size: padded to the stride, predicted, cropped back."""
    height, width = inputs.shape[-2:]
    pad_h, pad_w = -height % STRIDE, -width % STRIDE
    logits = model(F.pad(inputs, (0, pad_w, 0, pad_h)))
    return logits[..., :height, :width]


class SegmentationTask(L.LightningModule):
    def __init__(self, model: nn.Module, config: Config, meta: dict, weights: torch.Tensor | None = None):
        super().__init__()
        self.model, self.config, self.meta = model, config, meta
        self.register_buffer("loss_weights", weights, persistent=False)
        self.val_metrics = segmentation_metrics(len(meta["classes"]), config.segmentation.ignore_index)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return padded_logits(self.model, normalise(images, self.meta))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        torch.manual_seed(batch_seed(self.config.seed, self.global_rank, self.current_epoch, batch_idx))
        images, masks = batch
        logits = self.model(normalise(images, self.meta))
        loss = segmentation_loss(logits, masks, self.config.segmentation, self.loss_weights)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, masks = batch
        logits = self(images)
        if batch_idx == 0:  # a few predictions for TensorBoard
            self.examples = (images[:4].cpu(), masks[:4].cpu(), logits[:4].argmax(1).cpu())
        loss = segmentation_loss(logits, masks, self.config.segmentation, self.loss_weights)
        self.val_metrics.update(logits, masks)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log_dict({f"val_{k}": v for k, v in values.items()}, prog_bar=True, sync_dist=True)
        self.val_metrics.reset()
        if isinstance(self.logger, TensorBoardLogger) and not self.trainer.sanity_checking:
            self.logger.experiment.add_image(
                "val/image_truth_prediction", self.example_grid(), self.current_epoch
            )

    def example_grid(self) -> torch.Tensor:
        """Rows of image | ground truth | prediction, coloured with the dataset's palette, as (3, H, W)."""
        images, masks, predicted = self.examples
        palette, ignore = self.meta["palette"], self.config.segmentation.ignore_index
        rows = []
        for image, mask, guess in zip(images, masks, predicted):
            truth = colour_mask(mask.clamp(0, 255).to(torch.uint8).numpy(), palette, ignore)
            guess = colour_mask(guess.to(torch.uint8).numpy(), palette)
            rows.append(np.concatenate([image.permute(1, 2, 0).numpy(), truth, guess], axis=1))
        return torch.from_numpy(np.concatenate(rows, axis=0)).permute(2, 0, 1)

    def configure_optimizers(self):
        return optimizers_for(self, self.model.parameters())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vislab"] = self.meta


class FreezeEncoderAfter(L.Callback):
    """The seeds' two-stage training: after `steps` optimizer steps the encoder (weights and BatchNorm
    statistics) is frozen and only the decoder keeps learning. Depends on the step count alone."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step < self.steps:
            return
        encoder = pl_module.model.encoder
        BaseFinetuning.freeze(encoder, train_bn=False)
        for module in encoder.modules():  # keep normalising with the running statistics, as at evaluation
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def prepare_segmentation(config: Config) -> Prepared:
    """The image/mask pairs, the model and the metadata a segmentation checkpoint carries."""
    seg = config.segmentation
    splits = load_segmentation(config.data, data_dir_of(config), seg.ignore_index, seg.sbd)
    if model_task(config.model) != "segmentation":
        raise VislabError(f"{config.model} is not a segmentation model (see 'vislab models')")
    with Image.open(splits.train.images[0]) as first:
        size = config.image_size or min(first.size)
    sample = [read_image(p, 3, size) for p in splits.train.images[:: max(1, len(splits.train) // 64)]]
    mean, std = (
        (config.mean, config.std) if config.mean and config.std else channel_stats(torch.stack(sample))
    )
    config = config.model_copy(update={"image_size": size, "mean": mean, "std": std})
    num_classes = len(splits.classes)
    model = create_model(config.model, num_classes, 3, size, weights=config.weights, **config.model_args)
    weights = None
    if seg.class_weights:
        weights = class_weights(
            [torch.from_numpy(read_mask(m)) for m in splits.train.masks], num_classes, seg.ignore_index
        )
    meta = {
        "task": "segmentation",
        "classes": splits.classes,
        "palette": splits.palette,
        "ignore_index": seg.ignore_index,
        "channels": 3,
        "image_size": size,
        "mean": mean,
        "std": std,
        "model": config.model,
        "model_args": config.model_args,
        "config": config.model_dump(mode="json"),
    }
    info = {
        "train_size": len(splits.train),
        "val_size": len(splits.val),
        "num_classes": num_classes,
        "classes": splits.classes,
    }
    module = SegmentationTask(model, config, meta, weights)
    return Prepared(config, module, SegmentationDataModule(splits, config), info)
