"""Results: a run's summary, every figure of its report, a confusion matrix whose cells open the images
behind them, and the `vislab compare` table when several runs are picked."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from vislab.checkpoint import load_checkpoint
from vislab.errors import VislabError
from vislab.tasks import compare, evaluate, get_task, report
from vislab.ui.common import Context, guarded, run_folders


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
        summary = gr.Dataframe(label="summary", interactive=False, elem_id="summary", scale=1)
        figures = gr.Gallery(label="report figures", columns=3, height=420, elem_id="figures", scale=2)
    gr.Markdown("**Confusion matrix** (rows: true class, columns: predicted). Click a cell for its images.")
    matrix = gr.Dataframe(interactive=False, elem_id="confusion")
    cell = gr.Gallery(label="images in the chosen cell", columns=8, height=300, elem_id="cell-images")
    compared = gr.Markdown(elem_id="compare-table")
    compare_curves = gr.Image(label="compared curves", visible=False, elem_id="compare-curves")

    @guarded(7)
    def show(names, split_name):
        if not names:
            return "", "", None, [], None, [], "", gr.update(visible=False)
        first = run_path(context, names[0])
        evaluation = confusion(first, split_name)
        classes = evaluation["classes"]
        table = {
            "headers": ["true \\ predicted", *classes],
            "data": [[c, *row] for c, row in zip(classes, evaluation["confusion_matrix"])],
        }
        pngs = sorted((first / "report").glob("*.png"))
        task = get_task(load_checkpoint(first).meta.task)
        line = f"**{names[0]}** ({task.name}) on {split_name}: " + task.describe_eval(evaluation)
        if not pngs:
            line += " · no report yet: press **Write the report**"
        compared_text, compared_curves = "", gr.update(visible=False)
        if len(names) > 1:
            out, compared_table = compare([run_path(context, n) for n in names])
            compared_text = compared_table.markdown()
            compared_curves = gr.update(value=str(out / "curves.png"), visible=True)
        summary_table = {"headers": ["", "value"], "data": summary_rows(first)}
        figures_value = [(str(p), p.stem) for p in pngs]
        return "", line, summary_table, figures_value, table, [], compared_text, compared_curves

    @guarded(1)
    def open_cell(names, split_name, event: gr.SelectData):
        row, column = event.index
        if not names or column == 0:
            return "", gr.update()
        checkpoint = load_checkpoint(run_path(context, names[0]))
        classes = checkpoint.meta.classes
        pictures = get_task(checkpoint.meta.task).confusion_images(checkpoint, split_name, row, column - 1)
        text = f"{len(pictures)} images shown: true {classes[row]}, predicted {classes[column - 1]}"
        return text, pictures

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

    outputs = [message, headline, summary, figures, matrix, cell, compared, compare_curves]
    runs.change(show, [runs, split], outputs)
    split.change(show, [runs, split], outputs)
    refresh.click(
        lambda: (gr.update(choices=finished_runs(context)), gr.update(choices=sweeps(context))),
        None,
        [runs, sweep],
    )
    matrix.select(open_cell, [runs, split], [message, cell])
    write.click(write_report, runs, [message, figures]).then(show, [runs, split], outputs)
