"""Results: a run's summary, every figure of its report, a confusion matrix whose cells open the images
behind them, and the `vislab compare` table when several runs are picked."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import matplotlib
import numpy as np
import pandas as pd

from vislab.checkpoint import load_checkpoint
from vislab.errors import VislabError
from vislab.tasks import compare, evaluate, get_task, report
from vislab.tasks.base import LEGEND
from vislab.ui.common import Context, failure, guarded, run_folders


def sweeps(context: Context) -> list[str]:
    """The sweep folders (runs/<study>/ with a sweep.csv), newest first."""
    if not context.runs_dir.is_dir():
        return []
    found = [p for p in context.runs_dir.iterdir() if (p / "sweep.csv").is_file()]
    return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def finished_runs(context: Context) -> list[str]:
    """Runs with a best checkpoint: runs/<name>, and each sweep's trials as <study>/trial-<n>."""
    folders = run_folders(context.runs_dir)
    for study in sweeps(context):
        folders += sorted(run_folders(context.runs_dir / study), key=lambda p: trial_number(p.name))
    return [
        str(p.relative_to(context.runs_dir)) for p in folders if (p / "checkpoints" / "best.ckpt").is_file()
    ]


def trial_number(name: str) -> int:
    return int(name.removeprefix("trial-")) if name.removeprefix("trial-").isdigit() else -1


def run_path(context: Context, name: str) -> Path:
    parts = Path(name or "").parts
    path = context.runs_dir.joinpath(*parts)
    inside = 0 < len(parts) <= 2 and ".." not in parts and not Path(name).is_absolute()
    if not inside or not (path / "checkpoints" / "best.ckpt").is_file():
        raise VislabError(f"no finished run {name!r} in {context.runs_dir}")
    return path


def sweep_view(context: Context, study: str) -> tuple[str, dict, list[str]]:
    """A sweep's line (progress, the best trial, where its plots are), its table, and its best run."""
    from vislab.sweeps import Sweep
    from vislab.sweeps.table import best_line

    if study not in sweeps(context):
        raise VislabError(f"no sweep {study!r} in {context.runs_dir}")
    found = Sweep(context.runs_dir / study)
    info, trials = found.info, found.trials.drop(columns=["worker"])
    trials["run"] = [Path(r).name for r in trials["run"].fillna("")]
    best = info["best"]
    line = f"**{study}**: {info['done']} of {info['trials']} trials done; {best_line(info)}"
    line += f" · Optuna's plots: {found.path / 'sweep.html'}"
    table = {"headers": list(trials.columns), "data": trials.fillna("").values.tolist()}
    opened = [f"{study}/trial-{best['trial']}"] if best else []
    return line, table, [name for name in opened if name in finished_runs(context)]


FIGURE_NAMES = {
    "curves": "training curves",
    "confusion": "confusion matrix",
    "per_class": "scores per class",
    "iou": "IoU per class",
    "roc": "ROC curves",
    "pr": "precision-recall curves",
    "calibration": "calibration",
    "tsne": "t-SNE of the features",
    "gradcam_correct": "Grad-CAM: right answers",
    "gradcam_misclassified": "Grad-CAM: mistakes",
    "activations": "activation maps",
    "misclassified": "most confident mistakes",
    "highest_loss": "highest loss",
    "overlays": "predicted masks",
}


def figure_name(stem: str, classes: list[str]) -> str:
    """A report figure's caption in words, from its file name (confusion_3_5: the images of class 3
    predicted as 5)."""
    parts = stem.split("_")
    if parts[0] == "confusion" and len(parts) == 3 and all(p.isdigit() for p in parts[1:]):
        true, predicted = (int(p) for p in parts[1:])
        if max(true, predicted) < len(classes):
            return f"true {classes[true]}, predicted {classes[predicted]}"
    return FIGURE_NAMES.get(stem, stem.replace("_", " "))


SUMMARY_COLUMNS = ["", "value"]


