"""Training survives being stopped and killed, and gives nothing back for a bad file but a one-line error:
signals save a mid-epoch checkpoint that resumes bit for bit, a kill during a checkpoint write loses
nothing, a full disk and a diverging loss stop cleanly, crafted files run no code."""

import csv
import os
import pickle
import resource
import shutil
import signal
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
import torch

from vislab.checkpoint import read_checkpoint
from vislab.cli import main
from vislab.errors import VislabError
from vislab.runs import create_run_dir

from conftest import QUIET, copy_classes, small_copy

DIGITS = ["model=resnet8", "epochs=3", "batch_size=16", "augment.mixup=0.2", *QUIET]


STOPPER = Path(__file__).with_name("stopper.py")


def start(*args, stop_at: tuple | None = None, **popen) -> subprocess.Popen:
    """`vislab ARGS` as its own process group, as a shell or a scheduler would start it; with
    `stop_at=(SIGNAL, TARGET, N[, "--after"])` sending SIGNAL to that group at the N-th call of TARGET
    (tests/stopper.py): at a point of the code, whatever the machine's speed."""
    vislab = [str(STOPPER), *map(str, stop_at), "--"] if stop_at else ["-m", "vislab"]
    return subprocess.Popen(
        [sys.executable, *vislab, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **popen,
    )


def rows(run) -> list[dict]:
    """metrics.csv without its one timing column."""
    with open(run / "metrics.csv") as file:
        return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in csv.DictReader(file)]


def weights(run, name: str = "last") -> dict:
    return torch.load(run / "checkpoints" / f"{name}.ckpt", weights_only=True)["state_dict"]


def assert_same_run(a, b) -> None:
    assert rows(a) == rows(b)
    for name in ("last", "best"):
        left, right = weights(a, name), weights(b, name)
        assert left.keys() == right.keys()
        assert all(torch.equal(left[k], right[k]) for k in left), f"{name}.ckpt differs"


def assert_resumes_like(run, reference) -> None:
    """`vislab train --resume RUN` finishes, and the run ends exactly like `reference`. (In this process:
    only the stop needs a process of its own.)"""
    assert main(["train", "--resume", str(run)]) == 0
    assert_same_run(run, reference)


def position(run) -> tuple[int, int]:
    """(epoch, batches done in it) of a run's last checkpoint."""
    checkpoint = read_checkpoint(run / "checkpoints" / "last.ckpt")
    progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    return checkpoint["epoch"], progress["processed"]


def stop_mid_epoch(tmp_path, args: list, signal_name: str, batch: int):
    """Starts a run and sends `signal_name` to its process group just before the end of its `batch`-th
    training batch (counted from 1 over all epochs); returns the finished process's exit code, its
    stderr and the run folder."""
    run = tmp_path / "stopped"
    at = (signal_name, "vislab.resilience.RunGuard.on_train_batch_end", batch)
    process = start(
        "train", *args, f"runs_dir={tmp_path}", "name=stopped", "checkpoint_every_min=0", stop_at=at
    )
    out, err = process.communicate(timeout=600)
    return process.returncode, err, run


@pytest.fixture(scope="module")
def digits_reference(tmp_path_factory):
    runs = tmp_path_factory.mktemp("reference")
    assert main(["train", *DIGITS, f"runs_dir={runs}", "name=reference"]) == 0
    return runs / "reference"


def test_sigterm_mid_epoch_saves_a_checkpoint_that_resumes_bit_for_bit(tmp_path, digits_reference):
    code, err, run = stop_mid_epoch(tmp_path, DIGITS, "SIGTERM", batch=101 + 21)
    assert code == 143, err
    message = err.strip().splitlines()[-1]
    assert message.startswith("vislab: stopped by SIGTERM at epoch 2, batch 21/101")
    assert f"vislab train --resume {run}" in message and "Traceback" not in err
    assert position(run) == (1, 21)  # 1,616 digits / 16 = 101 batches an epoch
    assert not (run / "summary.json").exists()
    assert_resumes_like(run, digits_reference)


def test_sigkill_while_a_checkpoint_is_written_loses_nothing(tmp_path, digits_reference):
    run = tmp_path / "killed"
    # Killed once the fourth checkpoint's temporary file is written but not yet renamed into place (the
    # first epoch's best.ckpt and last.ckpt are the first two).
    at = ("KILL", "vislab.checkpoint.os.fsync", 4, "--after")
    process = start(
        "train", *DIGITS, f"runs_dir={tmp_path}", "name=killed", "checkpoint_every_min=0", stop_at=at
    )
    assert process.wait(timeout=600) == -signal.SIGKILL
    checkpoints = run / "checkpoints"
    assert list(checkpoints.glob(".*.tmp.ckpt"))  # the kill came in the middle of a save
    read_checkpoint(checkpoints / "last.ckpt")  # the previous checkpoint is whole
    assert_resumes_like(run, digits_reference)
    assert not list(checkpoints.glob(".*.tmp*"))


