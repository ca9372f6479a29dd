"""One worker's loop: claim a trial, train it as an ordinary run (resuming its last.ckpt when a killed sweep
left it half done), tell the study its score, rewrite the sweep's table."""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from vislab.errors import RunStopped, Stopped, VislabError
from vislab.runs import read_metrics
from vislab.stopping import STOP
from vislab.sweeps.space import nested
from vislab.sweeps.study import SweepPlan, claim, claim_lock, continue_line, open_study
from vislab.sweeps.table import shown, write_results


class EpochPruning(PyTorchLightningPruningCallback):
    """Optuna's Lightning pruning, moved from validation's end to the training epoch's end, after vislab's
    metrics row and checkpoints: a pruned trial stops like an early-stopped run, whole, with its summary."""

    def __init__(self, trial, monitor: str):
        super().__init__(trial, monitor)
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        pass

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        try:
            with warnings.catch_warnings():  # an epoch reported before a kill, reported again on resume
                warnings.filterwarnings("ignore", message=".*is already reported.*")
                super().on_validation_end(trainer, pl_module)
        except optuna.TrialPruned:
            self.pruned_at = trainer.current_epoch
            trainer.should_stop = True


def best_score(run_dir: Path, metric: str, direction: str) -> float | None:
    values = [row[metric] for row in read_metrics(run_dir) if isinstance(row.get(metric), (int, float))]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


def trial_config(plan: SweepPlan, params: dict, number: int):
    from vislab.api import train_config

    # One device a trial: on a machine of several GPUs, Lightning would otherwise start DDP, whose
    # launcher runs the whole sweep command again in each rank (`--jobs` gives each trial a GPU).
    keys = {"trainer.devices": 1} | plan.shared | params
    keys |= {"runs_dir": str(plan.root), "name": f"trial-{number}"}
    return train_config(plan.config, **nested(keys))


def run_trial(study, trial, plan: SweepPlan) -> None:
    """Trains one trial and tells the study how it ended; a stop signal leaves it running, to resume."""
    from vislab.training import train

    params = {key: space.suggest(trial, key) for key, space in plan.space.items()}
    run_dir = plan.root / f"trial-{trial.number}"
    trial.set_user_attr("run", str(run_dir))
    pruning = EpochPruning(trial, plan.metric)
    resume = (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "summary.json").is_file()
    print(f"vislab sweep: trial {trial.number} {shown(params)}{' (resumed)' * resume}", file=sys.stderr)
    try:
        if resume:
            from vislab.training import resume_config

            train(resume_config(run_dir, {}), resume=run_dir, callbacks=[pruning])
        elif not (run_dir / "summary.json").is_file():
            if run_dir.exists():  # killed before its first checkpoint: nothing to keep
                shutil.rmtree(run_dir)
            train(trial_config(plan, params, trial.number), callbacks=[pruning])
    except RunStopped as stop:
        if stop.exit_code >= 128:  # a signal: the trial keeps its checkpoint and resumes next time
            name = signal.Signals(stop.exit_code - 128).name
            raise RunStopped(continue_line(plan, name), stop.exit_code) from None
        fail(study, trial, str(stop))
        return
    except Exception as error:  # VislabError, or anything else: one trial failed, the sweep goes on
        reason = str(error) if isinstance(error, VislabError) else f"{type(error).__name__}: {error}"
        fail(study, trial, reason.strip().splitlines()[0] if reason.strip() else type(error).__name__)
        return
    score = best_score(run_dir, plan.metric, plan.direction)
    if pruning.pruned_at is not None:
        study.tell(trial, state=TrialState.PRUNED)
        print(f"vislab sweep: trial {trial.number} pruned at epoch {pruning.pruned_at + 1}", file=sys.stderr)
    elif score is None:
        fail(study, trial, f"{run_dir} logged no {plan.metric}")
    else:
        study.tell(trial, score)
        print(f"vislab sweep: trial {trial.number} {plan.metric} {score:.4f}", file=sys.stderr)


def fail(study, trial, reason: str) -> None:
    trial.set_user_attr("error", reason)
    study.tell(trial, state=TrialState.FAIL)
    print(f"vislab sweep: trial {trial.number} failed: {reason}", file=sys.stderr)


def work(plan: SweepPlan, worker: int = 0, gpus: int = 0) -> None:
    """Trials until the study has all it asked for. `worker` > 0: one of `--jobs` processes, with a GPU of
    its own where there are `gpus`, else its share of the CPU's threads."""
    if worker:
        share_machine(plan.jobs, worker - 1, gpus)
    from vislab.plugins import import_all

    import_all(plan.imports)
    study = open_study(plan, worker)
    try:
        with STOP.installed():
            while (trial := claim_whole(study, plan)) is not None:
                run_trial(study, trial, plan)
                write_shared(study, plan)
    except Stopped as stop:  # between trials: nothing is half done
        raise RunStopped(continue_line(plan, stop.name), stop.exit_code) from None
    finally:
        write_shared(study, plan)


def write_shared(study, plan: SweepPlan) -> None:
    """The study's table and page, written by one of this machine's processes at a time."""
    with claim_lock(plan.root):
        write_results(study, plan)


def claim_whole(study, plan: SweepPlan):
    """`claim`, with a stop signal held until the trial is marked as this process's: a trial asked for but
    not yet marked would look like another machine's forever, and never be resumed."""
    STOP.hold("claiming the next trial")
    try:
        trial = claim(study, plan)
    finally:
        held = STOP.release()
    if held is not None:
        raise Stopped(held)
    return trial


def share_machine(jobs: int, index: int, gpus: int) -> None:
    import torch

    if gpus:  # before anything touches CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))
