"""`vislab sweep` and `vislab.sweep()`: many runs from one command, searched and pruned by Optuna.

A key's value may be a space (`grid(a,b)`, `choice(a,b)`, `uniform(lo,hi)`, `loguniform(lo,hi)`,
`int(lo,hi)`); the other keys are shared by every trial. Everything is checked before a trial starts: each
searched key must take each of its values (a grid's values, a range's ends and middle) in a real config."""

from __future__ import annotations

import html
import json
import multiprocessing
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from vislab.errors import RunStopped, Stopped, VislabError
from vislab.sweeps.space import Space, flat, grid_points, nested, split_space
from vislab.sweeps.study import PRUNERS, SweepPlan, continue_line, default_study_name, open_study
from vislab.sweeps.table import best_line

__all__ = ["Sweep", "SweepPlan", "plan_sweep", "run_sweep", "sweep"]


def samples(space: Space) -> tuple:
    """Values that stand for a space when checking that its key takes them: a range's ends and a point
    between them that is no whole number (an int key refuses uniform(1,3), though it would take 2.0)."""
    if space.kind in ("grid", "choice", "int"):
        return space.values
    lo, hi = space.values
    inside = lo**0.63 * hi**0.37 if space.kind == "loguniform" else lo + 0.37 * (hi - lo)
    return lo, inside, hi


def plan_sweep(
    config: str | Path | None = None,
    keys: dict[str, Any] | None = None,
    *,
    trials: int | None = None,
    jobs: int = 1,
    study: str | None = None,
    storage: str | None = None,
    prune: str = "none",
    metric: str | None = None,
    direction: str | None = None,
    imports: Iterable[str] = (),
) -> SweepPlan:
    """The checked plan of a sweep: one line (`VislabError`) for anything wrong, before anything starts."""
    from vislab.api import train_config
    from vislab.plugins import import_all
    from vislab.tasks import get_task

    config = str(config) if config is not None else None
    if jobs < 1:
        raise VislabError(f"--jobs {jobs}: the number of trials at once must be 1 or more")
    if prune not in PRUNERS:
        raise VislabError(f"--prune {prune}: choose from {', '.join(PRUNERS)}")
    if direction not in (None, "max", "min"):
        raise VislabError(f"--direction {direction}: choose max or min")
    import_all(list(imports))
    space, shared = split_space(keys or {})
    if not space:
        raise VislabError(
            "nothing to search: give a key a space, e.g. 'model=grid(mlp,resnet20)' or "
            "'optim.lr=loguniform(1e-3,0.3)'"
        )
    first = {k: samples(s)[0] for k, s in space.items()}
    base = train_config(config, **nested(shared | first))
    if base.scores_test:
        raise VislabError(
            "test=true in a sweep would score every trial on the test split: trials are chosen on "
            "validation; score the best run afterwards with: vislab eval RUN --split test"
        )
    for key, values in space.items():
        for value in samples(values):
            try:
                trial = train_config(config, **nested(shared | first | {key: value}))
            except VislabError as error:
                raise VislabError(f"{key}={values}: {error}") from None
            if trial.model != base.model and "model" not in space:  # a default that follows the data
                raise VislabError(
                    f"{key}={values}: the trials would train different default models ({base.model}, "
                    f"{trial.model}) with their own settings; name the model (model=...) so that only "
                    f"{key} changes"
                )
    columns = [c for c in get_task(base.task).metric_columns if c.startswith("val_")]
    metric = metric or base.early_stopping.monitor
    if metric not in columns:
        raise VislabError(f"--metric {metric}: a {base.task} run logs {', '.join(columns)}")
    goal = direction or ("min" if metric == "val_loss" else "max")  # every other metric: higher is better
    grid = grid_points(space)
    all_grid = all(s.is_grid for s in space.values())
    if trials is None:
        if not all_grid:
            sampled = [k for k, s in space.items() if not s.is_grid]
            raise VislabError(
                f"--trials N is needed: {', '.join(sampled)} {'is' if len(sampled) == 1 else 'are'} "
                "sampled, not a grid, so the sweep has no size of its own"
            )
        trials = len(grid)
    if trials < 1:
        raise VislabError(f"--trials {trials}: a sweep needs one trial or more")
    if all_grid and trials > len(grid):
        raise VislabError(f"--trials {trials}: the grid has {len(grid)} points, and none runs twice")
    if study is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", study):
        raise VislabError(f"--study {study!r}: a study is named with letters, digits, '.', '-' and '_'")
    name = study or default_study_name(config, flat(keys or {}))
    return SweepPlan(
        config=config,
        space=space,
        shared=shared,
        trials=trials,
        study=name,
        root=Path(base.runs_dir) / name,
        storage=storage,
        metric=metric,
        direction="maximize" if goal == "max" else "minimize",
        prune=prune,
        epochs=base.epochs,
        jobs=jobs,
        seed=base.seed if storage is None else None,
        imports=list(imports),
    )


