"""Training longer after a run ended: `--resume RUN epochs=N` re-plans the learning-rate schedule for N
epochs from where the run stands, as if it had been planned so from the start, never past its end; and the
extended run resumes bit for bit from then on."""

import csv
import shutil
import signal

import pytest
import torch

from conftest import QUIET
from stopper import send_at

FAST = ["data=digits", "batch_size=128", "optim.lr=0.05", *QUIET]  # 1,616 digits: 12 whole batches an epoch
SCHEDULES = {
    "cosine": ["sched.name=cosine"],
    "cosine with warm-up": ["sched.name=cosine", "sched.warmup_epochs=1"],
    "linear": ["sched.name=linear", "sched.min_lr=0.001"],
    "step": ["sched.name=step", "sched.step_size=1", "sched.gamma=0.5"],
    "multistep": ["sched.name=multistep", "sched.milestones=[1,3]"],
    "onecycle": ["sched.name=onecycle"],
    "plateau": ["sched.name=plateau"],
    "none": ["sched.name=none"],
}


def learning_rates(run) -> list[float]:
    with open(run / "metrics.csv") as file:
        return [float(row["lr"]) for row in csv.DictReader(file)]


@pytest.mark.parametrize("keys", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_a_finished_run_extended_follows_the_schedule_planned_for_the_new_length(cli, tmp_path, keys):
    runs = f"runs_dir={tmp_path}"
    assert cli("train", *FAST, *keys, "epochs=2", runs, "name=short").code == 0
    assert cli("train", *FAST, *keys, "epochs=4", runs, "name=long").code == 0
    resumed = cli("train", "--resume", tmp_path / "short", "epochs=4")
    assert resumed.code == 0, resumed.err
    short, long = learning_rates(tmp_path / "short"), learning_rates(tmp_path / "long")
    assert len(short) == 4
    # Epochs 3 and 4 run on the 4-epoch schedule (their end-of-epoch rates are the long run's), not on the
    # 2-epoch one continued past its end (torch's cosine climbs back up there; onecycle raises).
    assert short[2:] == pytest.approx(long[2:], rel=1e-9, abs=1e-12)
    if "sched.name=cosine" in keys:
        assert short[1] == pytest.approx(0.0, abs=1e-12) and short[2] > short[3]  # 0 at 2, then 4-epoch


def test_a_changed_schedule_on_resume_is_planned_anew(cli, tmp_path):
    runs = f"runs_dir={tmp_path}"
    assert cli("train", *FAST, "sched.name=cosine", "epochs=2", runs, "name=a").code == 0
    assert cli("train", *FAST, "sched.name=linear", "epochs=3", runs, "name=b").code == 0
    assert cli("train", "--resume", tmp_path / "a", "epochs=3", "sched.name=linear").code == 0
    assert learning_rates(tmp_path / "a")[2] == pytest.approx(learning_rates(tmp_path / "b")[2])


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_an_extended_run_resumes_bit_for_bit(cli, tmp_path, monkeypatch, precision):
    runs = f"runs_dir={tmp_path}"
    keys = [*FAST, "epochs=1", runs, "name=whole", "checkpoint_every_min=0", f"trainer.precision={precision}"]
    assert cli("train", *keys).code == 0
    shutil.copytree(tmp_path / "whole", tmp_path / "stopped")
    assert cli("train", "--resume", tmp_path / "whole", "epochs=3").code == 0
    # Stopped in the middle of the second extra epoch, then resumed as it is.
    send_at(monkeypatch, "vislab.resilience.RunGuard.on_train_batch_end", signal.SIGTERM, nth=12 + 5)
    stopped = cli("train", "--resume", tmp_path / "stopped", "epochs=3")
    assert stopped.code == 143 and "stopped by SIGTERM at epoch 3, batch 5/12" in stopped.err
    monkeypatch.undo()
    assert cli("train", "--resume", tmp_path / "stopped").code == 0
    assert learning_rates(tmp_path / "stopped") == learning_rates(tmp_path / "whole")
    for name in ("last", "best"):
        whole, stopped = (
            torch.load(tmp_path / r / "checkpoints" / f"{name}.ckpt") for r in ("whole", "stopped")
        )
        assert all(torch.equal(whole["state_dict"][k], v) for k, v in stopped["state_dict"].items())


def test_a_checkpoint_from_before_epochs_counted_from_1_resumes_in_one_numbering(tmp_path):
    from vislab.runs import EpochLog

    log = EpochLog(tmp_path / "metrics.csv", ["epoch", "val_top1"])
    log.load_state_dict({"rows": [{"epoch": 0, "val_top1": 0.5}, {"epoch": 1, "val_top1": 0.6}]})
    assert [row["epoch"] for row in log.rows] == [1, 2]  # the next epoch, written as 3, follows on
    log.load_state_dict({"rows": [{"epoch": 1, "val_top1": 0.5}]})
    assert [row["epoch"] for row in log.rows] == [1]
