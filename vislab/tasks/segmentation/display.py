"""What the web UI shows of a segmentation model's data and work: a dataset's splits and sample masks,
colour masks for new images, and the images behind a cell of the pixel confusion matrix."""

from __future__ import annotations

from concurrent.futures import Future
from contextlib import suppress
from pathlib import Path
from threading import Lock, Thread

import numpy as np

from vislab.checkpoint import Checkpoint, load_checkpoint
from vislab.config import Config
from vislab.data import load_dataset
from vislab.data.images import open_image, to_tensor
from vislab.data.segmentation import colour_mask, overlay, read_mask
from vislab.estimate import before_start
from vislab.export import Predictor
from vislab.predictions import predict
from vislab.reports.plots import class_legend
from vislab.tasks.base import LEGEND, Preview, Shown
from vislab.tasks.segmentation.predict import load_eval_split, predict_labels


def preview(config: Config, count: int = 8) -> Preview:
    """Images per split, and training images spread over the split (neighbouring video frames look
    alike) with their masks laid over them, after the colours' legend."""
    splits = load_dataset(config.model_copy(update={"in_memory": False}))
    rows = [[name, len(splits.split(name))] for name in ("train", "val")]
    samples = [(class_legend(splits.classes, splits.palette, ignored=True), LEGEND)]
    pairs = list(zip(splits.train.image_files, splits.train.mask_files))
    for image_file, mask_file in pairs[:: max(1, len(pairs) // count)][:count]:
        image = np.asarray(open_image(image_file, 3))
        colours = colour_mask(read_mask(mask_file), splits.palette, splits.ignore_index)
        samples.append((overlay(image, colours), image_file.name))
    summary = (
        f"{len(splits.classes)} classes ({', '.join(splits.classes[:12])}"
        f"{', ...' if len(splits.classes) > 12 else ''}), {len(splits.train)} train and "
        f"{len(splits.val)} val images; mask value {splits.ignore_index} is ignored"
    )
    size = config.segmentation.crop_size or splits.image_size  # what a training step sees
    notes = before_start(config, len(splits.classes), 3, size, len(splits.train))
    return Preview("\n\n".join([summary, *notes]), ["split", "images"], rows, samples)


def show(predictor: Predictor, files: list[Path], topk: int) -> list[Shown]:
    """The colour mask over each image, the mask alone, and each class's share of the pixels."""
    classes = predictor.meta.classes
    legend = [(class_legend(classes, predictor.meta.palette), LEGEND)]
    shown = []
    for file in files:
        labels, colours, laid_over = predict(predictor, file).drawn(0)
        shares = np.bincount(labels.ravel(), minlength=len(classes))[: len(classes)] / labels.size
        name = Path(file).name
        pictures = [(laid_over, f"{name}: overlay"), (colours, f"{name}: mask"), *legend]
        legend = []  # once, after the first image
        row = {"file": name} | {c: round(float(v), 6) for c, v in zip(classes, shares)}
        shown.append(Shown(name, None, pictures, row))
    return shown


KEPT_PIXELS = 50_000_000  # predicted label maps kept for the cells' pictures up to this many (50 MB)
KEPT_SPLITS = 2  # the splits (of a checkpoint) whose per-image counts are kept
PASSES: dict[tuple, Future] = {}  # (checkpoint, its mtime, split) -> its per-image pass, newest last
PASSES_LOCK = Lock()


def pixel_confusions(path: str, modified: float, split: str):
    """Per image of the split: (true, predicted) pixel counts, and the predicted label maps where they
    fit in KEPT_PIXELS (else None: a cell's images are predicted again), kept while the UI asks about
    cells. Computed once per checkpoint and split by whoever asks first (the prefetch when a run is
    shown, or a click); a second asker waits for that pass, an asker of another split does not."""
    key = (path, modified, split)
    with PASSES_LOCK:
        future = PASSES.get(key)
        computes = future is None
        if computes:
            future = PASSES[key] = Future()
            # The oldest finished passes make room; a running one stays, or the next click would start
            # it again.
            finished = [k for k, f in PASSES.items() if f.done()]
            for old in finished[: max(0, len(PASSES) - KEPT_SPLITS)]:
                PASSES.pop(old)
    if computes:
        try:
            future.set_result(split_pixels(*key))
        except BaseException as error:
            with PASSES_LOCK:
                PASSES.pop(key, None)  # asked again later, computed again
            future.set_exception(error)
    return future.result()


def prefetch_cells(checkpoint: Checkpoint, split: str) -> None:
    """Starts the split's per-image pass in the background (a daemon thread: the server's exit does not
    wait for it); an error is left for the click that asks, which shows it."""
    key = (str(checkpoint.path), checkpoint.path.stat().st_mtime, split)
    with PASSES_LOCK:
        if key in PASSES:
            return

    def compute() -> None:
        with suppress(Exception):  # the click that asks for the cell computes it again and shows the error
            pixel_confusions(*key)

    Thread(target=compute, daemon=True).start()


def split_pixels(path: str, modified: float, split: str):
    checkpoint = load_checkpoint(path)
    _, data = load_eval_split(checkpoint, split)
    model, meta = checkpoint.model(), checkpoint.meta
    n = len(meta.classes)
    counts, labels, pixels = [], [], 0
    for image_file, mask_file in zip(data.image_files, data.mask_files):
        image = to_tensor(open_image(image_file, 3))
        predicted = predict_labels(model, meta, image)
        truth = read_mask(mask_file).astype(np.int64)
        valid = truth < n
        counts.append(np.bincount(truth[valid] * n + predicted[valid], minlength=n * n).reshape(n, n))
        pixels += predicted.size
        labels.append(predicted.astype(np.uint8) if n <= 256 and pixels <= KEPT_PIXELS else None)
    return data, np.stack(counts), labels


def confusion_images(
    checkpoint: Checkpoint, split: str, true: int, predicted: int, most: int = 12
) -> list[tuple[np.ndarray, str]]:
    """The images with the most pixels of class `true` predicted as `predicted`, those pixels shown in
    the predicted class's colour over the image, after a legend that says so."""
    data, counts, labels = pixel_confusions(str(checkpoint.path), checkpoint.path.stat().st_mtime, split)
    order = [i for i in np.argsort(-counts[:, true, predicted]) if counts[i, true, predicted] > 0][:most]
    if not order:
        return []
    meta = checkpoint.meta
    model = checkpoint.model() if any(labels[i] is None for i in order) else None
    marked = f"{meta.classes[true]} predicted as {meta.classes[predicted]}"
    pictures = [(class_legend([marked], [meta.palette[predicted]]), LEGEND)]
    for i in order:
        image = to_tensor(open_image(data.image_files[i], 3))
        predictions = labels[i] if labels[i] is not None else predict_labels(model, meta, image)
        cell = (read_mask(data.mask_files[i]) == true) & (predictions == predicted)
        colour = np.asarray(meta.palette[predicted], dtype=np.uint8)
        picture = image.permute(1, 2, 0).numpy().copy()
        picture[cell] = overlay(picture[cell], np.broadcast_to(colour, picture[cell].shape), 0.7)
        pictures.append((picture, f"{data.image_files[i].name}: {int(counts[i, true, predicted])} px"))
    return pictures
