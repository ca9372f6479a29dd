"""Train: start, queue, stop and resume `vislab train` processes, and watch one run live: where it stands,
its curves (updated within epochs from progress.json) and its log."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import gradio as gr

from vislab.errors import VislabError
from vislab.reports.plots import live_curves
from vislab.runs import read_metrics
from vislab.ui.common import Context, guarded, page_words, run_folders
from vislab.ui.jobs import Job, log_tail, read_progress, run_state, training_process
from vislab.ui.setup_tab import Setup, config_of, train_args

CURRENT = "(current job)"
QUEUE_COLUMNS = ["job", "state", "run", "command"]
REFRESH_S = 1.0


def selected_run(context: Context, choice: str) -> tuple[Path | None, Job | None]:
    """The run folder the page shows, and the UI job that trains it, if any."""
    jobs = context.jobs
    if choice in (None, "", CURRENT):
        job = jobs.current() or next((j for j in reversed(jobs.jobs) if j.state != "cancelled"), None)
        return (job.find_run_dir() if job else None), job
    run_dir = context.runs_dir / choice
    if not (run_dir / "config.yaml").is_file():
        raise VislabError(f"no run folder {run_dir}")
    return run_dir, next((j for j in reversed(jobs.jobs) if j.find_run_dir() == run_dir), None)


def describe(run_dir: Path | None, job: Job | None) -> str:
    if run_dir is None:
        return f"job {job.number}: {job.state}, starting" if job else "no run yet: press Start"
    progress = read_progress(run_dir)
    state = run_state(run_dir, progress)
    if job is not None and job.state == "running" and progress.get("state") == "ended":
        state = "stopping"  # its process saves and exits: Resume waits until it is gone
    head = f"**{run_dir.name}**: {state}"
    if job is not None and job.state in ("stopped", "failed") and state != "finished":
        head += f" ({job_words(job)})"
    if not progress:
        return head
    epochs, batches = progress["epochs"], progress["batches"]
    epoch = min(progress["epoch"] + 1, epochs)
    parts = [f"epoch {epoch}/{epochs}", f"batch {progress['batch']}/{batches}", f"step {progress['step']}"]
    if progress.get("images_per_s"):
        parts.append(f"{progress['images_per_s']:.0f} images/s")
    if state == "training" and progress.get("eta_s") is not None:
        parts.append(f"ETA {progress['eta_s']:.0f} s ({progress['state']})")
    return head + " · " + " · ".join(parts)


def job_words(job: Job) -> str:
    """How a job ended, in words rather than exit codes."""
    if job.state == "stopped":
        return "stopped on request; its last checkpoint is kept: Resume continues from it"
    if job.exit_code == 2:
        return "refused: the log below says why"
    return "failed: the log below says why"


def curves(run_dir: Path | None):
    """The run's live curves as one figure (None before the first point)."""
    if run_dir is None:
        return None
    points = read_progress(run_dir).get("curve", [])
    rows = read_metrics(run_dir) if (run_dir / "metrics.csv").is_file() else []
    if not points and not rows:
        return None
    return live_curves(points, rows)  # a Figure of its own: no pyplot state shared between threads


def curve_version(run_dir: Path | None) -> tuple | None:
    """Changes whenever the run writes new curve points or a new epoch row."""
    if run_dir is None:
        return None
    stamps = [
        (run_dir / f).stat().st_mtime if (run_dir / f).is_file() else 0
        for f in ("progress.json", "metrics.csv")
    ]
    return (str(run_dir), *stamps)


def queue_table(context: Context) -> dict:
    rows = [
        [j.number, j.state, run.name if run else "", j.title]
        for j, run in ((j, j.find_run_dir()) for j in reversed(context.jobs.jobs))
    ]
    return {"headers": QUEUE_COLUMNS, "data": rows}


def build(context: Context, setup: Setup) -> None:
    with gr.Row():
        start = gr.Button("Start (or queue)", variant="primary", elem_id="start")
        stop = gr.Button("Stop (saves a checkpoint)", variant="stop", elem_id="stop")
        resume = gr.Button("Resume", elem_id="resume")
        cancel = gr.Button("Cancel queued jobs", elem_id="cancel-queued")
        run = gr.Dropdown([CURRENT], value=CURRENT, label="run shown", elem_id="train-run", scale=2)
    what = gr.Markdown(elem_id="train-command")  # what Start runs: the form of Data & model, in CLI words
    message = gr.Markdown(elem_id="train-message")
    status = gr.Markdown(elem_id="train-status")
    plot = gr.Plot(label="curves", elem_id="curves")
    queue = gr.Dataframe(headers=QUEUE_COLUMNS, label="queue", interactive=False, elem_id="queue")
    log = gr.Textbox(label="log (last lines)", lines=10, max_lines=10, interactive=False, elem_id="log")

    @guarded(1)
    def start_job(*values):
        args = train_args(*values)
        config_of(args)  # refused on the page, in the config's words, before anything is queued
        job = context.jobs.train(args)
        return f"job {job.number} queued: {job.title}", CURRENT

    @guarded(0)
    def stop_job(choice):
        run_dir, job = selected_run(context, choice)
        if job is not None and job.state in ("running", "queued"):
            return context.jobs.stop(job)
        # A run started elsewhere (a shell): the same stop, sent only to the process that trains it now,
        # never to another that was given its recorded id since (after a kill or a restart).
        pid = training_process(read_progress(run_dir), run_dir) if run_dir else None
        if pid is None:
            raise VislabError("nothing is training to stop")
        os.kill(pid, signal.SIGTERM)
        return f"asked {run_dir.name} to stop; it saves a checkpoint after the current step"

    @guarded(1)
    def resume_job(choice):
        run_dir, _ = selected_run(context, choice)
        if run_dir is None:
            raise VislabError("pick a run to resume")
        job = context.jobs.resume(run_dir)
        return f"job {job.number} queued: {job.title}", CURRENT

    drawn = gr.State(None)  # what the plots show, so that they are redrawn only when it changes

    @guarded(6)
    def refresh(choice, shown):
        run_dir, job = selected_run(context, choice)
        names = [CURRENT, *(p.name for p in run_folders(context.runs_dir))]
        now = curve_version(run_dir)
        figure = curves(run_dir) if now != shown else gr.update()
        return (
            gr.update(),
            describe(run_dir, job),
            figure,
            queue_table(context),
            page_words(log_tail(job)),
            gr.update(choices=names),
            now,
        )

    setup.command.change(lambda line: f"**Start** runs: `{line}`" if line else "", setup.command, what)
    start.click(start_job, setup.inputs, [message, run])
    stop.click(stop_job, run, message)
    resume.click(resume_job, run, [message, run])
    cancel.click(guarded(0)(lambda: context.jobs.cancel_queued()), None, message)
    live = [message, status, plot, queue, log, run, drawn]
    gr.Timer(REFRESH_S).tick(refresh, [run, drawn], live, show_progress="hidden")
    run.change(refresh, [run, drawn], live, show_progress="hidden")
