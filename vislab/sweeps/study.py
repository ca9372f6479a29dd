"""A sweep: an Optuna study whose trials are ordinary vislab runs in runs/<study>/trial-<n>/.

Every process that works on a study (the one `vislab sweep` starts, each of its `--jobs`, a worker on another
machine joining through PostgreSQL) runs the same loop: claim a trial, train it, tell the study, rewrite
sweep.csv and sweep.html. A trial is claimed under a lock file in the study's folder: first a trial that a
killed process of this machine left running (it resumes from its last.ckpt), else a new one while fewer than
`--trials` exist. Grid points are enqueued once, by the process that creates the study, so no grid point
runs twice."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from vislab.errors import VislabError
from vislab.files import boot_id, process_alive
from vislab.sweeps.space import Space, describe, grid_points

PRUNERS = ("none", "median", "hyperband")
WORKER = "vislab.worker"  # user attr of a trial: "host pid" of the process training it
SURPLUS = "vislab.surplus"  # a trial asked for after another machine's worker filled the study
BOOT = "vislab.boot"  # user attr of a trial: the boot of the machine its process ran on
READY = "vislab.ready"  # study attr: set once the creating process has enqueued the grid


@dataclass
class SweepPlan:
    """Everything a worker needs, checked before anything starts; picklable for `--jobs` processes."""

    config: str | None  # a recipe name or YAML path every trial starts from
    space: dict[str, Space]
    shared: dict[str, Any]  # dotted keys every trial gets
    trials: int
    study: str
    root: Path  # runs/<study>
    storage: str | None  # a database URL, or None for the journal file in `root`
    metric: str
    direction: str  # "maximize" or "minimize"
    prune: str
    epochs: int
    jobs: int = 1
    seed: int | None = 0
    imports: list[str] = field(default_factory=list)

    @property
    def storage_label(self) -> str:
        return self.storage or str(self.root / "optuna.journal")


def default_study_name(config: str | None, keys: dict[str, Any]) -> str:
    """The same command names the same study, so running it again continues it."""
    text = json.dumps([config, sorted((k, str(v)) for k, v in keys.items())])
    return f"sweep-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


class KernelLock:
    """The journal file's lock (Optuna's lock interface) as an OS lock (flock), which the kernel releases
    when its process dies: with Optuna's own lock files, a sweep killed while writing the journal left the
    next one waiting 30 s before it broke the stale lock."""

    def __init__(self, path: Path):
        self.path, self.handle = path, None

    def acquire(self) -> bool:
        self.handle = open(self.path, "a")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return True

    def release(self) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def open_storage(plan: SweepPlan):
    if plan.storage is None:
        plan.root.mkdir(parents=True, exist_ok=True)
        lock = KernelLock(plan.root / ".journal.lock")
        backend = JournalFileBackend(str(plan.root / "optuna.journal"), lock_obj=lock)
        return optuna.storages.JournalStorage(backend)
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(plan.storage)
        except (IntegrityError, ProgrammingError):  # workers starting together both made Optuna's tables
            time.sleep(0.5 + attempt)
        except Exception as error:  # sqlalchemy's: a driver missing, a refused connection, a bad URL
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise VislabError(f"cannot open the study storage {plan.storage}: {reason}") from None
    raise VislabError(f"cannot open the study storage {plan.storage}: its tables could not be made")


def make_sampler(plan: SweepPlan, worker: int, started: int):
    # A seed per worker and per start: workers with one seed would sample the same points, and so would a
    # sweep continued after a stop (TPE's first trials are random draws that ignore the study's history).
    seed = None if plan.seed is None else plan.seed + 1000 * worker + started
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(plan: SweepPlan):
    if plan.prune == "median":  # a trial below the median of the earlier ones at the same epoch stops
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if plan.prune == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(plan.epochs, 1))
    return optuna.pruners.NopPruner()


def open_study(plan: SweepPlan, worker: int = 0):
    """Creates the study (its space, metric and grid stored once) or joins it, refusing one whose space,
    metric or direction differs; a larger `--trials` than before adds the grid points it needs."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(plan)
    with claim_lock(plan.root):  # one process of this machine at a time sets a study up
        try:
            known = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
            if plan.study not in known and any(plan.root.glob("trial-*")):
                raise VislabError(
                    f"{plan.root} holds trial folders of another study: pick another --study, or move them"
                )
            options = dict(study_name=plan.study, storage=storage, pruner=make_pruner(plan))
            try:
                study = optuna.create_study(direction=plan.direction, **options)
            except optuna.exceptions.DuplicatedStudyError:
                study = optuna.load_study(**options)
            if not study.user_attrs.get(READY):
                wait_or_set_up(study, plan)
            refuse_other_space(study, plan)
            add_grid_points(study, plan)
        except VislabError:
            raise
        except Exception as error:  # the database went away, or refused a write
            raise VislabError(f"study {plan.study} in {plan.storage_label}: {one_line(error)}") from None
    study.sampler = make_sampler(plan, worker, len(study.get_trials(deepcopy=False)))
    return study


