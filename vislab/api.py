"""vislab as a library: train, open a run, load a model to predict, evaluate and export with, compare runs.
The `vislab` command is a thin layer over these names; they go through the same config, trainer and tasks."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from vislab.checkpoint import Checkpoint, ModelMeta, load_checkpoint
from vislab.config import Config, build_config, merge, parse_overrides, read_yaml
from vislab.data.images import decode_any, image_files
from vislab.errors import VislabError, unknown_name
from vislab.export import Predictor, load_predictor
from vislab.recipes import recipe_path
from vislab.reports.document import ReportOptions
from vislab.runs import read_metrics
from vislab.tta import TestTimeAugment

# ---------------------------------------------------------------------------------------------- training


def train_config(
    config: str | Path | Config | None = None,
    /,
    *,
    overrides: Iterable[str] | str | None = None,
    resume: str | Path | None = None,
    **keys: Any,
) -> Config:
    """The config `train` would run: a recipe name, a YAML file or a `Config`, then `keys` (the CLI's keys,
    a dict for a section), then `overrides` (`"optim.lr=0.05"` strings). With `resume`, the run's own
    config with the keys and overrides applied."""
    from vislab.tasks import resolve_config
    from vislab.training import resume_config

    words = [overrides] if isinstance(overrides, str) else list(overrides or [])
    updates = merge(plain(keys), parse_overrides(words))
    if resume is not None:
        if config is not None:
            raise VislabError("--resume uses the run's own config.yaml; drop --config")
        return resume_config(Path(resume), updates)
    if isinstance(config, Config):
        if not updates and config.task is not None:
            return config
        return resolve_config(with_own_code(merge(config.model_dump(exclude_unset=True), updates)))
    values = read_yaml(recipe_path(config)) if config is not None else {}
    return resolve_config(with_own_code(merge(values, updates)))


def with_own_code(values: dict) -> dict:
    """A new run's model as the user gave it (FILE.py:NAME, package.module:NAME, a function, a class, an
    nn.Module) imported or registered, and its data when it is a Dataset object (or a (train, val) pair),
    each named as config.yaml will hold it: the user asked for them."""
    from vislab.models import resolve_model

    if values.get("model") is not None:
        values = values | {"model": resolve_model(values["model"])}
    if values.get("data") is not None:
        values = values | {"data": data_name(values["data"])}
    return values


def data_name(data: Any) -> Any:
    """`data=` as the config holds it: a Dataset object (or a (train, val) pair) registered for this
    process under `python:NAME`, anything else as it is."""
    from vislab.data.objects import is_dataset, register_python_dataset

    return register_python_dataset(data) if is_dataset(data) else data


def plain(values: Any) -> Any:
    """Python values as YAML would give them: paths as text, tuples as lists, sections as dicts."""
    if isinstance(values, dict):
        return {str(k): plain(v) for k, v in values.items()}
    if isinstance(values, (list, tuple)):
        return [plain(v) for v in values]
    return str(values) if isinstance(values, Path) else values


def train(
    config: str | Path | Config | None = None,
    /,
    *,
    overrides: Iterable[str] | str | None = None,
    resume: str | Path | None = None,
    **keys: Any,
) -> Run:
    """Trains as `vislab train` does and returns the run. `config`: a recipe name, a YAML file or a
    `Config`; `keys`: config keys, a dict for a section (`optim={"lr": 0.05}`); `overrides`: dotted
    `key=value` strings; `resume`: a run folder to continue (its own config, with keys and overrides)."""
    from vislab.training import train as train_run

    resolved = train_config(config, overrides=overrides, resume=resume, **keys)
    return Run(train_run(resolved, resume=Path(resume) if resume is not None else None))


# -------------------------------------------------------------------------------------------------- runs


class Run:
    """A run folder: its config, summary, metrics per epoch, model and report."""

    def __init__(self, path: str | Path):
        self.path = Path(path.path if isinstance(path, Run) else path)
        if not self.path.is_dir():
            raise VislabError(f"no such run folder: {self.path}")
        if not (self.path / "config.yaml").is_file():
            raise VislabError(f"{self.path} is not a vislab run folder (no config.yaml)")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def config(self) -> Config:
        return build_config(read_yaml(self.path / "config.yaml"))

    @property
    def finished(self) -> bool:
        return (self.path / "summary.json").is_file()

    @property
    def summary(self) -> dict:
        """summary.json: best and final scores, epochs, time, throughput, parameters, device, versions."""
        if not self.finished:
            raise VislabError(f"{self.path} has not finished training (no summary.json yet)")
        return json.loads((self.path / "summary.json").read_text())

    @property
    def metrics(self) -> pd.DataFrame:
        """metrics.csv, one row per epoch (empty before the first epoch ends)."""
        path = self.path / "metrics.csv"
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()

    def load(self, which: str = "best") -> Model:
        """The run's model from checkpoints/<which>.ckpt (`best` or `last`)."""
        return Model(load_checkpoint(self.path, prefer=which))

    def report(self, **options: Any) -> Path:
        """Writes the run's report (options as `vislab report`: split, tsne, cam, gallery, tsne_points)
        and returns report.html."""
        from vislab.tasks import report

        known = {f.name for f in fields(ReportOptions)}
        for name in options:
            if name not in known:
                raise unknown_name("report option", name, known)
        return report(self.path, ReportOptions(**options))

    def _repr_html_(self) -> str:
        from vislab.reports import plots
        from vislab.tasks import get_task

        summary = self.summary if self.finished else {}
        rows = read_metrics(self.path) if (self.path / "metrics.csv").is_file() else []
        shown = {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
        state = "" if summary else f" (training: {len(rows)} epochs done)"
        parts = [f"<b>{html.escape(self.path.name)}</b>{state}", html_table(shown)]
        if rows:
            columns = get_task(self.config.task).metric_columns
            scores = [(c, c) for c in columns if c == "train_acc" or c.startswith("val_") and c != "val_loss"]
            best = summary.get("best_epoch", rows[-1]["epoch"])
            parts.append(figure_html(plots.training_curves(rows, best, scores), width=900))
        return "\n".join(parts)


def compare(runs: Iterable[str | Path | Run]) -> pd.DataFrame:
    """Finished runs side by side, one row each: model, parameters, epochs, the task's scores, time,
    images/s and the config keys whose values differ (what `vislab compare` tables, without its files)."""
    from vislab.reports.compare import comparison, load_runs
    from vislab.tasks import get_task

    loaded = load_runs([run.path if isinstance(run, Run) else run for run in runs])
    header, rows = comparison(loaded, get_task(loaded[0].config.get("task", "classification")).scores)
    return pd.DataFrame(rows, columns=header)


# ----------------------------------------------------------------------------------------------- a model


def load(run_or_file: str | Path | Run) -> Model:
    """A model from a run folder, a checkpoint (.ckpt), or an export (.safetensors, .onnx)."""
    path = Path(run_or_file.path if isinstance(run_or_file, Run) else run_or_file)
    if path.suffix == ".onnx" and path.is_file():
        return Model(load_predictor(path))
    return Model(load_checkpoint(path))


class Model:
    """A trained model with what it needs besides weights (classes, preprocessing): predicts on images,
    evaluates on a dataset split, exports. From an ONNX file it predicts only."""

    def __init__(self, source: Checkpoint | Predictor):
        self.checkpoint = source if isinstance(source, Checkpoint) else None
        self.source = source

    @property
    def path(self) -> Path:
        return self.source.path

    @property
    def meta(self) -> ModelMeta:
        return self.source.meta

    @property
    def task(self) -> str:
        return self.meta.task

    @property
    def classes(self) -> list[str]:
        return self.meta.classes

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}: {self.meta.model}, {self.task}, {len(self.classes)} classes)"

    @cached_property
    def predictor(self) -> Predictor:
        if self.checkpoint is None:
            return self.source
        return Predictor(self.path, self.meta, self.checkpoint.model())

    @property
    def network(self) -> torch.nn.Module | None:
        """The PyTorch module (None for an ONNX file)."""
        return self.predictor.run if isinstance(self.predictor.run, torch.nn.Module) else None

    def predict(self, images: Any, topk: int = 5, tta: bool = False, batch_size: int = 64) -> Predictions:
        """Predictions for images: a path, a folder (every image under it, sorted), a PIL image, an HxWxC
        (or HxW) uint8 array, a CxHxW tensor, or a list of these. Files are read as `vislab predict`
        reads them; `tta` averages over flipped (and shifted) views."""
        predictor = self.predictor
        if tta:
            predictor = replace(predictor, run=TestTimeAugment.for_model(predictor.run, self.meta))
        named = gather_images(images)
        if self.task == "segmentation":
            return segment_images(predictor, named)
        return classify_images(predictor, named, topk, batch_size)

    def evaluate(
        self,
        data: Any = None,
        split: str = "val",
        tta: bool = False,
        write: bool = False,
        overrides: Iterable[str] | None = None,
    ) -> Metrics:
        """Scores on a split of the run's data, or of `data` (any `data=` value with the same classes):
        classification loss, top-1/top-5, per-class accuracy, macro precision/recall/F1 and the confusion
        matrix; segmentation mIoU, per-class IoU, pixel and mean class accuracy and the confusion matrix.
        Writes nothing unless `write` (eval_<split>.json and confusion_<split>.csv, as `vislab eval`)."""
        from vislab.tasks import evaluate

        words = [*([f"data={data_name(data)}"] if data is not None else []), *(overrides or [])]
        _, result = evaluate(self.needs_checkpoint("evaluate"), split, words, tta, write)
        return Metrics(result)

    def export(self, format: str = "onnx", path: str | Path | None = None) -> Path:
        """The model as onnx, torchscript or safetensors (default RUN/export/model.<format>), checked
        against PyTorch on real images and carrying its preprocessing; returns the file."""
        from vislab.tasks import export

        written, _ = export(self.needs_checkpoint("export"), format, Path(path) if path else None)
        return written

    def needs_checkpoint(self, what: str) -> Checkpoint:
        if self.checkpoint is None:
            raise VislabError(f"cannot {what} {self.path}: it needs a run, a .ckpt or a .safetensors file")
        return self.checkpoint


