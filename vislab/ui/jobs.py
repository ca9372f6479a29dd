"""Training jobs started from the web UI: each is a `vislab train` process of its own (the page stays
responsive, and closing the browser stops nothing), run one at a time from a queue. What a run is doing
is read from its folder (progress.json, metrics.csv), never from the process, so runs started elsewhere,
or before the UI was restarted, show the same way."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from vislab.errors import VislabError
from vislab.files import same_process
from vislab.plugins import import_arguments

RUN_FOLDER_LINE = re.compile(r"^vislab: run folder (.+)$", re.MULTILINE)


@dataclass
class Job:
    number: int
    args: list[str]  # after `vislab <command>`
    log: Path
    command: str = "train"  # or "sweep": a grid, its trials one after another
    state: str = "queued"  # queued, running, finished, stopped, failed, cancelled
    process: subprocess.Popen | None = None
    run_dir: Path | None = None
    exit_code: int | None = None
    queued_at: float = field(default_factory=time.time)

    @property
    def title(self) -> str:
        return f"vislab {self.command} " + " ".join(self.args)

    def find_run_dir(self) -> Path | None:
        """The run folder, from the line `vislab train` prints once it has created it (a sweep's: the
        trial it trains now, the last such line)."""
        if (self.run_dir is None or self.command == "sweep") and self.log.is_file():
            found = RUN_FOLDER_LINE.findall(self.log.read_text(errors="replace"))
            if found:
                self.run_dir = Path(found[0 if self.command == "train" else -1].strip())
        return self.run_dir


class JobQueue:
    """Starts queued jobs one after another in a background thread; stops one with SIGTERM, which makes
    `vislab train` save a resumable checkpoint after the current step."""

    def __init__(self, runs_dir: Path, poll_s: float = 0.5):
        self.runs_dir = runs_dir
        self.logs = runs_dir / ".ui" / "logs"
        self.jobs: list[Job] = []
        self.lock = threading.Lock()
        self.wakeup = threading.Event()
        self.poll_s = poll_s
        threading.Thread(target=self.work, daemon=True, name="vislab-jobs").start()

    def submit(self, args: list[str], command: str = "train") -> Job:
        with self.lock:
            job = self.add(args, command)
        self.wakeup.set()
        return job

    def add(self, args: list[str], command: str, run_dir: Path | None = None) -> Job:
        """A queued job (the caller holds the lock)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        number = len(self.jobs) + 1
        job = Job(number, args, self.logs / f"job-{number}-{int(time.time())}.log", command, run_dir=run_dir)
        self.jobs.append(job)
        return job

    def train(self, config_args: list[str], command: str = "train") -> Job:
        """A `vislab train` job (`vislab sweep` with a sweep's words) writing into the UI's runs folder."""
        return self.submit([*config_args, f"runs_dir={self.runs_dir}", "trainer.progress_bar=false"], command)

    def resume(self, run_dir: Path) -> Job:
        """One resume of a run at a time: a second click while one is queued or running is refused."""
        if not (run_dir / "checkpoints" / "last.ckpt").is_file():
            raise VislabError(f"cannot resume {run_dir.name}: it has no checkpoint yet")
        with self.lock:
            waiting = self.running_in(run_dir)
            if waiting is not None:
                raise VislabError(f"{run_dir.name} is already {waiting.state} (job {waiting.number})")
            if training_process(read_progress(run_dir), run_dir):
                raise VislabError(f"{run_dir.name} is still training")
            job = self.add(["--resume", str(run_dir)], "train", run_dir)
        self.wakeup.set()
        return job

    def current(self) -> Job | None:
        return next((job for job in self.jobs if job.state == "running"), None)

    def running_in(self, run_dir: Path) -> Job | None:
        return next(
            (j for j in self.jobs if j.state in ("running", "queued") and j.find_run_dir() == run_dir), None
        )

    def cancel_queued(self) -> str:
        with self.lock:
            waiting = [job for job in self.jobs if job.state == "queued"]
            for job in waiting:
                job.state = "cancelled"
        if not waiting:
            raise VislabError("no job is waiting in the queue")
        return "cancelled: " + ", ".join(f"job {job.number}" for job in waiting)

    def stop(self, job: Job) -> str:
        """Queued: cancelled. Running: SIGTERM (a checkpoint after the current step, then exit)."""
        with self.lock:
            if job.state == "queued":
                job.state = "cancelled"
                return f"job {job.number} cancelled"
            if job.state != "running" or job.process is None:
                return f"job {job.number} is not running"
            os.killpg(job.process.pid, signal.SIGTERM)
        return f"job {job.number}: asked to stop; it saves a checkpoint after the current step"

    def work(self) -> None:
        while True:
            self.wakeup.wait(self.poll_s)
            self.wakeup.clear()
            with self.lock:
                running = self.current()
                if running is not None and running.process.poll() is not None:
                    self.finish(running)
                    running = None
                waiting = next((job for job in self.jobs if job.state == "queued"), None)
                if running is None and waiting is not None:
                    self.start(waiting)

    def start(self, job: Job) -> None:
        with open(job.log, "ab") as log:
            job.process = subprocess.Popen(
                # with the user's own model code the UI imported (--import, a reference typed in)
                [sys.executable, "-m", "vislab", job.command, *import_arguments(), *job.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: a stop reaches its data workers too
                env=os.environ | {"PYTHONUNBUFFERED": "1"},
            )
        job.state = "running"

    @staticmethod
    def finish(job: Job) -> None:
        job.exit_code = job.process.returncode
        if job.exit_code == 0:
            job.state = "finished"
        elif job.exit_code in (128 + signal.SIGTERM, -signal.SIGTERM):
            job.state = "stopped"
        else:
            job.state = "failed"


def log_tail(job: Job | None, lines: int = 30) -> str:
    if job is None or not job.log.is_file():
        return ""
    return "\n".join(job.log.read_text(errors="replace").splitlines()[-lines:])


def read_progress(run_dir: Path) -> dict:
    """progress.json of a run, or {} before it is written (or while a write is being renamed into place)."""
    try:
        return json.loads((run_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


def training_process(progress: dict, run_dir: Path | None = None) -> int | None:
    """The id of the process that trains the run of `progress` (progress.json), if it is alive and still
    that process (never another that was given the same id after a kill or a restart), and the run has
    neither ended nor finished (its process may live on: a notebook's kernel)."""
    if progress.get("state") == "ended" or (run_dir is not None and (run_dir / "summary.json").is_file()):
        return None
    pid = progress.get("pid")
    return int(pid) if same_process(pid, progress.get("process")) else None


def run_state(run_dir: Path, progress: dict | None = None) -> str:
    """finished (summary.json), training (its process is alive), stopped (resumable), or new; `progress`
    is the run's progress.json when the caller has already read it."""
    if (run_dir / "summary.json").is_file():
        return "finished"
    if training_process(read_progress(run_dir) if progress is None else progress):
        return "training"
    return "stopped" if (run_dir / "checkpoints" / "last.ckpt").is_file() else "new"
