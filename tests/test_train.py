import csv
import json
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from vislab.cli import main

from conftest import QUIET, copy_classes, kill_when, run_subprocess


def read_rows(path):
    with open(path) as file:
        return list(csv.DictReader(file))


def test_default_train_reaches_97_percent_on_digits_and_fills_the_run_folder(cli, tmp_path):
    result = cli("train", f"runs_dir={tmp_path}", *QUIET)
    assert result.code == 0, result.err
    run = tmp_path / "digits-small_cnn-1"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_val_top1"] >= 0.97 and summary["final_val_top1"] >= 0.97
    assert summary["epochs_run"] == 30 and summary["params"] > 0 and summary["train_images_per_s"] > 0
    assert "take about" not in result.err  # a run of seconds is not warned about
    assert {"best_epoch", "final_val_loss", "wall_time_s", "device", "versions"} <= set(summary)
    rows = read_rows(run / "metrics.csv")
    assert len(rows) == 30 and list(rows[0]) == [
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_top1",
        "val_top5",
        "lr",
        "epoch_time_s",
    ]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"] == "small_cnn" and saved["augment"]["hflip"] is False and len(saved["mean"]) == 1


def test_a_run_of_over_an_hour_is_warned_about_once_its_first_steps_are_timed(tmp_path):
    """The terminal's counterpart of the web page's estimate before Start: the same line, from the speed
    measured on the run's own first steps; the run goes on (stopped here by a signal)."""
    log = tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "vislab", "train", "epochs=100000", "batch_size=16"]
    with log.open("w") as err:
        process = subprocess.Popen([*command, f"runs_dir={tmp_path}", *QUIET], stderr=err)
        deadline = time.monotonic() + 600  # only for a hung run
        while "take about" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=600) == 128 + signal.SIGTERM
    warnings = [line for line in log.read_text().splitlines() if "take about" in line]
    assert len(warnings) == 1, log.read_text()
    assert re.fullmatch(
        r"vislab: warning: the \d+ epochs left of small_cnn \(timed on its first steps\) take about "
        r"\d+ h \d\d min here: lower epochs or image_size, or choose a smaller model",
        warnings[0],
    ), warnings[0]


def test_runs_never_overwrite_each_other(cli, tmp_path):
    quick = [f"runs_dir={tmp_path}", "epochs=1", "trainer.limit_train_batches=2", *QUIET]
    assert cli("train", *quick).code == 0 and cli("train", *quick).code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits-small_cnn-1", "digits-small_cnn-2"]
    assert cli("train", "name=mine", *quick).code == 0
    again = cli("train", "name=mine", *quick)
    assert again.code == 2 and "already exists" in again.err


def test_a_short_run_on_real_cifar10_jpegs_learns(cli, tmp_path, cifar_jpgs):
    result = cli(
        "train",
        f"data=folder:{cifar_jpgs}",
        "model=resnet8",
        "epochs=6",
        "batch_size=64",
        "optim.lr=0.1",
        "name=cifar",
        f"runs_dir={tmp_path}",
        *QUIET,
    )
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "cifar" / "summary.json").read_text())
    assert summary["best_val_top1"] > 0.3  # chance is 0.1


@pytest.mark.parametrize(
    "options",
    [
        ["optim.name=adamw", "optim.lr=0.003", "sched.name=onecycle", "trainer.ema_decay=0.9"],
        ["optim.name=adam", "optim.lr=0.001", "sched.name=plateau", "trainer.gradient_clip_val=1.0"],
        ["sched.name=multistep", "sched.milestones=[1]", "sched.warmup_epochs=0.5", "label_smoothing=0.1"],
        [
            "sched.name=step",
            "sched.step_size=1",
            "trainer.accumulate_grad_batches=2",
            "trainer.channels_last=true",
        ],
        [
            "augment.mixup=0.2",
            "augment.cutmix=1.0",
            "augment.randaugment_n=2",
            "augment.cutout=4",
            "augment.color_jitter=0.3",
            "model=preact_resnet8",
            "trainer.deterministic=true",
        ],
    ],
)
def test_training_strategies_run_end_to_end(cli, tmp_path, options):
    result = cli(
        "train",
        f"runs_dir={tmp_path}",
        "name=run",
        "epochs=2",
        "trainer.limit_train_batches=4",
        *options,
        *QUIET,
    )
    assert result.code == 0, result.err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs_run"] == 2


