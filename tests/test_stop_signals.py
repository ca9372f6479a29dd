"""A stop signal at any moment of any command ends it in one line with exit code 128+signal and leaves
nothing half-made: before training no run folder, after the last step a whole summary.json, during a
report or an export the old files or none. Each signal is sent at a point of the code (tests/stopper.py),
never after a number of seconds, so these tests pass at any machine speed."""

import signal

import pytest

from conftest import QUIET, copy_classes
from stopper import send_at

DIGITS = ["data=digits", "epochs=1", "batch_size=64", *QUIET]


def train(cli, tmp_path, *args, name="run"):
    return cli("train", *DIGITS, f"runs_dir={tmp_path}", f"name={name}", *args)


def last_line(result) -> str:
    assert "Traceback" not in result.err
    return result.err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "target",
    ["vislab.tasks.classification.module.load_dataset", "vislab.training.build_trainer"],
    ids=["while the data loads", "after the run folder was made"],
)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_before_training_leaves_no_run_folder(cli, tmp_path, monkeypatch, target, signum):
    send_at(monkeypatch, target, signum)
    result = train(cli, tmp_path)
    assert result.code == 128 + signum
    name = signal.Signals(signum).name
    assert last_line(result) == f"vislab: stopped by {name} before training finished; nothing was saved"
    assert not (tmp_path / "run").exists()


def test_a_signal_during_the_sanity_check_of_a_resumed_run_keeps_it_resumable(cli, tmp_path, monkeypatch):
    assert train(cli, tmp_path).code == 0
    run = tmp_path / "run"
    before = (run / "checkpoints" / "last.ckpt").read_bytes()
    send_at(monkeypatch, "vislab.tasks.classification.module.ClassificationModule.validation_step", 15)
    result = cli("train", "--resume", run, "epochs=2")
    assert result.code == 128 + 15
    assert (
        last_line(result)
        == f"vislab: stopped by SIGTERM before training finished; continue with: vislab train --resume {run}"
    )
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == before
    monkeypatch.undo()
    assert cli("train", "--resume", run, "epochs=2").code == 0


def test_a_signal_after_the_last_step_writes_the_summary_then_stops(cli, tmp_path, monkeypatch):
    send_at(monkeypatch, "vislab.training.summarize", signal.SIGUSR1)
    result = train(cli, tmp_path, "report=true")
    run = tmp_path / "run"
    assert result.code == 128 + signal.SIGUSR1
    assert last_line(result) == (
        "vislab: stopped by SIGUSR1 after training finished; checkpoints and summary.json are written; "
        f"write its report with: vislab report {run}"
    )
    assert (run / "summary.json").is_file() and not (run / "report").exists()
    monkeypatch.undo()
    assert cli("report", run, "--no-tsne").code == 0
    assert (run / "report" / "report.html").is_file()


def test_a_signal_at_the_end_of_the_last_epoch_ends_a_whole_run(cli, tmp_path, monkeypatch):
    send_at(monkeypatch, "vislab.resilience.RunGuard.on_train_epoch_end", signal.SIGTERM)
    result = train(cli, tmp_path, "epochs=1")
    assert result.code == 143
    assert "after training finished; checkpoints and summary.json are written" in last_line(result)
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert '"epochs_run": 1' in summary


def test_a_signal_during_the_report_leaves_none_and_names_the_command(cli, tmp_path, monkeypatch):
    send_at(monkeypatch, "vislab.tasks.classification.report.gallery_section", signal.SIGTERM)
    result = train(cli, tmp_path, "report=true")
    run = tmp_path / "run"
    assert result.code == 143
    assert last_line(result) == (
        "vislab: stopped by SIGTERM while writing the report, after training finished (summary.json is "
        f"written); write the report with: vislab report {run}"
    )
    assert (run / "summary.json").is_file()
    assert sorted(p.name for p in run.iterdir() if "report" in p.name) == []  # no report, no .report.tmp