def run_sweep(plan: SweepPlan) -> Sweep:
    """Runs the plan's trials here (`jobs` 1) or in `jobs` processes; a stop signal stops every trial with
    a checkpoint, and the same command later continues the study."""
    from vislab.stopping import STOP
    from vislab.sweeps.trials import work

    if plan.jobs == 1:
        work(plan)
        return Sweep(plan.root)
    open_study(plan)  # created (and its grid enqueued) once, before any job joins it
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    context = multiprocessing.get_context("spawn")
    jobs = [context.Process(target=run_job, args=(plan, n + 1, gpus)) for n in range(plan.jobs)]
    try:
        with STOP.installed():
            for job in jobs:
                job.start()
            for job in jobs:
                job.join()
    except Stopped as stop:
        for job in jobs:
            if job.pid is not None and job.is_alive():
                job.terminate()  # SIGTERM: each trial stops at its next step with a checkpoint
        for job in jobs:
            job.join()
        raise RunStopped(continue_line(plan, stop.name), stop.exit_code) from None
    failed = [job.exitcode for job in jobs if job.exitcode]
    if failed:
        raise RunStopped(f"{len(failed)} of {plan.jobs} sweep jobs failed; {continue_line(plan)}", 1)
    return Sweep(plan.root)


def run_job(plan: SweepPlan, worker: int, gpus: int) -> None:
    """One of `--jobs` processes: what ends it is one line, as from the command, never a traceback."""
    from vislab.sweeps.trials import work

    try:
        work(plan, worker, gpus)
    except VislabError as error:
        print(f"vislab: error: {error}", file=sys.stderr)
        sys.exit(2)
    except (RunStopped, Stopped) as stop:
        print(f"vislab: job {worker}: {stop}", file=sys.stderr)
        sys.exit(stop.exit_code)


class Sweep:
    """A sweep's folder: its trials as a table, and the best run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "sweep.csv").is_file():
            raise VislabError(f"{self.path} is not a vislab sweep folder (no sweep.csv)")

    def __repr__(self) -> str:
        return f"Sweep({str(self.path)!r})"

    @property
    def trials(self) -> pd.DataFrame:
        """sweep.csv: one row per trial (number, state, the parameters, the metric, epochs, run folder)."""
        return pd.read_csv(self.path / "sweep.csv")

    @property
    def info(self) -> dict:
        """sweep.json: study, storage, metric, direction, the space, trials asked and done, the best."""
        return json.loads((self.path / "sweep.json").read_text())

    @property
    def best(self):
        """The best complete trial's run (`vislab.Run`)."""
        from vislab.api import Run

        best = self.info["best"]
        if best is None:
            raise VislabError(f"no trial of {self.path} has completed")
        return Run(best["run"])

    def _repr_html_(self) -> str:
        info = self.info
        done = f"{info['done']} of {info['trials']} trials; {best_line(info)}"
        head = f"<b>{html.escape(self.path.name)}</b>: {html.escape(done)}"
        return head + self.trials.to_html(index=False)


def sweep(
    config: str | Path | None = None,
    /,
    *,
    trials: int | None = None,
    jobs: int = 1,
    study: str | None = None,
    storage: str | None = None,
    prune: str = "none",
    metric: str | None = None,
    direction: str | None = None,
    overrides: Iterable[str] | str | None = None,
    imports: Iterable[str] = (),
    **keys: Any,
) -> Sweep:
    """Runs a sweep as `vislab sweep` does and returns it: `keys` as `vislab.train` takes them, a space
    written as text (`model="grid(mlp,resnet20)"`, `optim={"lr": "loguniform(1e-3,0.3)"}`)."""
    from vislab.api import plain
    from vislab.config import merge, parse_overrides

    words = [overrides] if isinstance(overrides, str) else list(overrides or [])
    values = merge(plain(keys), parse_overrides(words))
    plan = plan_sweep(
        config, values, trials=trials, jobs=jobs, study=study, storage=storage, prune=prune,
        metric=metric, direction=direction, imports=imports,
    )  # fmt: skip
    return run_sweep(plan)
