"""Segmentation checkpoints at work: masks for new images (`vislab predict`), metrics on a split
(`vislab eval`), and the pictures both share: colour masks and overlays in the dataset's palette."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

from vislab.checkpoint import find_checkpoint, model_from_checkpoint, normalise, read_checkpoint
from vislab.config import build_config
from vislab.data import data_dir_of
from vislab.data.images import open_image, to_tensor
from vislab.data.segmentation import colour_mask, load_segmentation, overlay, read_mask
from vislab.errors import VislabError
from vislab.evaluate import run_dir_of, write_eval
from vislab.tasks.segmentation import padded_logits, segmentation_metrics


def load_segmenter(run_or_checkpoint: str | Path) -> tuple[torch.nn.Module, dict, Path]:
    path = find_checkpoint(run_or_checkpoint)
    checkpoint = read_checkpoint(path, task="segmentation")
    return model_from_checkpoint(checkpoint), checkpoint["vislab"], path


def predict_labels(model: torch.nn.Module, meta: dict, image: torch.Tensor) -> np.ndarray:
    """Class indices at the image's own size: the model sees the shorter side at `image_size`."""
    height, width = image.shape[-2:]
    scale = meta["image_size"] / min(height, width)
    small = F.interpolate(
        image[None].float(), scale_factor=scale, mode="bilinear", antialias=True, align_corners=False
    )
    with torch.inference_mode():
        logits = padded_logits(model, normalise(small, meta))
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].numpy().astype(np.uint8)


def segment(run_or_checkpoint: str | Path, target: str | Path, out: Path | None = None) -> Path:
    """Writes <stem>_labels.png (class indices), <stem>_colour.png and <stem>_overlay.png per image."""
    from vislab.predict import image_files

    model, meta, path = load_segmenter(run_or_checkpoint)
    out = out or run_dir_of(path) / "predictions"
    out.mkdir(parents=True, exist_ok=True)
    for file in image_files(Path(target)):
        image = to_tensor(open_image(file, 3))
        labels = predict_labels(model, meta, image)
        colours = colour_mask(labels, meta["palette"])
        Image.fromarray(labels).save(out / f"{file.stem}_labels.png")
        Image.fromarray(colours).save(out / f"{file.stem}_colour.png")
        Image.fromarray(overlay(image.permute(1, 2, 0).numpy(), colours)).save(
            out / f"{file.stem}_overlay.png"
        )
    return out


def evaluate_segmentation(run_or_checkpoint: str | Path, split: str = "val") -> dict:
    """mIoU, per-class IoU, pixel and mean class accuracy and the confusion matrix on whole images at
    their own size; writes eval_<split>.json and confusion_<split>.csv into the run folder."""
    model, meta, path = load_segmenter(run_or_checkpoint)
    config = build_config(meta["config"])
    ignore = meta["ignore_index"]
    splits = load_segmentation(config.data, data_dir_of(config), ignore)
    data = {"train": splits.train, "val": splits.val}.get(split)
    if data is None:
        raise VislabError(f"{config.data} has no {split} split")
    classes = meta["classes"]
    metrics = segmentation_metrics(len(classes), ignore)
    per_class = MulticlassJaccardIndex(len(classes), ignore_index=ignore, average="none")
    confusion = MulticlassConfusionMatrix(len(classes), ignore_index=ignore)
    for image_path, mask_path in zip(data.images, data.masks):
        labels = torch.from_numpy(
            predict_labels(model, meta, to_tensor(open_image(image_path, 3))).astype(np.int64)
        )
        truth = torch.from_numpy(read_mask(mask_path).astype(np.int64))
        for metric in (metrics, per_class, confusion):
            metric.update(labels[None], truth[None])
    scores = metrics.compute()
    matrix = confusion.compute().tolist()
    result = {
        "checkpoint": str(path),
        "model": meta["model"],
        "data": config.data,
        "split": split,
        "images": len(data),
        **{k: round(float(v), 6) for k, v in scores.items()},
        "per_class_iou": {c: round(float(v), 6) for c, v in zip(classes, per_class.compute())},
        "classes": classes,
        "confusion_matrix": matrix,
    }
    write_eval(run_dir_of(path), split, result)
    return result