def summary_rows(run_dir: Path) -> list[list]:
    path = run_dir / "summary.json"
    if not path.is_file():
        return [["summary.json", "not written yet: the run has not finished"]]
    summary = json.loads(path.read_text())
    return [[k, v if isinstance(v, (int, float, str)) else json.dumps(v)] for k, v in summary.items()]


def confusion(run_dir: Path, split: str) -> dict:
    """The split's evaluation (eval_<split>.json), written by `vislab eval` when it is not there yet."""
    path = run_dir / f"eval_{split}.json"
    if not path.is_file() or path.stat().st_mtime < (run_dir / "checkpoints" / "best.ckpt").stat().st_mtime:
        evaluate(run_dir, split, write=True)
    return json.loads(path.read_text())


CHOSEN = "outline: 3px solid #f97316; outline-offset: -3px; font-weight: bold"  # the clicked cell


def confusion_view(evaluation: dict, pixels: bool, chosen: tuple[int, int] | None = None):
    """The confusion matrix as the page shows it: rows are true classes, each cell coloured by its share
    of its row (the diagonal: recall), with counts in the cells, or row percentages where the counts are
    pixels (segmentation); the cell whose images are shown is outlined. `chosen` is (row, column) of
    the table, whose column 0 holds the class names."""
    classes = evaluation["classes"]
    counts = np.asarray(evaluation["confusion_matrix"], dtype=np.float64)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    cells = [[f"{s:.1%}" for s in row] for row in shares] if pixels else counts.astype(np.int64).tolist()
    frame = pd.DataFrame([[name, *row] for name, row in zip(classes, cells)])
    frame.columns = ["true \\ predicted", *classes]
    blues = matplotlib.colormaps["Blues"]

    def colours(_) -> pd.DataFrame:
        css = [[""] + [cell_css(blues(0.05 + 0.9 * s), s) for s in row] for row in shares]
        if chosen is not None:
            css[chosen[0]][chosen[1]] += "; " + CHOSEN
        return pd.DataFrame(css, index=frame.index, columns=frame.columns)

    return frame.style.apply(colours, axis=None)


def cell_css(rgba: tuple, share: float) -> str:
    red, green, blue = (round(255 * c) for c in rgba[:3])
    return f"background-color: rgb({red}, {green}, {blue}); color: {'white' if share > 0.5 else 'black'}"