def one_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def wait_or_set_up(study, plan: SweepPlan) -> None:
    """A new study's setup, done by its creator; a study left half set up (its creator killed, here or on
    another machine) is finished by the next process, which enqueues only the grid points not there yet."""
    fresh = not study.user_attrs and not study.get_trials(deepcopy=False)
    alone = fresh or plan.storage is None  # the journal is this machine's, and we hold its lock
    for _ in range(0 if alone else 600):  # another machine's worker may be setting it up right now
        if study.user_attrs.get(READY):
            return
        time.sleep(0.1)
    study.set_user_attr("vislab.space", describe(plan.space))
    study.set_user_attr("vislab.metric", plan.metric)
    queued = len(study.get_trials(deepcopy=False))
    for params in planned_grid(plan)[queued:]:
        study.enqueue_trial(params)
    study.set_user_attr("vislab.trials", plan.trials)
    study.set_user_attr(READY, True)


def add_grid_points(study, plan: SweepPlan) -> None:
    """A continued sweep asked for more trials than before: the grid points of the new ones, enqueued."""
    before = int(study.user_attrs.get("vislab.trials", plan.trials))
    if plan.trials > before:
        for params in planned_grid(plan)[before:]:
            study.enqueue_trial(params)
        study.set_user_attr("vislab.trials", plan.trials)


def planned_grid(plan: SweepPlan) -> list[dict]:
    """The grid points of the first `trials` trials: each once; cycled when random keys come beside them."""
    points = grid_points(plan.space)
    if points == [{}]:
        return []
    return [points[n % len(points)] for n in range(plan.trials)]


def refuse_other_space(study, plan: SweepPlan) -> None:
    stored = study.user_attrs.get("vislab.space")
    if stored != describe(plan.space):
        shown = lambda space: " ".join(f"{k}={v}" for k, v in (space or {}).items()) or "nothing"  # noqa: E731
        raise VislabError(
            f"study {plan.study} in {plan.storage_label} searches {shown(stored)}, this command "
            f"{shown(describe(plan.space))}: pass the same space, or another --study"
        )
    direction = study.direction.name.lower()
    if study.user_attrs.get("vislab.metric") != plan.metric or direction != plan.direction:
        raise VislabError(
            f"study {plan.study} optimises {study.user_attrs.get('vislab.metric')} ({direction}), this "
            f"command {plan.metric} ({plan.direction}): pass the same --metric and --direction, or another "
            "--study"
        )


@contextmanager
def claim_lock(root: Path) -> Iterator[None]:
    """One process of this machine claims a trial at a time."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".claim.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def this_worker() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def abandoned(trial, local: bool) -> bool:
    """A running trial whose process is gone: on this machine and dead (or of an earlier boot), or with no
    process marked at all (killed between being asked for and marked; `local`: the study lives in this
    machine's journal, claimed under its lock, else after a minute)."""
    worker = trial.user_attrs.get(WORKER)
    if worker is None:
        started = trial.datetime_start
        return local or started is None or (datetime.now() - started).total_seconds() > 60
    host, _, pid = str(worker).rpartition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    boot = trial.user_attrs.get(BOOT)
    return (boot is not None and boot != boot_id()) or int(pid) == os.getpid() or not process_alive(pid)


def mark_mine(study, trial_id: int) -> None:
    # The boot first: a worker that sees the new WORKER sees its boot too (two writes, not one); the
    # other order let a worker between them take a live trial for an earlier boot's and run it twice.
    study._storage.set_trial_user_attr(trial_id, BOOT, boot_id())
    study._storage.set_trial_user_attr(trial_id, WORKER, this_worker())


def counted(trials) -> list:
    return [t for t in trials if not t.user_attrs.get(SURPLUS)]


def claim(study, plan: SweepPlan):
    """The next trial for this process, or None when the study has all its trials."""
    with claim_lock(plan.root):
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not frozen.user_attrs.get(SURPLUS) and abandoned(frozen, local=plan.storage is None):
                mark_mine(study, frozen._trial_id)
                return optuna.trial.Trial(study, frozen._trial_id)
        started = [t for t in counted(study.get_trials(deepcopy=False)) if t.state != TrialState.WAITING]
        if len(started) >= plan.trials:
            return None
        trial = study.ask()
        mark_mine(study, trial._trial_id)
        before = [t for t in counted(study.get_trials(deepcopy=False)) if t.number < trial.number]
        if len(before) >= plan.trials:  # another machine's worker took the last one meanwhile
            trial.set_user_attr(SURPLUS, True)
            study.tell(trial, state=TrialState.FAIL)
            return None
        return trial


def continue_line(plan: SweepPlan, name: str | None = None) -> str:
    stopped = f"stopped by {name}: running trials saved a checkpoint; " if name else ""
    return f"{stopped}run the same command again to continue study {plan.study} ({plan.root})"