# ---------------------------------------------------------------------------------------------- images


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


def classify_images(
    predictor: Predictor, named: list[tuple[str, Any]], topk: int, batch_size: int
) -> Predictions:
    from vislab.tasks.classification.predict import class_probabilities

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
    return Predictions(
        meta.task, meta.classes, [n for n, _ in named], None, masks, 1, thumbnails, meta.palette
    )


# ------------------------------------------------------------------------------------------------ results


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


class Metrics(dict):
    """An evaluation as eval_<split>.json holds it (a dict), with the confusion matrix and per-class
    scores as tables, and a line as `vislab eval` prints it."""

    @property
    def task(self) -> str:
        return "segmentation" if "miou" in self else "classification"

    @property
    def confusion(self) -> pd.DataFrame:
        """Counts: rows are the true classes, columns the predicted ones."""
        return pd.DataFrame(self["confusion_matrix"], index=self["classes"], columns=self["classes"])

    @property
    def per_class(self) -> pd.Series:
        """Accuracy (classification) or IoU (segmentation) per class."""
        key = "per_class_iou" if self.task == "segmentation" else "per_class_accuracy"
        return pd.Series(self[key], name=key.removeprefix("per_class_"))

    def __str__(self) -> str:
        from vislab.tasks import get_task

        return get_task(self.task).describe_eval(self)

    def _repr_html_(self) -> str:
        from vislab.reports.plots import confusion_matrices

        figure = confusion_matrices(np.asarray(self["confusion_matrix"]), self["classes"])
        return f"<p>{html.escape(str(self))}</p>{figure_html(figure, width=900)}"


# ---------------------------------------------------------------------------------------- HTML helpers


def html_table(values: dict) -> str:
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
        f"<td>{html.escape(f'{v:.4f}' if isinstance(v, float) else str(v))}</td></tr>"
        for k, v in values.items()
    )
    return f"<table>{rows}</table>"


def png_html(data: bytes, style: str) -> str:
    return f"<img src='data:image/png;base64,{base64.b64encode(data).decode()}' style='{style}'>"


def figure_html(figure, width: int) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=70)
    return png_html(buffer.getvalue(), f"max-width:{width}px")


def image_html(picture: np.ndarray, side: int = 96) -> str:
    """A small image: a large one shrunk (photos, segmentation overlays), a small one scaled up without
    blurring (8x8 digits stay readable)."""
    image = Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture)
    style = f"width:{side}px;image-rendering:pixelated"
    if max(image.size) > 2 * side:
        image.thumbnail((2 * side, 2 * side))
        style = f"width:{image.width}px"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return png_html(buffer.getvalue(), style)