def build(context: Context) -> None:
    with gr.Row():
        runs = gr.Dropdown(
            finished_runs(context), multiselect=True, label="runs (several: compared)", elem_id="results-runs"
        )
        split = gr.Radio(["val", "test"], value="val", label="split", elem_id="results-split")
        refresh = gr.Button("Refresh the list", scale=0)
        write = gr.Button("Write the report", scale=0, elem_id="write-report")
    with gr.Row():
        sweep = gr.Dropdown(
            sweeps(context), label="sweep (a group of runs)", elem_id="results-sweep", scale=1
        )
        sweep_line = gr.Markdown(elem_id="sweep-line")
    sweep_table = gr.Dataframe(
        label="the sweep's trials (click a header to sort, a row to open its run)",
        interactive=False,
        visible=False,
        elem_id="sweep-table",
    )
    message = gr.Markdown(elem_id="results-message")
    headline = gr.Markdown(elem_id="headline")
    with gr.Row():
        summary = gr.Dataframe(
            headers=SUMMARY_COLUMNS, label="summary", interactive=False, elem_id="summary", scale=1
        )
        figures = gr.Gallery(label="report figures", columns=2, height=640, elem_id="figures", scale=2)
    gr.Markdown(
        "**Confusion matrix** (rows: true class, columns: predicted; colour: the cell's share of its row). "
        "Click a cell for its images."
    )
    with gr.Row():
        matrix = gr.Dataframe(headers=["true \\ predicted"], interactive=False, elem_id="confusion", scale=3)
        with gr.Column(scale=2):
            cell_caption = gr.Markdown(elem_id="cell-caption")
            cell = gr.Gallery(
                label="images in the chosen cell",
                columns=3,
                height=420,
                elem_id="cell-images",
                object_fit="contain",  # whole pictures: a segmentation legend is wide
            )
    compared = gr.Markdown(elem_id="compare-table")
    compare_curves = gr.Image(label="compared curves", visible=False, elem_id="compare-curves")

    @guarded(8)
    def show(names, split_name):
        if not names:
            return "", "", None, [], None, "", [], "", gr.update(visible=False)
        first = run_path(context, names[0])
        evaluation = confusion(first, split_name)
        pngs = sorted((first / "report").glob("*.png"))
        checkpoint = load_checkpoint(first)
        task = get_task(checkpoint.meta.task)
        table = confusion_view(evaluation, pixels=task.name == "segmentation")
        line = f"**{names[0]}** ({task.name}), " + task.describe_eval(evaluation)  # it names the split
        if not pngs:
            line += " · no report yet: press **Write the report**"
        compared_text, compared_curves = "", gr.update(visible=False)
        if len(names) > 1:
            try:  # runs that cannot be compared: said here, and the first run is shown all the same
                out, compared_table = compare([run_path(context, n) for n in names])
                compared_text = compared_table.markdown()
                compared_curves = gr.update(value=str(out / "curves.png"), visible=True)
            except VislabError as error:
                compared_text = failure(str(error))
        if task.prefetch_cells:  # what the cells' pictures need, in the background before a click
            task.prefetch_cells(checkpoint, split_name)
        summary_table = {"headers": SUMMARY_COLUMNS, "data": summary_rows(first)}
        figures_value = [(str(p), figure_name(p.stem, evaluation["classes"])) for p in pngs]
        return "", line, summary_table, figures_value, table, "", [], compared_text, compared_curves

    @guarded(3)
    def open_cell(names, split_name, event: gr.SelectData):
        row, column = event.index
        if not names or column == 0:
            return "", gr.update(), gr.update(), gr.update()
        run_dir = run_path(context, names[0])
        checkpoint = load_checkpoint(run_dir)
        classes, task = checkpoint.meta.classes, get_task(checkpoint.meta.task)
        pictures = task.confusion_images(checkpoint, split_name, row, column - 1)
        images = sum(caption != LEGEND for _, caption in pictures)
        text = f"{images} images shown: true {classes[row]}, predicted {classes[column - 1]}"
        table = confusion_view(confusion(run_dir, split_name), task.name == "segmentation", (row, column))
        return "", f"**{text}**", pictures, table

    @guarded(1)
    def write_report(names):
        if not names:
            raise VislabError("pick a run first")
        return f"wrote {report(run_path(context, names[0]))}", gr.update()

    @guarded(3)
    def show_sweep(study):
        if not study:
            return "", "", gr.update(visible=False), gr.update()
        line, table, best = sweep_view(context, study)
        opened = gr.update(choices=finished_runs(context), value=best) if best else gr.update()
        return "", line, gr.update(value=table, visible=True), opened

    @guarded(1)
    def open_trial(study, event: gr.SelectData):
        row = event.row_value
        return "", gr.update(choices=finished_runs(context), value=[f"{study}/{row[-1]}"])

    sweep.change(show_sweep, sweep, [message, sweep_line, sweep_table, runs])
    sweep_table.select(open_trial, sweep, [message, runs])

    outputs = [message, headline, summary, figures, matrix, cell_caption, cell, compared, compare_curves]
    runs.change(show, [runs, split], outputs)
    split.change(show, [runs, split], outputs)
    refresh.click(
        lambda: (gr.update(choices=finished_runs(context)), gr.update(choices=sweeps(context))),
        None,
        [runs, sweep],
    )
    matrix.select(open_cell, [runs, split], [message, cell_caption, cell, matrix])
    write.click(write_report, runs, [message, figures]).then(show, [runs, split], outputs)