def test_early_stopping_stops_when_the_monitored_metric_stalls(cli, tmp_path):
    result = cli(
        "train",
        f"runs_dir={tmp_path}",
        "name=run",
        "epochs=10",
        # No epoch can beat the first by more than 1.0 in top-1, whatever the machine's numerics (a run at
        # lr=0 still moves its BatchNorm statistics, and its accuracy with them).
        "early_stopping.min_delta=1.0",
        "early_stopping.patience=2",
        *QUIET,
    )
    assert result.code == 0, result.err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs_run"] == 3


RESUME_RUN = [
    "model=resnet8",
    "epochs=5",
    "batch_size=32",
    "augment.mixup=0.2",
    "augment.cutout=4",
    "augment.randaugment_n=1",
    "model_args={width: 8}",
    *QUIET,
]


def test_a_run_killed_with_sigkill_and_resumed_ends_exactly_like_an_uninterrupted_one(tmp_path):
    assert main(["train", f"runs_dir={tmp_path}", "name=full", *RESUME_RUN]) == 0  # the kill needs a process
    command = [sys.executable, "-m", "vislab", "train", f"runs_dir={tmp_path}", "name=killed", *RESUME_RUN]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.csv"
    # Killed once two epochs are done (metrics.csv is replaced whole, never read half-written): in the
    # middle of the third epoch, or in the second's checkpoint save, which is atomic either way.
    kill_when(process, lambda: metrics.is_file() and len(read_rows(metrics)) >= 2, "its second epoch's row")
    assert len(read_rows(metrics)) < 5
    assert main(["train", "--resume", str(tmp_path / "killed")]) == 0

    def results(name):
        rows = read_rows(tmp_path / name / "metrics.csv")
        return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in rows]

    assert results("killed") == results("full")
    weights = [
        torch.load(tmp_path / n / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for n in ("full", "killed")
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_two_process_gloo_ddp_on_cpu_trains_one_run_and_rank_zero_scores_the_test_split(tmp_path, cifar_jpgs):
    result = run_subprocess(
        "train",
        f"data=folder:{cifar_jpgs}",
        f"runs_dir={tmp_path}",
        "name=ddp",
        "epochs=3",
        "batch_size=32",
        "test=true",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        *QUIET,
    )
    assert result.code == 0, result.err
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["epochs_run"] == 3 and summary["final_val_top1"] > 0.15  # real CIFAR-10: chance 0.1
    scored = json.loads((tmp_path / "ddp" / "eval_test.json").read_text())
    assert scored["images"] == 500 and result.out.count("test: loss") == 1  # scored once, by rank 0


def test_ddp_refuses_a_layer_frozen_part_way_with_one_line_and_leaves_no_run_folder(tmp_path, cifar_jpgs):
    result = run_subprocess(
        "train",
        f"data=folder:{cifar_jpgs}",
        "model=airbench",
        "model_args={widths: [8, 16, 16], whiten_bias_epochs: 1}",
        f"runs_dir={tmp_path}",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        *QUIET,
    )
    assert result.code == 2, result.err
    assert "freezes a layer part-way through the run (model_args), which DDP cannot follow" in result.err
    assert "Traceback" not in result.err and not any(tmp_path.iterdir())


def test_streamed_folder_data_trains_and_evaluates_through_dataloader_workers(cli, tmp_path, cifar_jpgs):
    result = cli(
        "train",
        f"data=folder:{cifar_jpgs}",
        "in_memory=false",
        "num_workers=2",
        "model=resnet8",
        "epochs=1",
        "trainer.limit_train_batches=5",
        "augment.randaugment_n=1",
        "name=stream",
        f"runs_dir={tmp_path}",
        *QUIET,
    )
    assert result.code == 0, result.err
    saved = yaml.safe_load((tmp_path / "stream" / "config.yaml").read_text())
    assert saved["in_memory"] is False and len(saved["mean"]) == 3
    evaluated = cli("eval", tmp_path / "stream", "--split", "test")
    assert evaluated.code == 0 and "(500 images)" in evaluated.out


def test_skipped_images_are_listed_in_the_run_folder(cli, tmp_path, cifar_jpgs):
    root = copy_classes(cifar_jpgs / "test", tmp_path / "photos", per_class=10, classes=3)
    (root / "bird" / "empty.jpg").write_bytes(b"")
    result = cli(
        "train",
        f"data=folder:{root}",
        "skip_bad_images=true",
        "epochs=1",
        "name=skip",
        f"runs_dir={tmp_path / 'runs'}",
        *QUIET,
    )
    assert result.code == 0, result.err
    assert "skipped 1 unreadable images" in result.err
    listed = (tmp_path / "runs" / "skip" / "skipped_images.txt").read_text().split()
    assert listed == [str(root / "bird" / "empty.jpg")]