def test_a_stopped_report_keeps_the_previous_one_whole(cli, tmp_path, monkeypatch):
    assert train(cli, tmp_path).code == 0
    run = tmp_path / "run"
    assert cli("report", run, "--no-tsne").code == 0
    before = {p.name: p.read_bytes() for p in (run / "report").iterdir()}
    send_at(monkeypatch, "vislab.tasks.classification.report.activation_section", signal.SIGTERM)
    result = cli("report", run, "--no-tsne")
    assert result.code == 143
    assert last_line(result) == "vislab: stopped by SIGTERM; vislab report wrote nothing it had not finished"
    assert {p.name: p.read_bytes() for p in (run / "report").iterdir()} == before
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


@pytest.fixture
def trained(cli, tmp_path):
    assert train(cli, tmp_path).code == 0
    return tmp_path / "run"


def test_a_signal_during_eval_writes_no_result(cli, trained, monkeypatch):
    send_at(monkeypatch, "vislab.runs.write_atomically", signal.SIGTERM)  # between the JSON and the CSV
    result = cli("eval", trained)
    assert result.code == 143
    assert last_line(result) == "vislab: stopped by SIGTERM; vislab eval wrote nothing it had not finished"
    assert not (trained / "confusion_val.csv").exists()
    assert not [p for p in trained.iterdir() if p.name.startswith(".")]


def test_a_signal_during_an_export_leaves_no_file(cli, trained, monkeypatch):
    # After torch.onnx wrote the file, while it is checked against PyTorch: not yet in its place.
    send_at(monkeypatch, "vislab.export.onnx_runner", signal.SIGINT)
    result = cli("export", trained, "--format", "onnx")
    assert result.code == 130
    assert last_line(result) == "vislab: stopped by SIGINT; vislab export wrote nothing it had not finished"
    assert list((trained / "export").iterdir()) == []
    monkeypatch.undo()
    assert cli("export", trained, "--format", "onnx").code == 0


def test_a_signal_during_predict_writes_no_table(cli, trained, tmp_path, cifar_jpgs, monkeypatch):
    send_at(monkeypatch, "vislab.predictions.write_atomically", signal.SIGTERM)
    out = tmp_path / "preds.csv"
    result = cli("predict", trained, cifar_jpgs / "test" / "cat", "--out", out)
    assert result.code == 143 and "vislab predict wrote nothing" in last_line(result)
    assert not out.exists()


def test_a_signal_during_check_and_augment(cli, tmp_path, cifar_jpgs, monkeypatch):
    photos = copy_classes(cifar_jpgs / "train", tmp_path / "photos", per_class=12, classes=3)
    send_at(monkeypatch, "vislab.check.write_page", signal.SIGTERM)
    result = cli("check", f"folder:{photos}", "--no-labels", "--out", tmp_path / "audit")
    assert result.code == 143 and "vislab check wrote nothing" in last_line(result)
    assert not (tmp_path / "audit" / "check.html").exists()
    monkeypatch.undo()

    send_at(monkeypatch, "vislab.data.offline.save_png", signal.SIGTERM, nth=5)
    out = tmp_path / "augmented"
    result = cli("augment", f"folder:{photos}", out, "--copies", "1")
    assert result.code == 143 and "vislab augment wrote nothing" in last_line(result)
    assert not list(out.rglob(".*.tmp*"))
    monkeypatch.undo()
    assert cli("augment", f"folder:{photos}", out, "--copies", "1").code == 0  # resumes


def test_a_second_ctrl_c_stops_at_once_while_the_checkpoint_is_saved(cli, tmp_path, monkeypatch):
    # The first Ctrl-C in epoch 2 asks for a checkpoint; the second comes as that checkpoint is saved (the
    # third save: best.ckpt and last.ckpt of epoch 1 were the first two).
    send_at(monkeypatch, "vislab.resilience.RunGuard.on_train_batch_end", signal.SIGINT, nth=25 + 3)
    send_at(monkeypatch, "vislab.checkpoint.AtomicCheckpointIO.save_checkpoint", signal.SIGINT, nth=3)
    result = train(cli, tmp_path, "epochs=2", "checkpoint_every_min=0")
    run = tmp_path / "run"
    assert result.code == 130
    assert (
        last_line(result)
        == f"vislab: stopped by SIGINT before training finished; continue with: vislab train --resume {run}"
    )
    checkpoints = run / "checkpoints"
    assert not list(checkpoints.glob(".*.tmp*"))
    monkeypatch.undo()
    assert cli("train", "--resume", run).code == 0  # from epoch 1's checkpoint, which was left whole
