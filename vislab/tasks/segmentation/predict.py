"""Segmentation models at work: masks for new images (`vislab predict`), metrics on whole images of a
split (`vislab eval`), and the real images an export is checked on."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

from vislab.checkpoint import Checkpoint, ModelMeta
from vislab.data import load_dataset
from vislab.data.images import open_image, to_tensor
from vislab.data.segmentation import STRIDE, SegSplit, read_mask
from vislab.errors import VislabError
from vislab.precision import inference
from vislab.tasks.base import eval_config, with_tta
from vislab.tasks.segmentation.module import segmentation_metrics
from vislab.tta import TestTimeAugment


def model_input(image: torch.Tensor, meta: ModelMeta) -> torch.Tensor:
    """A uint8 (3, H, W) image as the model sees it in validation: fitted, normalised, (1, 3, h, w)."""
    preprocess = meta.preprocess
    return preprocess.normalise(preprocess.fit(image)[None])


def predict_labels(model, meta: ModelMeta, image: torch.Tensor) -> np.ndarray:
    """Class indices at the image's own size, scored as training's validation scores them."""
    with inference(meta.precision):
        logits = meta.preprocess.logits(model, model_input(image, meta))
        logits = meta.preprocess.restore(logits, image.shape[-2:])
    return logits.argmax(1)[0].numpy().astype(np.uint8)


def load_eval_split(checkpoint: Checkpoint, split: str, overrides: list[str] | None = None):
    """The (config, split) a checkpoint is evaluated on: its run's data unless overridden; the files only,
    since evaluation reads every image at its own size."""
    config = eval_config(checkpoint.meta, overrides).model_copy(update={"in_memory": False})
    splits = load_dataset(config, checkpoint.meta.image_size)
    if splits.classes != checkpoint.meta.classes:
        raise VislabError(
            f"{config.data} has classes {splits.classes[:5]}... but {checkpoint.path} was trained on "
            f"{checkpoint.meta.classes[:5]}..."
        )
    data = splits.split(split)
    if data is None:
        raise VislabError(f"{config.data} has no {split} split")
    return config, data


def evaluate(
    checkpoint: Checkpoint, split: str = "val", overrides: list[str] | None = None, tta: bool = False
) -> dict:
    """mIoU, per-class IoU, pixel and mean class accuracy and the confusion matrix on whole images at
    their own size, as eval_<split>.json holds them (written by the caller, if at all). With `tta`,
    the scores are those with the mirrored image averaged in, the gain over none beside them."""
    config, data = load_eval_split(checkpoint, split, overrides)
    model = checkpoint.model()
    if tta:
        augmented = TestTimeAugment.for_model(model, checkpoint.meta)
        without, result = score_split(checkpoint, [model, augmented], config.data, data, split)
        result = with_tta(result, without, "miou")
    else:
        (result,) = score_split(checkpoint, [model], config.data, data, split)
    return result


def score_split(
    checkpoint: Checkpoint, models: list, data_name: str, data: SegSplit, split: str
) -> list[dict]:
    """`evaluate`'s scores of each of `models` on a split already loaded, each image and mask read once
    for all of them."""
    meta = checkpoint.meta
    classes, ignore = meta.classes, meta.ignore_index

    def metrics() -> tuple:
        return (
            segmentation_metrics(len(classes), ignore),
            MulticlassJaccardIndex(len(classes), ignore_index=ignore, average="none"),
            MulticlassConfusionMatrix(len(classes), ignore_index=ignore),
        )

    per_model = [metrics() for _ in models]
    for image_path, mask_path in zip(data.image_files, data.mask_files):
        image = to_tensor(open_image(image_path, 3))
        truth = torch.from_numpy(read_mask(mask_path).astype(np.int64))
        for model, trackers in zip(models, per_model):
            labels = torch.from_numpy(predict_labels(model, meta, image).astype(np.int64))
            for metric in trackers:
                metric.update(labels[None], truth[None])
    return [
        {
            "checkpoint": str(checkpoint.path),
            "model": meta.model,
            "data": data_name,
            "split": split,
            "images": len(data),
            **{k: round(float(v), 6) for k, v in summary.compute().items()},
            "per_class_iou": {c: round(float(v), 6) for c, v in zip(classes, per_class.compute())},
            "classes": classes,
            "confusion_matrix": confusion.compute().tolist(),
        }
        for summary, per_class, confusion in per_model
    ]


def describe_eval(result: dict) -> str:
    return (
        f"{result['split']}: mIoU {result['miou']:.4f}  pixel accuracy {result['pixel_acc']:.4f}  "
        f"mean class accuracy {result['mean_acc']:.4f}  ({result['images']} images)"
    )


def export_inputs(checkpoint: Checkpoint, count: int) -> torch.Tensor:
    """Up to `count` validation images as model input, cropped to the first one's size rounded down to
    the stride (an exported model takes multiples of it): what an export is checked on."""
    _, data = load_eval_split(checkpoint, "val")
    images = [model_input(to_tensor(open_image(p, 3)), checkpoint.meta) for p in data.image_files[:count]]
    height = min(i.shape[-2] for i in images) // STRIDE * STRIDE
    width = min(i.shape[-1] for i in images) // STRIDE * STRIDE
    return torch.cat([i[..., :height, :width] for i in images])
