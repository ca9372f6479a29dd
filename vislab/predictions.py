"""Predicting images: the one path of `Model.predict`, `vislab predict` and the web UI. Images come as
paths, folders, PIL images, arrays or tensors, are read by the model's `Preprocess`, and come back as
`Predictions`, which tabulate, draw themselves in Jupyter and save what `vislab predict --out` writes."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from vislab.data.images import decode_any, image_files
from vislab.errors import VislabError
from vislab.export import Predictor
from vislab.files import replacing, write_atomically
from vislab.precision import inference
from vislab.reports.notebook import image_html
from vislab.tta import TestTimeAugment

OUTPUT_FORMATS = (".csv", ".json")


def check_output(task: str, out: Path | None) -> None:
    """A classifier's predictions go to a .csv or .json file (checked before anything is predicted)."""
    if out is not None and task == "classification" and out.suffix not in OUTPUT_FORMATS:
        raise VislabError(f"--out must end in {' or '.join(OUTPUT_FORMATS)}, not '{out.suffix or out.name}'")


def predict(predictor: Predictor, images: Any, topk: int = 5, tta: bool = False, batch_size: int = 64):
    """A model's `Predictions` for images (see `gather_images`); `tta` averages over flipped (and
    shifted) views."""
    if tta:
        predictor = replace(predictor, run=TestTimeAugment.for_model(predictor.run, predictor.meta))
    named = gather_images(images)
    if predictor.meta.task == "segmentation":
        return segment_images(predictor, named)
    return classify_images(predictor, named, topk, batch_size)


def gather_images(images: Any) -> list[tuple[str, Any]]:
    """(name, image) pairs: files found under paths and folders, in-memory images named by position."""
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:  # a batch
        images = list(images)
    if isinstance(images, (str, Path, Image.Image, np.ndarray, torch.Tensor)):
        images = [images]
    named = []
    for index, image in enumerate(images):
        if isinstance(image, (str, Path)):
            named += [(str(file), file) for file in image_files(Path(image))]
        else:
            named.append((getattr(image, "filename", "") or f"image {index}", image))
    if not named:
        raise VislabError("no images to predict")
    return named


THUMBNAILS = 32  # the predictions a notebook shows; the rest are kept as numbers only


