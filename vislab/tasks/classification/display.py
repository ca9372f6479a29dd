"""What the web UI shows of a classifier's data and work: a dataset's class counts and sample images, top-k
classes with Grad-CAM for new images, and the images behind a confusion-matrix cell. The CLI's own
functions do the work (loading, prediction, evaluation); these only arrange their results as pictures."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vislab.checkpoint import Checkpoint, load_checkpoint
from vislab.config import Config
from vislab.data import load_dataset
from vislab.data.images import read_image
from vislab.estimate import before_start
from vislab.export import Predictor
from vislab.predictions import predict
from vislab.reports.cam import grad_cam, overlay
from vislab.tasks.base import Preview, Shown
from vislab.tasks.classification.evaluate import collect_outputs, images_of, load_eval_data
from vislab.tasks.classification.module import input_size


def as_picture(image: torch.Tensor) -> np.ndarray:
    """A uint8 (C, H, W) tensor as an HxWx3 array."""
    array = image.permute(1, 2, 0).numpy()
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def preview(config: Config, per_class: int = 4, most_classes: int = 12) -> Preview:
    """Class counts per split and the first images of the first classes, read the way training reads
    them (files stay on disk: nothing is decoded but the samples)."""
    splits = load_dataset(config.model_copy(update={"in_memory": False}))
    names = [n for n in ("train", "val", "test") if splits.split(n) is not None]
    counts = {n: torch.bincount(splits.split(n).labels, minlength=len(splits.classes)) for n in names}
    rows = [[c, *(int(counts[n][i]) for n in names)] for i, c in enumerate(splits.classes)]
    samples = []
    train = splits.train
    for label, name in enumerate(splits.classes[:most_classes]):
        for index in torch.nonzero(train.labels == label).flatten()[:per_class].tolist():
            image = (
                train.images[index]
                if train.in_memory
                else read_image(train.files[index], splits.channels, min(splits.image_size, 160))
            )
            samples.append((as_picture(image), name))
    largest, smallest = max(r[1] for r in rows), min(r[1] for r in rows)
    summary = (
        f"{len(splits.classes)} classes, "
        + ", ".join(f"{int(counts[n].sum())} {n}" for n in names)
        + f" images at {splits.image_size}x{splits.image_size}; largest/smallest class "
        + f"(train) {largest}/{smallest}"
    )
    size = input_size(config) or splits.image_size  # what training reads them at (a timm model's own)
    notes = before_start(config, len(splits.classes), splits.channels, size, len(train))
    return Preview("\n\n".join([summary, *notes]), ["class", *names], rows, samples)


def show(predictor: Predictor, files: list[Path], topk: int) -> list[Shown]:
    """Top-k classes per image, and Grad-CAM of the top class where the model is a PyTorch module."""
    meta = predictor.meta
    shown = []
    for file in files:
        predicted = predict(predictor, file, topk)
        (top,), label = predicted.top, predicted.labels[0]
        image = predicted.thumbnails[0]  # as the model saw it
        pictures = [(as_picture(image), f"{Path(file).name}: {label}")]
        if isinstance(predictor.run, nn.Module):  # an ONNX file has no gradients to explain with
            best = meta.classes.index(label)
            heatmap = grad_cam(predictor.run, meta.preprocess.normalise(image[None]), [best])
            if heatmap is not None:
                cam = overlay(image.permute(1, 2, 0).numpy(), heatmap[0])
                pictures.append((cam, f"Grad-CAM: {label}"))
        csv_row = predicted.to_pandas().round(6).iloc[0].to_dict() | {"file": Path(file).name}
        shown.append(Shown(Path(file).name, dict(top), pictures, csv_row))
    return shown


@lru_cache(maxsize=4)
def scored(path: str, modified: float, split: str):
    """A checkpoint's split with its labels, predictions and confidences, kept while the UI asks about
    its cells (keyed by the file's modification time, so a newer checkpoint is scored again). Only the
    evaluated split is kept, not the dataset's others: the training images are never held here."""
    checkpoint = load_checkpoint(path)
    data = load_eval_data(checkpoint, split)
    outputs = collect_outputs(checkpoint.model(), data)
    probs = outputs.logits.softmax(1)
    return data.split, outputs.labels.numpy(), probs.argmax(1).numpy(), probs.max(1).values.numpy()


def confusion_images(
    checkpoint: Checkpoint, split: str, true: int, predicted: int, most: int = 24
) -> list[tuple[np.ndarray, str]]:
    """The images of `split` with label `true` that the model predicts as `predicted`, most confident
    first, captioned with their file names where they have files."""
    evaluated, labels, predictions, confidence = scored(
        str(checkpoint.path), checkpoint.path.stat().st_mtime, split
    )
    indices = np.flatnonzero((labels == true) & (predictions == predicted))
    chosen = indices[np.argsort(-confidence[indices])][:most].tolist()
    files = evaluated.files
    images = images_of(evaluated, checkpoint.meta, chosen) if chosen else []
    return [
        (as_picture(image), f"{Path(files[i]).name if files else f'#{i}'} ({confidence[i]:.2f})")
        for i, image in zip(chosen, images)
    ]
