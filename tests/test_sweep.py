"""`vislab sweep` and `vislab.sweep()`: grids and sampled spaces as ordinary run folders, pruning, a sweep
stopped (SIGTERM) and killed (SIGKILL) that continues where it was, two workers sharing one study in a
real PostgreSQL server, and every bad input refused before anything starts. Data: the embedded digits."""

from __future__ import annotations

import csv
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
import yaml

import vislab
from vislab.runs import read_metrics

from conftest import QUIET, kill_when

QUICK = ["trainer.limit_train_batches=4", *QUIET]


def rows(study_dir: Path) -> list[dict]:
    with open(study_dir / "sweep.csv") as file:
        return list(csv.DictReader(file))


def test_a_grid_runs_every_point_once_in_two_jobs_and_python_continues_it(cli, tmp_path):
    args = ["sweep", "model=grid(mlp,small_cnn,resnet8)", "epochs=1", f"runs_dir={tmp_path}", *QUICK]
    result = cli(*args, "--jobs", "2")
    assert result.code == 0, result.err
    (study,) = tmp_path.iterdir()
    table = rows(study)
    assert [r["trial"] for r in table] == ["0", "1", "2"] and {r["state"] for r in table} == {"complete"}
    assert [r["model"] for r in table] == ["mlp", "small_cnn", "resnet8"]
    assert len({r["worker"] for r in table}) == 2, "two jobs, two processes"
    for row in table:  # every trial an ordinary run folder, its score the one its metrics.csv logged
        run = vislab.Run(row["run"])
        assert run.config.model == row["model"] and run.finished
        assert float(row["val_top1"]) == pytest.approx(run.metrics["val_top1"].max())
    page = (study / "sweep.html").read_text()
    assert "plotly" in page and "Optimization History" in page and "Best: trial" in page
    best = max(table, key=lambda r: float(r["val_top1"]))
    assert f"best: trial {best['trial']} model={best['model']}" in result.out

    # The same sweep from Python is the same study: every point is done, nothing runs again.
    before = {p: p.stat().st_mtime_ns for p in study.rglob("metrics.csv")}
    found = vislab.sweep(model="grid(mlp,small_cnn,resnet8)", epochs=1, runs_dir=tmp_path, overrides=QUICK)
    assert found.path == study and {p: p.stat().st_mtime_ns for p in study.rglob("metrics.csv")} == before
    assert list(found.trials["model"]) == ["mlp", "small_cnn", "resnet8"]
    best = found.trials.loc[found.trials["val_top1"].idxmax()]
    assert found.best.path == Path(best["run"]) and "3 of 3 trials" in found._repr_html_()


def test_sampled_spaces_stay_in_their_ranges_and_median_pruning_stops_a_poor_trial(cli, tmp_path):
    sampled = [
        "optim.lr=loguniform(2e-2,0.3)",  # 2e-2: YAML alone reads it as text
        "optim.weight_decay=uniform(0,1e-3)",
        "batch_size=int(16,64)",
        "model=choice(mlp,small_cnn)",
    ]
    result = cli(
        "sweep",
        *sampled,
        "--trials",
        "3",
        "--prune",
        "hyperband",
        "epochs=1",
        f"runs_dir={tmp_path}",
        "--study",
        "s",
        *QUICK,
    )
    assert result.code == 0, result.err
    table = rows(tmp_path / "s")
    assert len(table) == 3 and {r["state"] for r in table} == {"complete"}
    for row in table:
        assert 0.02 <= float(row["optim.lr"]) <= 0.3 and 0 <= float(row["optim.weight_decay"]) <= 0.001
        assert 16 <= int(row["batch_size"]) <= 64 and row["model"] in ("mlp", "small_cnn")
        saved = yaml.safe_load((Path(row["run"]) / "config.yaml").read_text())
        assert saved["optim"]["lr"] == pytest.approx(float(row["optim.lr"]))
        assert saved["batch_size"] == int(row["batch_size"])
    assert len({r["optim.lr"] for r in table}) == 3

    # Two good learning rates, then one far too small: behind the median after its first epochs, it stops.
    grid = ["optim.lr=grid(0.1,0.05,0.00001)", "epochs=3", f"runs_dir={tmp_path}", "--study", "p", *QUIET]
    result = cli("sweep", *grid, "--prune", "median")
    assert result.code == 0, result.err
    table = rows(tmp_path / "p")
    assert [r["state"] for r in table] == ["complete", "complete", "pruned"]
    poor = vislab.Run(table[2]["run"])
    assert (
        poor.finished and poor.summary["epochs_run"] < 3 == vislab.Run(table[0]["run"]).summary["epochs_run"]
    )
    assert "pruned at epoch" in result.err