def test_ctrl_c_on_a_streamed_folder_run_with_workers_resumes_bit_for_bit(tmp_path, cifar_jpgs):
    photos = copy_classes(cifar_jpgs / "train", tmp_path / "photos", per_class=40)
    args = [
        f"data=folder:{photos}",
        "in_memory=false",
        "num_workers=2",
        "model=resnet8",
        "epochs=3",
        "batch_size=16",
        "augment.randaugment_n=1",
        *QUIET,
    ]
    assert main(["train", *args, f"runs_dir={tmp_path}", "name=reference"]) == 0
    # SIGINT to the whole process group, as Ctrl-C in a terminal: the workers leave it to the trainer.
    code, err, run = stop_mid_epoch(tmp_path, args, "SIGINT", batch=30)
    assert code == 130, err
    assert "stopped by SIGINT" in err and "Traceback" not in err
    assert position(run)[1] > 0
    assert_resumes_like(run, tmp_path / "reference")


def test_sigusr1_on_a_segmentation_run_resumes_bit_for_bit(tmp_path, camvid):
    data = small_copy(camvid, tmp_path / "camvid", train=48, val=4)
    args = [
        f"data=segfolder:{data}",
        "segmentation.ignore_index=11",
        "image_size=64",
        "epochs=3",
        "batch_size=2",
    ]
    args += QUIET
    assert main(["train", *args, f"runs_dir={tmp_path}", "name=reference"]) == 0
    code, err, run = stop_mid_epoch(tmp_path, args, "SIGUSR1", batch=24 + 5)
    assert code == 128 + signal.SIGUSR1, err
    assert position(run) == (1, 5)  # 48 images / 2 = 24 batches an epoch
    assert_resumes_like(run, tmp_path / "reference")


def test_a_full_disk_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path):
    assert main(["train", f"runs_dir={tmp_path}", "name=run", "epochs=1", *QUIET]) == 0
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()

    def small_file_limit():  # a real limit on file size: writes past it fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, len(before) // 2))

    process = start("train", "--resume", tmp_path / "run", "epochs=3", preexec_fn=small_file_limit)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1, err
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert "File too large" in message and f"{last} is intact" in message
    assert last.read_bytes() == before  # untouched, and loadable
    read_checkpoint(last)
    assert not list(last.parent.glob(".*.tmp*"))


def test_a_diverging_loss_stops_before_the_weights_change_and_resumes_with_a_lower_rate(tmp_path, cli):
    assert main(["train", f"runs_dir={tmp_path}", "name=run", "epochs=1", *QUIET]) == 0
    run, same_rate = tmp_path / "run", tmp_path / "same_rate"
    shutil.copytree(run, same_rate)
    before = (run / "checkpoints" / "last.ckpt").read_bytes()
    diverged = cli("train", "--resume", run, "epochs=2", "optim.lr=1e30")
    assert diverged.code == 1, diverged.err
    message = diverged.err.strip().splitlines()[-1]
    assert "the training loss became" in message and "at epoch 2, batch" in message
    assert "last good checkpoint) is untouched" in message and f"--resume {run} optim.lr=1e+29" in message
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == before
    # Resumed at a fifth of the rate, the restored schedule is scaled to it, and the run finishes.
    assert main(["train", "--resume", str(run), "epochs=3", "optim.lr=0.01"]) == 0
    assert main(["train", "--resume", str(same_rate), "epochs=3"]) == 0
    scaled, unscaled = (float(rows(r)[1]["lr"]) for r in (run, same_rate))
    assert unscaled > 0 and scaled == pytest.approx(unscaled * 0.2)
    assert float(rows(run)[1]["val_top1"]) > 0.15  # learning again (10 classes: chance is 0.1)


