"""The task registry: the CLI, the trainer and the UI look a task up here once and call it. The task of a
run follows from its data and its model; `task=` only confirms it."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from vislab.checkpoint import Checkpoint, load_checkpoint
from vislab.config import Config, build_config, flatten, merge, parse_overrides, read_yaml
from vislab.data import dataset_task, photo_side
from vislab.errors import VislabError, unknown_name
from vislab.export import FORMATS, export_model
from vislab.files import replacing
from vislab.models import model_task, resolve_model
from vislab.reports.compare import compare_runs, load_runs
from vislab.reports.document import ReportOptions, progress
from vislab.runs import write_eval
from vislab.tasks.base import Prepared, Task
from vislab.tasks.classification import CLASSIFICATION
from vislab.tasks.segmentation import SEGMENTATION

TASKS: dict[str, Task] = {task.name: task for task in (CLASSIFICATION, SEGMENTATION)}


def get_task(name: str) -> Task:
    if not isinstance(name, str) or name not in TASKS:
        raise unknown_name("task", name, TASKS)
    return TASKS[name]


def data_of(values: dict[str, Any]) -> str:
    return str(values.get("data", Config.model_fields["data"].default))


def infer_task(values: dict[str, Any]) -> Task:
    """The task that the data and the model imply; a model for one task on data for the other, or a
    `task=` that contradicts them, is an error that says so."""
    data = data_of(values)
    from_data = dataset_task(data)
    model = None if values.get("model") is None else str(values["model"])
    if model is not None and model_task(model) != from_data:
        raise VislabError(
            f"{data} is {from_data} data but {model} is a {model_task(model)} model: "
            f"pick a {from_data} model (see 'vislab models') or {model_task(model)} data "
            "(see 'vislab datasets')"
        )
    given = values.get("task")
    if given is not None and given != from_data:
        get_task(given)
        raise VislabError(
            f"task={given}, but {data} is {from_data} data (the task follows from data and model)"
        )
    return TASKS[from_data]


def refuse_foreign_keys(config: Config, task: Task) -> None:
    """A key that means nothing for the task, set to anything but its default or off, is an error; so is
    a value that means nothing for it (foreign keys written key=value)."""
    defaults = flatten(Config().model_dump())
    for key, value in flatten(config.model_dump()).items():
        reason = next(
            (
                why
                for k, why in task.foreign_keys.items()
                if key == k or key.startswith(k + ".") or k == f"{key}={value}"
            ),
            None,
        )
        if reason and value != defaults[key] and value not in (None, 0, False):
            raise VislabError(f"{key}={value} does not apply to {task.name}: {reason}")
    monitor = config.early_stopping.monitor
    if monitor not in task.metric_columns:
        raise VislabError(f"early_stopping.monitor={monitor} is not a {task.name} metric")


def resolve_config(values: dict[str, Any]) -> Config:
    """A config from nested values: the task inferred, its defaults under the given values, its default
    model when none is given (for a folder of photos, a pretrained one), and every key checked to apply
    to it."""
    task = infer_task(values)
    if values.get("model") is None:
        side = photo_side(data_of(values), values.get("image_size")) if task.photo_defaults else None
        if side:  # the photos' own size: upsampled to the weights' 224 px they train 3x slower, no better
            photo = task.photo_defaults | {"image_size": side}
            if "name" in (values.get("optim") or {}):  # another optimizer: the task's settings for it
                photo = {k: v for k, v in photo.items() if k != "optim"}
            values = merge(photo, values)
            values["model"] = task.photo_defaults["model"]
        else:  # the default model, with its options unless the user gave some
            values = merge({"model_args": task.default_model_args}, values) | {"model": task.default_model}
    values = merge(merge(task.defaults, values), {"task": task.name})
    config = build_config(values)
    if config.early_stopping.monitor is None:
        config.early_stopping.monitor = task.monitor
    refuse_foreign_keys(config, task)
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The config of a new run: the task's defaults, then the YAML file, then `key=value` overrides. A model
    given as FILE.py:NAME or package.module:NAME is imported: the user named it for this run (a run's own
    config.yaml, read on resume, is not read here and imports nothing)."""
    values = merge(read_yaml(path) if path else {}, parse_overrides(overrides or []))
    if isinstance(values.get("model"), str):
        resolve_model(values["model"])
    return resolve_config(values)