def test_a_sweep_stopped_then_killed_continues_with_the_same_command_and_runs_no_trial_twice(cli, tmp_path):
    args = [
        "sweep",
        "optim.lr=grid(0.05,0.1,0.2)",
        "epochs=2",
        f"runs_dir={tmp_path}",
        "--study",
        "k",
        *QUIET,
    ]
    study = tmp_path / "k"

    def started() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "vislab", *args], stderr=subprocess.PIPE, text=True)

    def has_epochs(trial: int, count: int):
        metrics = study / f"trial-{trial}" / "metrics.csv"
        return lambda: metrics.is_file() and len(read_metrics(metrics.parent)) >= count

    def has_checkpoint(trial: int):
        return lambda: (study / f"trial-{trial}" / "checkpoints" / "last.ckpt").is_file()

    # SIGTERM in trial 0: it stops at its next step with a checkpoint, and the sweep says how to go on.
    process = started()
    while not has_epochs(0, 1)():
        assert process.poll() is None, process.stderr.read()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines()[-1] == (
        f"vislab: stopped by SIGTERM: running trials saved a checkpoint; run the same command again to "
        f"continue study k ({study})"
    )
    assert (study / "trial-0" / "checkpoints" / "last.ckpt").is_file()
    assert rows(study)[0]["state"] == "running"

    # SIGKILL in trial 1, after trial 0 has resumed and finished: nothing is said, nothing is lost.
    process = started()
    kill_when(process, has_checkpoint(1), "trial 1's first checkpoint")
    finished_first = (study / "trial-0" / "metrics.csv").stat().st_mtime_ns

    result = cli(*args)
    assert result.code == 0, result.err
    assert "trial 1 optim.lr=0.1 (resumed)" in result.err and "trial 0" not in result.err
    table = rows(study)
    assert [r["state"] for r in table] == ["complete"] * 3 and [r["optim.lr"] for r in table] == [
        "0.05",
        "0.1",
        "0.2",
    ]
    assert (study / "trial-0" / "metrics.csv").stat().st_mtime_ns == finished_first
    for trial in range(3):  # each epoch of each trial exactly once
        assert [row["epoch"] for row in read_metrics(study / f"trial-{trial}")] == [1, 2]
    stored = optuna.load_study(
        study_name="k",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(study / "optuna.journal"))
        ),
    )
    assert len(stored.trials) == 3


# ------------------------------------------------------------------------------------ PostgreSQL workers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not versions:
        pytest.skip("no PostgreSQL server here (Debian's postgresql package; .ci/run installs it)")
    return versions[-1].parent


@pytest.fixture
def postgres():
    """A real PostgreSQL server of its own, on a loopback port, in a temporary folder; its URL."""
    bin_dir, port = postgres_bin(), free_port()
    folder = Path(tempfile.mkdtemp(prefix="vislab-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: as Debian's postgres user
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    run = lambda *command: subprocess.run([*as_user, *map(str, command)], check=True, capture_output=True)  # noqa: E731
    run(bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "vislab")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", folder / "log", "-w", "start")
    try:
        run(bin_dir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "vislab", "sweeps")
        yield f"postgresql://vislab@127.0.0.1:{port}/sweeps"
    finally:
        run(bin_dir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_one_study_in_postgresql_and_run_exactly_the_trials_asked(postgres, tmp_path):
    def worker(machine: str) -> subprocess.Popen:  # two machines: each with its own runs folder
        command = [
            sys.executable, "-m", "vislab", "sweep", "--storage", postgres, "--study", "shared",
            "optim.lr=loguniform(0.01,0.3)", "--trials", "5", "epochs=1", f"runs_dir={tmp_path / machine}",
            *QUICK,
        ]  # fmt: skip
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    workers = [worker("a"), worker("b")]
    for process in workers:
        out, err = process.communicate(timeout=900)
        assert process.returncode == 0, err
    study = optuna.load_study(study_name="shared", storage=postgres)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3, 4]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    folders = sorted(p.name for p in tmp_path.glob("*/shared/trial-*"))
    assert folders == [f"trial-{n}" for n in range(5)], "each trial run once, on one of the machines"
    for machine in ("a", "b"):  # each machine's table lists the whole study
        assert len(rows(tmp_path / machine / "shared")) == 5


# -------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "words, line",
    [
        (["nokey=grid(1,2)"], "unknown config key 'nokey'"),
        (["optim.lr=uniform(1)"], "optim.lr=uniform(1): uniform() needs two numbers"),
        (["model=grid()"], "model=grid(): grid() needs one or more values"),
        (["optim.lr=loguniform(0,1)"], "loguniform() needs lo > 0"),
        (["epochs=uniform(1,3)", "--trials", "2"], "config key 'epochs': input should be a valid integer"),
        (["model=grid(mlp,nonet)"], "unknown model 'nonet'"),
        (["optim.lr=uniform(0.01,0.1)"], "--trials N is needed: optim.lr is sampled"),
        (["model=grid(mlp,small_cnn)", "--trials", "3"], "the grid has 2 points, and none runs twice"),
        (["model=grid(mlp,small_cnn)", "--jobs", "0"], "--jobs 0"),
        (["model=grid(mlp,small_cnn)", "--metric", "val_miou"], "--metric val_miou: a classification run"),
        (["epochs=2"], "nothing to search"),
        (["model=grid(mlp,small_cnn)", "test=true"], "test=true in a sweep would score every trial"),
        (["model=grid(mlp)", "--study", "../elsewhere"], "a study is named with letters"),
        (
            ["model=grid(mlp)", "--storage", "postgresql://nobody@127.0.0.1:1/none"],
            "cannot open the study storage",
        ),
    ],
)
def test_bad_input_is_one_line_and_starts_nothing(cli, tmp_path, words, line):
    result = cli("sweep", *words, f"runs_dir={tmp_path}")
    assert result.code == 2 and line in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert not any(tmp_path.iterdir())


def test_a_study_refuses_a_command_with_another_space(cli, tmp_path):
    first = cli("sweep", "model=grid(mlp)", "epochs=1", f"runs_dir={tmp_path}", "--study", "s", *QUICK)
    assert first.code == 0, first.err
    other = cli(
        "sweep", "model=grid(mlp,small_cnn)", "epochs=1", f"runs_dir={tmp_path}", "--study", "s", *QUICK
    )
    assert other.code == 2 and "study s in" in other.err and "searches model=grid(mlp)" in other.err
    assert sorted(p.name for p in (tmp_path / "s").glob("trial-*")) == ["trial-0"]
