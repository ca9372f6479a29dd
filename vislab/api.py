"""vislab as a library: train, open a run, load a model to predict, evaluate and export with, compare runs.
The `vislab` command is a thin layer over these names; they go through the same config, trainer and tasks."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from dataclasses import fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from vislab.checkpoint import Checkpoint, ModelMeta, load_checkpoint
from vislab.config import Config, build_config, merge, parse_overrides, read_yaml
from vislab.errors import VislabError, unknown_name
from vislab.export import Predictor, load_predictor
from vislab.predictions import Predictions, predict
from vislab.recipes import recipe_path
from vislab.reports.document import ReportOptions
from vislab.reports.notebook import figure_html, html_table
from vislab.runs import read_metrics

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

    def predict(
        self,
        images: Any,
        topk: int = 5,
        tta: bool = False,
        batch_size: int = 64,
        precision: str | None = None,
    ) -> Predictions:
        """Predictions for images: a path, a folder (every image under it, sorted), a PIL image, an HxWxC
        (or HxW) uint8 array, a CxHxW tensor, or a list of these. Files are read as `vislab predict`
        reads them; `tta` averages over flipped (and shifted) views. The model runs in the precision it
        trained in unless `precision` says otherwise ("32-true": fp32)."""
        predictor = self.predictor
        if precision is not None:
            predictor = replace(predictor, meta=predictor.meta.in_precision(precision))
        return predict(predictor, images, topk, tta, batch_size)

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
        Writes nothing unless `write` (eval_<split>.json and confusion_<split>.csv, as `vislab eval`). In the
        precision the run trained in unless `overrides` say otherwise (`["trainer.precision=32-true"]`)."""
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


# ------------------------------------------------------------------------------------------------ results


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
