"""Semantic segmentation as a LightningModule: per-pixel losses that skip the ignore index, joint image/mask
augmentation on the device, and mIoU, pixel accuracy and mean class accuracy from torchmetrics on whole
validation images."""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from vislab.checkpoint import ModelMeta
from vislab.config import Config
from vislab.data import load_dataset, with_augment_defaults, with_normalisation
from vislab.data.images import read_image, resize_mask
from vislab.data.seg_augment import SegmentationAugment
from vislab.data.seg_module import SegmentationDataModule
from vislab.data.segmentation import SegSplits, colour_mask, read_mask, whole_crop
from vislab.memory import check_training_fits, warn_about_batch
from vislab.tasks.base import Prepared, TaskModule, build_model
from vislab.tasks.segmentation.losses import class_weights, segmentation_loss


def segmentation_metrics(num_classes: int, ignore_index: int) -> MetricCollection:
    kwargs = {"num_classes": num_classes, "ignore_index": ignore_index}
    return MetricCollection(
        {
            "miou": MulticlassJaccardIndex(average="macro", **kwargs),
            "pixel_acc": MulticlassAccuracy(average="micro", **kwargs),
            "mean_acc": MulticlassAccuracy(average="macro", **kwargs),
        }
    )


class SegmentationModule(TaskModule):
    def __init__(
        self,
        model: nn.Module,
        config: Config,
        meta: ModelMeta,
        augment: SegmentationAugment,
        augment_on_device: bool,
        weights: torch.Tensor | None = None,
    ):
        super().__init__(model, config, meta)
        self.augment, self.augment_on_device = augment, augment_on_device
        self.register_buffer("loss_weights", weights, persistent=False)
        self.val_metrics = segmentation_metrics(len(meta.classes), meta.ignore_index)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images of any size (fitted, `Preprocess.fit`) to logits."""
        return self.preprocess.logits(self.model, self.model_inputs(self.preprocess.normalise(images)))

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        seg = self.config.segmentation
        return segmentation_loss(logits, masks, seg, self.loss_weights, self.config.label_smoothing)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        self.seed_batch(batch_idx)
        images, masks = batch
        if self.augment_on_device:
            inputs, masks = self.augment(images, masks)
        else:  # streamed crops, augmented per image by the DataLoader workers
            inputs, masks = self.preprocess.normalise(images), masks.long()
        loss = self.loss(self.model(self.model_inputs(inputs)), masks)
        self.log_train_loss(loss, len(images))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        """Scores whole images against their masks at the images' own sizes, as `vislab eval` does."""
        images, masks = batch
        masks = masks.long()
        fitted = self(images)
        logits = self.preprocess.restore(fitted, masks.shape[-2:])
        if batch_idx == 0:  # a few predictions for TensorBoard, at the model's input size
            truth = resize_mask(masks[:4], images.shape[-2:])
            self.examples = (images[:4].cpu(), truth.cpu(), fitted[:4].argmax(1).cpu())
        self.val_metrics.update(logits, masks)
        self.val_loss.update(self.loss(logits, masks), weight=len(images))
        self.log("val_loss", self.val_loss, on_epoch=True, prog_bar=True)

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
        palette, ignore = self.meta.palette, self.meta.ignore_index
        rows = []
        for image, mask, guess in zip(images, masks, predicted):
            truth = colour_mask(mask.clamp(0, 255).to(torch.uint8).numpy(), palette, ignore)
            guess = colour_mask(guess.to(torch.uint8).numpy(), palette)
            rows.append(np.concatenate([image.permute(1, 2, 0).numpy(), truth, guess], axis=1))
        return torch.from_numpy(np.concatenate(rows, axis=0)).permute(2, 0, 1)


def train_masks(splits: SegSplits) -> list[torch.Tensor]:
    if splits.train.in_memory:
        return list(splits.train.masks)
    return [torch.from_numpy(read_mask(m).copy()) for m in splits.train.mask_files]


def prepare_segmentation(config: Config) -> Prepared:
    """The image/mask pairs, the model with its on-device augmentation, and the checkpoint metadata."""
    splits = load_dataset(config, config.image_size)
    size, ignore = splits.image_size, splits.ignore_index
    num_classes = len(splits.classes)
    crop = config.segmentation.crop_size or whole_crop(size)  # the side of the training inputs
    check_training_fits(config, num_classes, 3, size, len(splits.train), crop)
    files = splits.train.image_files
    sample = torch.stack([read_image(p, 3, size) for p in files[:: max(1, len(files) // 64)]])
    seg = config.segmentation.model_copy(update={"ignore_index": ignore})
    config = with_augment_defaults(config).model_copy(update={"image_size": size, "segmentation": seg})
    config = with_normalisation(config, sample if config.mean is None or config.std is None else None, 3)
    model, config = build_model(config, num_classes, 3, size)
    weights = class_weights(train_masks(splits), num_classes, ignore) if seg.class_weights else None
    meta = ModelMeta(
        "segmentation",
        splits.classes,
        3,
        size,
        config.mean,
        config.std,
        config.model,
        config.model_args,
        palette=[list(c) for c in splits.palette],
        ignore_index=ignore,
        config=config.model_dump(mode="json"),
    )
    augment = SegmentationAugment(
        config.mean,
        config.std,
        ignore,
        seg.crop_size,
        seg.scale_range,
        config.augment.hflip,
        config.augment.color_jitter,
    )
    info = {
        "train_size": len(splits.train),
        "val_size": len(splits.val),
        "num_classes": num_classes,
        "classes": splits.classes,
    }
    module = SegmentationModule(model, config, meta, augment, splits.train.in_memory, weights)
    warn_about_batch(config.batch_size, len(splits.train))
    return Prepared(config, module, SegmentationDataModule(splits, config), info)
