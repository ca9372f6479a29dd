"""DDP beyond Lightning's own launcher, on this CPU with gloo: torchrun with two processes, two "nodes" on
127.0.0.1, a stop signal that reaches one rank, and validation that counts every image once."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import vislab
from vislab.distributed import disagreement
from vislab.resilience import READ_EVERY

from conftest import QUIET

STOPPER = Path(__file__).with_name("stopper.py")
# 359 validation images: an odd number, which two ranks cannot split evenly.
ARGS = [
    "data=digits",
    "val_fraction=0.2",
    "epochs=2",
    "batch_size=64",
    "trainer.strategy=ddp",
    "trainer.accelerator=cpu",
    *QUIET,
]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(*args, node_rank: int | None = None, port: int | None = None) -> subprocess.Popen:
    """`torchrun` starting `vislab ARGS` (or tests/stopper.py when ARGS start with it): two processes on
    one machine, or with `node_rank` one process of a two-node job whose rendezvous is 127.0.0.1:`port`."""
    if node_rank is None:
        launch = ["--standalone", "--nproc_per_node=2"]
    else:
        launch = ["--nnodes=2", f"--node_rank={node_rank}", "--nproc_per_node=1"]
        launch += ["--master_addr=127.0.0.1", f"--master_port={port}"]
    program = list(map(str, args)) if str(args[0]) == str(STOPPER) else ["-m", "vislab", *map(str, args)]
    command = [sys.executable, "-m", "torch.distributed.run", *launch, *program]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(process: subprocess.Popen) -> tuple[int, str]:
    output, _ = process.communicate(timeout=1800)  # only ends a hung job, far beyond a slow machine
    return process.returncode, output


def last_weights(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("model.")}


def metrics_without_times(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "metrics.csv").drop(columns="epoch_time_s")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    """An uninterrupted two-process torchrun run."""
    runs = tmp_path_factory.mktemp("runs")
    code, output = finished(torchrun("train", *ARGS, "trainer.devices=2", f"runs_dir={runs}", "name=ddp"))
    assert code == 0, output
    return runs / "ddp"


def test_torchrun_makes_one_run_folder_and_validates_every_image_once(two_processes):
    assert [p.name for p in two_processes.parent.iterdir()] == ["ddp"]
    run = vislab.Run(two_processes)
    assert run.summary["val_size"] == 359 and len(run.metrics) == 2
    # One process evaluating best.ckpt counts each of the 359 images once, as the two ranks did.
    metrics = run.load().evaluate()
    best = run.metrics.set_index("epoch").loc[run.summary["best_epoch"]]
    assert metrics["images"] == 359
    assert metrics["top1"] == pytest.approx(best["val_top1"], abs=1e-6)
    assert metrics["loss"] == pytest.approx(best["val_loss"], rel=1e-5)


def test_two_nodes_on_loopback_train_the_same_run(two_processes, tmp_path):
    port = free_port()
    args = ["train", *ARGS, "trainer.devices=1", "trainer.num_nodes=2", f"runs_dir={tmp_path}", "name=nodes"]
    nodes = [torchrun(*args, node_rank=rank, port=port) for rank in (0, 1)]
    for node in nodes:
        code, output = finished(node)
        assert code == 0, output
    assert [p.name for p in tmp_path.iterdir()] == ["nodes"]
    pd.testing.assert_frame_equal(
        metrics_without_times(tmp_path / "nodes"), metrics_without_times(two_processes)
    )


def test_a_sigterm_to_one_rank_stops_every_rank_at_one_step_and_resumes_bit_for_bit(two_processes, tmp_path):
    target = "vislab.resilience.RunGuard.on_train_batch_end"
    stopped = torchrun(
        STOPPER, "SIGTERM", target, 14, "--rank", 1, "--", "train", *ARGS, "trainer.devices=2",
        f"runs_dir={tmp_path}", "name=cut",
    )  # fmt: skip
    code, output = finished(stopped)
    assert code != 0
    # Rank 1 got the signal in epoch 2; the ranks vote every READ_EVERY steps (one all-reduce), so both
    # stopped after the same step, the first vote after the signal, and rank 0 saved it.
    (where, *others) = re.findall(r"stopped by SIGTERM at epoch 2, batch (\d+)/(\d+)", output)
    assert others == [where], output
    batch, batches = map(int, where)
    assert batches + batch == READ_EVERY  # the signal came before step 14; the next vote is step 16's
    run = tmp_path / "cut"
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "summary.json").exists()
    code, output = finished(torchrun("train", "--resume", run, "trainer.devices=2"))
    assert code == 0, output
    reference, resumed = last_weights(two_processes), last_weights(run)
    assert reference.keys() == resumed.keys()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    pd.testing.assert_frame_equal(metrics_without_times(run), metrics_without_times(two_processes))


def test_a_world_size_other_than_the_configs_is_one_line_from_rank_zero(tmp_path):
    code, output = finished(torchrun("train", *ARGS, "trainer.devices=3", f"runs_dir={tmp_path}"))
    line = "vislab: error: the launcher started 2 processes, but trainer.devices x trainer.num_nodes is 3 x 1"
    assert code != 0 and output.count(line) == 1, output
    assert list(tmp_path.iterdir()) == []


def test_ranks_that_disagree_are_named():
    config = {"model": "small_cnn", "epochs": 2}
    assert disagreement(Path("runs/x"), [("a", True, config), ("a", True, config)]) is None
    unseen = disagreement(Path("runs/x"), [("a", True, config), ("b", False, config)])
    assert unseen.startswith("rank 1 (on b) does not see the run folder runs/x that rank 0 made on a")
    other = disagreement(Path("runs/x"), [("a", True, config), ("a", True, {**config, "epochs": 3})])
    assert other == "rank 1 has another config than rank 0 (epochs): start every rank with the same"