def class_probabilities(predictor: Predictor, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities for a batch of uint8 images read by the model's `Preprocess`."""
    with inference(predictor.meta.precision):
        return predictor(predictor.meta.preprocess.normalise(images)).float().softmax(1)


def classify_images(
    predictor: Predictor, named: list[tuple[str, Any]], topk: int, batch_size: int
) -> Predictions:
    meta = predictor.meta
    probabilities, thumbnails = [], []
    for start in range(0, len(named), batch_size):
        chunk = named[start : start + batch_size]
        batch = torch.stack([meta.preprocess.read(image) for _, image in chunk])
        thumbnails += list(batch[: max(0, THUMBNAILS - start)])
        probabilities.append(class_probabilities(predictor, batch))
    k = max(1, min(topk, len(meta.classes)))
    return Predictions(
        meta.task, meta.classes, [n for n, _ in named], torch.cat(probabilities).numpy(), None, k, thumbnails
    )


def segment_images(predictor: Predictor, named: list[tuple[str, Any]]) -> Predictions:
    from vislab.tasks.segmentation.predict import predict_labels

    masks, thumbnails = [], []
    for index, (_, image) in enumerate(named):
        picture = decode_any(image, 3)
        masks.append(predict_labels(predictor, predictor.meta, picture))
        if index < THUMBNAILS:
            thumbnails.append(picture)
    meta = predictor.meta
    names, sources = [n for n, _ in named], [image for _, image in named]
    return Predictions(meta.task, meta.classes, names, None, masks, 1, thumbnails, meta.palette, sources)


@dataclass
class Predictions:
    """A model's predictions for some images: `names`, top-1 `labels`, `probabilities` (N x classes) for
    classifiers, `masks` (HxW class indices at each image's own size) for segmentation."""

    task: str
    classes: list[str]
    names: list[str]
    probabilities: np.ndarray | None
    masks: list[np.ndarray] | None
    topk: int
    thumbnails: list[torch.Tensor]  # the first images as the model saw them (uint8 CxHxW), for display
    palette: list[list[int]] | None = None
    sources: list[Any] | None = None  # the images as given (segmentation: `save` draws the masks on them)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}: {label}" for n, label in zip(self.names[:3], self.labels[:3]))
        return f"Predictions({len(self)} images; {shown}{', ...' if len(self) > 3 else ''})"

    @property
    def labels(self) -> list[str]:
        """Each image's class (segmentation: the class covering most of it)."""
        if self.masks is not None:
            counts = [np.bincount(m.ravel(), minlength=len(self.classes)) for m in self.masks]
            return [self.classes[int(c.argmax())] for c in counts]
        return [self.classes[i] for i in self.probabilities.argmax(1)]

    @property
    def top(self) -> list[list[tuple[str, float]]]:
        """Each image's `topk` classes with their probabilities, most likely first."""
        if self.probabilities is None:
            return [[(label, 1.0)] for label in self.labels]
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, : self.topk]
        return [[(self.classes[c], float(p[c])) for c in row] for row, p in zip(order, self.probabilities)]

    def to_pandas(self) -> pd.DataFrame:
        """Classification: file, class1, prob1, ... (the columns of `vislab predict --out preds.csv`);
        segmentation: file, label and the fraction of pixels of each class."""
        if self.masks is not None:
            fractions = [np.bincount(m.ravel(), minlength=len(self.classes)) / m.size for m in self.masks]
            table = pd.DataFrame(fractions, columns=self.classes)
            table.insert(0, "label", self.labels)
        else:
            table = pd.DataFrame(
                [
                    {f"{kind}{n}": v for n, t in enumerate(row, 1) for kind, v in zip(("class", "prob"), t)}
                    for row in self.top
                ]
            )
        table.insert(0, "file", self.names)
        return table

    def lines(self) -> list[str]:
        """What `vislab predict` prints: per image its file and top classes with probabilities (for
        segmentation, the class covering most of it)."""
        return [
            f"{name} " + "  ".join(f"{c} {p:.3f}" for c, p in top) for name, top in zip(self.names, self.top)
        ]

    def save(self, out: str | Path) -> Path:
        """Writes what `vislab predict --out` writes: for classifiers a .csv (the `to_pandas` columns) or
        a .json (per image its file and top classes); for segmentation a folder with <stem>_labels.png
        (class indices), <stem>_colour.png and <stem>_overlay.png per image. Each file appears whole."""
        out = Path(out)
        check_output(self.task, out)
        if self.masks is not None:
            return self.save_masks(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".json":
            rows = [
                {"file": name, "top": [{"class": c, "prob": p} for c, p in top]}
                for name, top in zip(self.names, self.top)
            ]
            write_atomically(out, json.dumps(rows, indent=2) + "\n")
        else:
            write_atomically(out, self.to_pandas().round(6).to_csv(index=False))
        return out

    def drawn(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Segmentation: an image's class indices (H, W), its colour mask and the mask laid over the
        image (H, W, 3), at the image's own size."""
        from vislab.data.segmentation import colour_mask, overlay

        labels = self.masks[index]
        picture = decode_any(self.sources[index], 3).permute(1, 2, 0).numpy()
        colours = colour_mask(labels, self.palette)
        return labels, colours, overlay(picture, colours)

    def save_masks(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for index, name in enumerate(self.names):
            stem = Path(name).stem if Path(name).suffix else name.replace(" ", "_")
            for kind, array in zip(("labels", "colour", "overlay"), self.drawn(index)):
                with replacing(folder / f"{stem}_{kind}.png") as written:
                    Image.fromarray(array).save(written)
        return folder

    def _repr_html_(self) -> str:
        cells = []
        for index, image in enumerate(self.thumbnails):
            picture = image.permute(1, 2, 0).numpy()
            if self.masks is not None:
                from vislab.data.segmentation import colour_mask, overlay

                picture = overlay(picture, colour_mask(self.masks[index], self.palette))
            if self.masks is None:
                caption = " ".join(f"{c} {p:.2f}" for c, p in self.top[index][:2])
            else:
                caption = f"mostly {self.labels[index]}"
            cells.append(
                f"<figure style='display:inline-block;margin:4px;text-align:center'>{image_html(picture)}"
                f"<figcaption style='font-size:small'>{html.escape(Path(self.names[index]).name)}<br>"
                f"<b>{html.escape(caption)}</b></figcaption></figure>"
            )
        more = len(self) - len(self.thumbnails)
        return "".join(cells) + (f"<p>... and {more} more (see .to_pandas())</p>" if more > 0 else "")
