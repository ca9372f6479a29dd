"""The web UI's job queue and Stop without a browser: a stop reaches only the process that trains the run
(never another given its recorded id after a kill or a restart), a run is resumed once however often
Resume is pressed, queued jobs can be cancelled, and exit codes and shell advice become words."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vislab.errors import VislabError
from vislab.files import process_identity
from vislab.ui.common import page_words
from vislab.ui.jobs import Job, JobQueue, run_state, training_process
from vislab.ui.train_tab import job_words


@pytest.fixture
def sleeper():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="process start times are read from /proc")
def test_a_stop_reaches_only_the_process_recorded_for_the_run(tmp_path, sleeper):
    run = tmp_path / "run"
    run.mkdir()
    progress = {"pid": sleeper.pid, "process": process_identity(sleeper.pid)}
    (run / "progress.json").write_text(json.dumps(progress))
    assert training_process(progress) == sleeper.pid and run_state(run) == "training"
    # The same id, but the record is of another process (an earlier boot, or one that died since).
    reused = progress | {"process": "another-boot:12345"}
    (run / "progress.json").write_text(json.dumps(reused))
    assert training_process(reused) is None and run_state(run) == "new"
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert run_state(run) == "stopped"
    # A run that ended in a process that lives on (a notebook's kernel) is not training either.
    ended = progress | {"state": "ended"}
    assert training_process(ended) is None and training_process(progress, run) == sleeper.pid
    (run / "summary.json").write_text("{}")
    assert training_process(progress, run) is None


def test_a_run_is_resumed_once_and_queued_jobs_can_be_cancelled(tmp_path, monkeypatch):
    monkeypatch.setattr(JobQueue, "work", lambda self: None)  # jobs stay queued: nothing is started
    queue = JobQueue(tmp_path)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(VislabError, match="cannot resume run: it has no checkpoint yet"):
        queue.resume(run)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    first = queue.resume(run)
    with pytest.raises(VislabError, match=r"run is already queued \(job 1\)"):
        queue.resume(run)
    assert [job.number for job in queue.jobs] == [first.number]
    queue.train(["data=digits"])
    assert queue.cancel_queued() == "cancelled: job 1, job 2"
    assert {job.state for job in queue.jobs} == {"cancelled"}
    with pytest.raises(VislabError, match="no job is waiting"):
        queue.cancel_queued()
    assert queue.resume(run).number == 3  # a cancelled resume holds nothing


def test_endings_and_shell_advice_are_said_in_words(tmp_path):
    stopped = Job(1, [], tmp_path / "log", state="stopped", exit_code=143)
    assert "143" not in job_words(stopped) and "Resume continues" in job_words(stopped)
    refused = Job(2, [], tmp_path / "log", state="failed", exit_code=2)
    assert job_words(refused).startswith("refused")
    line = "vislab: stopped by SIGTERM at epoch 2, batch 5/30; continue with: vislab train --resume runs/a"
    assert page_words(line).endswith("; press Resume to continue")
    void = "mask m.png holds [11]: no class (0..10) and not ignore (255); if 11 marks pixels to leave out "
    void += "(void), set segmentation.ignore_index=11"
    assert page_words(void).endswith("put segmentation.ignore_index=11 in 'more keys'")
    assert page_words("unknown model 'x': see 'vislab models'") == "unknown model 'x': see the model list"
    assert page_words("(set image_size=32)") == "(put image_size=32 in 'more keys')"
    spaced = "stopped; continue with: vislab train --resume /my runs/a b"
    assert page_words(spaced) == "stopped; press Resume to continue"


def test_report_figures_are_named_in_words():
    from vislab.ui.results_tab import figure_name

    classes = ["데이지", "rose", "tulip"]
    assert figure_name("confusion_0_2", classes) == "true 데이지, predicted tulip"
    assert (
        figure_name("per_class", classes) == "scores per class"
        and figure_name("curves", []) == "training curves"
    )
    assert figure_name("confusion_7_9", classes) == "confusion 7 9"  # not of these classes: as written
    assert figure_name("some_new_figure", classes) == "some new figure"