def test_a_crafted_checkpoint_runs_no_code_wherever_it_is_loaded(cli, tmp_path):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    crafted = tmp_path / "crafted.ckpt"
    crafted.write_bytes(pickle.dumps({"vislab": {}, "state_dict": Payload()}))
    torch_saved = tmp_path / "torch_saved.ckpt"
    torch.save({"state_dict": {"model.w": torch.zeros(1)}, "vislab": Payload()}, torch_saved)
    run = tmp_path / "runs" / "victim"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("data: digits\n")
    (run / "checkpoints" / "last.ckpt").write_bytes(torch_saved.read_bytes())
    for args in [
        ("eval", crafted),
        ("predict", torch_saved, tmp_path),
        ("report", run),
        ("export", torch_saved),
        ("train", "--resume", run),
        ("train", f"weights={crafted}", f"runs_dir={tmp_path / 'runs'}", "epochs=1", *QUIET),
    ]:
        result = cli(*args)
        assert result.code == 2, (args, result.err)
        assert "vislab: error:" in result.err and "Traceback" not in result.err
    assert not marker.exists()


def write_bomb(path) -> None:
    """A valid 1-bit PNG of 20,000 x 20,000 pixels: 60 KB on disk, 1.2 GB once decoded to RGB."""
    side = 20_000
    rows = (b"\x00" + bytes(side // 8)) * side  # each row: a filter byte, then 1 bit per pixel

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    path.write_bytes(png)


@pytest.mark.parametrize("fault", ["bomb", "truncated", "empty", "text_named_jpg"])
def test_bad_images_are_named_in_one_line_or_skipped(cli, tmp_path, cifar_jpgs, fault):
    root = copy_classes(cifar_jpgs / "test", tmp_path / "photos", per_class=6, classes=3)
    bad = root / "bird" / ("bad.png" if fault == "bomb" else "bad.jpg")
    if fault == "bomb":
        write_bomb(bad)
    elif fault == "truncated":
        bad.write_bytes(next((cifar_jpgs / "test" / "cat").iterdir()).read_bytes()[:300])
    elif fault == "empty":
        bad.write_bytes(b"")
    else:
        bad.write_text("this is not a photo\n")
    runs = tmp_path / "runs"
    result = cli("train", f"data=folder:{root}", f"runs_dir={runs}", "epochs=1", *QUIET)
    assert result.code == 2 and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1 and str(bad) in result.err
    if fault == "bomb":
        assert "decompression bomb" in result.err
    skipped = cli(
        "train", f"data=folder:{root}", f"runs_dir={runs}", "name=ok", "epochs=1", "skip_bad_images=true"
    )
    assert skipped.code == 0, skipped.err
    assert (runs / "ok" / "skipped_images.txt").read_text().split() == [str(bad)]


def test_predict_names_a_decompression_bomb(cli, tmp_path, digits_reference):
    bomb = tmp_path / "huge.png"
    write_bomb(bomb)
    result = cli("predict", digits_reference, bomb)
    assert result.code == 2 and "decompression bomb" in result.err and str(bomb) in result.err


def test_two_runs_started_together_with_one_name_never_share_a_folder(tmp_path):
    outcomes: list = []

    def create(name):
        try:
            outcomes.append(create_run_dir(tmp_path, name, "digits", "small_cnn"))
        except VislabError as error:
            outcomes.append(error)

    threads = [threading.Thread(target=create, args=("same",)) for _ in range(8)]
    threads += [threading.Thread(target=create, args=(None,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    folders = [o for o in outcomes if not isinstance(o, VislabError)]
    assert len(folders) == len(set(folders)) == 9  # one "same" and eight numbered ones
    assert sum(isinstance(o, VislabError) and "already exists" in str(o) for o in outcomes) == 7


def test_photo_augmentations_and_lookahead_resume_bit_for_bit_after_a_mid_epoch_stop(tmp_path, cifar_jpgs):
    """Random resized crop, rotation and hue draw per image from the batch's position, alternating flips
    from the epoch; lookahead's slow weights are saved with the checkpoint; airbench's whitening bias,
    frozen from epoch 2, is frozen again when that epoch resumes: a run stopped mid-epoch and resumed
    ends exactly like an uninterrupted one."""
    args = [
        f"data=folder:{cifar_jpgs}",
        "model=airbench",
        "model_args={widths: [8, 16, 16], whiten_bias_epochs: 1}",
        "optim.lookahead_after=0",
        "epochs=2",
        "batch_size=16",
        "augment.crop_scale=0.5",
        "augment.rotation=15",
        "augment.hue=0.1",
        "augment.hflip=alternate",
        *QUIET,
    ]
    assert main(["train", *args, f"runs_dir={tmp_path}", "name=reference"]) == 0
    # Step 125: a step lookahead pulls at (every 5th), whose pull the stop's checkpoint must hold.
    code, err, run = stop_mid_epoch(tmp_path, args, "SIGTERM", batch=112 + 13)
    assert code == 143, err
    assert position(run) == (1, 13)  # 1,800 train images / 16: 112 whole batches an epoch
    assert_resumes_like(run, tmp_path / "reference")
