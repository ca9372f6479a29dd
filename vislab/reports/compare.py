"""`vislab compare RUN RUN ...`: the seed projects' "MLP -> CNN -> ResNet" tables and overlaid curves."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from vislab.config import flatten
from vislab.errors import VislabError
from vislab.reports.document import Section, Table, write_html, write_markdown
from vislab.reports.plots import figure_with_axes, save
from vislab.runs import read_metrics

# Keys that the table shows in columns of their own, and keys that differ without changing the result:
# where files go, how progress is shown, how data reaches the model (in memory or streamed: the same
# pictures, issue 21), its memory layout (channels-last, chosen per model when not set) and how often a
# resumable checkpoint is written.
IGNORED_KEYS = {
    "name",
    "runs_dir",
    "report",
    "trainer.progress_bar",
    "model",
    "epochs",
    "num_workers",
    "in_memory",
    "trainer.channels_last",
    "checkpoint_every_min",
}


@dataclass
class Run:
    path: Path
    config: dict
    summary: dict
    rows: list[dict]


def load_run(path: Path) -> Run:
    files = [path / "config.yaml", path / "summary.json", path / "metrics.csv"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise VislabError(f"{path} is not a finished vislab run (missing {', '.join(missing)})")
    return Run(
        path, yaml.safe_load(files[0].read_text()), json.loads(files[1].read_text()), read_metrics(path)
    )


def check_comparable(runs: list[Run]) -> None:
    first = runs[0]
    for run in runs[1:]:
        for key in ("task", "classes"):
            mine = first.summary.get(key, first.config.get(key))
            theirs = run.summary.get(key, run.config.get(key))
            if mine != theirs:
                raise VislabError(f"cannot compare {run.path} with {first.path}: their {key} differ")


def differences(runs: list[Run]) -> list[str]:
    """Config keys whose values are not the same in every run."""
    flats = [flatten(run.config) for run in runs]
    keys = sorted(set().union(*flats) - IGNORED_KEYS)
    return [key for key in keys if len({json.dumps(f.get(key), sort_keys=True) for f in flats}) > 1]


def curves(runs: list[Run], score: str):
    fig, axes = figure_with_axes(1, 3, figsize=(15, 4.2))
    for axis, key, title in zip(axes, (score, "val_loss", "train_loss"), (score, "val_loss", "train_loss")):
        for run in runs:
            axis.plot(
                [r["epoch"] for r in run.rows],
                [r.get(key) for r in run.rows],
                marker="o",
                markersize=3,
                label=run.path.name,
            )
        axis.set(title=title, xlabel="epoch", ylabel=key)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    return fig


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Finished runs that can be compared: at least two, of one task and one set of classes."""
    if len(paths) < 2:
        raise VislabError("compare needs at least two runs")
    runs = [load_run(Path(p)) for p in paths]
    check_comparable(runs)
    return runs


def comparison(runs: list[Run], scores: list[tuple[str, str]]) -> tuple[list[str], list[list]]:
    """The comparison table's header and rows, values as the runs hold them: run, model, params, epochs,
    the task's `scores` (label, summary key), time, images/s, and the config keys that differ."""
    changed = differences(runs)
    header = [
        "run",
        "model",
        "params",
        "epochs",
        *[label for label, _ in scores],
        "time (s)",
        "images/s",
        *changed,
    ]
    rows = []
    for run in runs:
        s, flat = run.summary, flatten(run.config)
        rows.append(
            [run.path.name, run.config["model"], s["params"], s["epochs_run"]]
            + [s.get(key) for _, key in scores]
            + [s["wall_time_s"], s["train_images_per_s"]]
            + [flat.get(k) for k in changed]
        )
    return header, rows


def shown_row(row: list, fixed: int) -> list:
    """A row of `comparison` as the table prints it; `fixed` columns come before the config keys."""
    name, model, params, epochs, *headline = row[:fixed]
    *scores, seconds, per_second = headline
    numbers = [name, model, f"{params:,}", epochs, *scores, f"{seconds:.1f}", f"{per_second:.0f}"]
    return numbers + [json.dumps(value) for value in row[fixed:]]


def compare_runs(
    runs: list[Run], scores: list[tuple[str, str]], monitor: str, out: Path | None = None
) -> tuple[Path, Table]:
    """Writes compare.html, compare.md and curves.png into `out` (default runs/compare); returns the table.
    `scores` are the (label, summary key) columns of the runs' task, `monitor` its curve to overlay."""
    header, values = comparison(runs, scores)
    changed = differences(runs)
    table = Table(header, [shown_row(row, len(header) - len(changed)) for row in values])
    out = out or runs[0].path.parent / "compare"
    out.mkdir(parents=True, exist_ok=True)
    note = (
        f"Config keys that differ: {', '.join(changed)}." if changed else "The runs' configs are identical."
    )
    sections = [
        Section("table", "Runs", tables=[table], note=note),
        Section("curves", "Curves", [save(curves(runs, monitor), out / "curves.png")]),
    ]
    title = f"vislab comparison: {', '.join(run.path.name for run in runs)}"
    write_html(out / "compare.html", title, sections)
    write_markdown(out / "compare.md", title, sections)
    return out, table