def prepare(config: Config) -> Prepared:
    return get_task(config.task).prepare(config)


def evaluate(
    run_or_checkpoint: str | Path | Checkpoint,
    split: str = "val",
    overrides: list[str] | None = None,
    tta: bool = False,
    write: bool = False,
) -> tuple[Task, dict]:
    """A checkpoint's scores on a split. With `tta`, scored with test-time augmentation, and also without
    it: the result's `tta` entry holds the headline score both ways and the gain. With `write`, also
    eval_<split>.json and confusion_<split>.csv in the run folder (what `vislab eval` leaves)."""
    checkpoint = in_precision(as_checkpoint(run_or_checkpoint), overrides or [])
    task = get_task(checkpoint.meta.task)
    result = task.evaluate(checkpoint, split, overrides or [], tta)
    if write:
        write_eval(checkpoint.run_dir, split, result)
    return task, result


def in_precision(checkpoint: Checkpoint, overrides: list[str]) -> Checkpoint:
    """The checkpoint evaluated in another precision than it trained in, where `trainer.precision=...`
    says so (`vislab eval RUN trainer.precision=32-true`)."""
    precision = parse_overrides(overrides).get("trainer", {}).get("precision")
    if precision is None:
        return checkpoint
    return dataclasses.replace(checkpoint, meta=checkpoint.meta.in_precision(precision))


def as_checkpoint(run_or_checkpoint: str | Path | Checkpoint) -> Checkpoint:
    if isinstance(run_or_checkpoint, Checkpoint):
        return run_or_checkpoint
    return load_checkpoint(run_or_checkpoint)


def describe_tta(result: dict) -> str:
    """The line `vislab eval --tta` adds: what test-time augmentation gained."""
    tta = result["tta"]
    return (
        f"test-time augmentation: {tta['score']} {tta['with']:.4f} against {tta['without']:.4f} "
        f"without ({tta['gain'] * 100:+.2f} points)"
    )


def report(run_dir: str | Path, options: ReportOptions | None = None) -> Path:
    """Writes a run's report (report.html, report.md, PNGs) into RUN/report/ and returns report.html. The
    report is written beside it and takes the old one's place only once whole."""
    checkpoint = load_checkpoint(run_dir)
    folder, started = checkpoint.run_dir / "report", time.perf_counter()
    with replacing(folder) as staging:
        staging.mkdir()
        html = get_task(checkpoint.meta.task).report(checkpoint, options or ReportOptions(), staging)
    progress(f"wrote {folder / html.name} in {time.perf_counter() - started:.1f}s")
    return folder / html.name


def export(
    run_or_checkpoint: str | Path | Checkpoint, fmt: str, out: Path | None = None, check_images: int = 16
) -> tuple[Path, float]:
    """The model exported to `fmt`, and its largest logit difference from PyTorch on real images."""
    if fmt not in FORMATS:
        raise unknown_name("export format", fmt, FORMATS)
    checkpoint = as_checkpoint(run_or_checkpoint)
    task = get_task(checkpoint.meta.task)
    return export_model(
        checkpoint, task.export_inputs(checkpoint, check_images), fmt, out, task.any_input_size
    )


def compare(paths: list[str | Path], out: Path | None = None):
    runs = load_runs(paths)
    task = get_task(runs[0].config.get("task", "classification"))
    return compare_runs(runs, task.scores, task.monitor, out)


__all__ = ["TASKS", "get_task", "load_config", "resolve_config", "evaluate", "report", "export"]
