"""Shared fixtures: real data from ../shared/data (skipped with a reason where absent) and a CLI runner."""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from vislab.cli import main

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Under pytest-xdist (`pytest -n 2`) each worker gets its share of the cores: two workers of two threads
# on a 2-core machine would fight over them. The processes a test starts inherit the setting.
if os.environ.get("PYTEST_XDIST_WORKER"):
    CORES = max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ["OMP_NUM_THREADS"] = str(CORES)
    torch.set_num_threads(CORES)


def shared_archive(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"real test data {path} is not present")
    return path


def extract_subset(archive: Path, out: Path, per_class: dict[str, int]) -> Path:
    """Extracts the first N images of every class of each top-level split ({"train": 100, "test": 50})."""
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or parts[0] not in per_class:
                continue
            key = (parts[0], parts[1])
            if taken.get(key, 0) < per_class[parts[0]]:
                taken[key] = taken.get(key, 0) + 1
                tar.extract(member, out, filter="data")
    return out


def copy_classes(source: Path, target: Path, per_class: int, classes: int | None = None) -> Path:
    """A small ImageFolder tree: the first `per_class` images of the first `classes` class folders."""
    for class_dir in sorted(source.iterdir())[:classes]:
        (target / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:per_class]:
            shutil.copy(image, target / class_dir.name / image.name)
    return target


def small_copy(camvid, target, train: int, val: int):
    """The first `train` and `val` CamVid pairs in the segfolder layout."""
    for split, count in (("train", train), ("val", val)):
        for kind in ("images", "masks"):
            (target / split / kind).mkdir(parents=True)
        for image in sorted((camvid / split / "images").iterdir())[:count]:
            shutil.copy(image, target / split / "images")
            shutil.copy(camvid / split / "masks" / f"{image.stem}.png", target / split / "masks")
    shutil.copy(camvid / "classes.txt", target)
    return target


def extract_archive(name: str, target: Path) -> Path:
    """Unpacks a whole archive from ../shared/data into `target` (skipping the test where it is absent)."""
    with tarfile.open(shared_archive(name)) as tar:
        tar.extractall(target, filter="data")
    return target


@pytest.fixture(scope="session")
def camvid(tmp_path_factory) -> Path:
    """CamVid (SegNet version): {train,val}/{images,masks} and classes.txt; 11 classes, 11 = void."""
    return extract_archive("camvid.tar.gz", tmp_path_factory.mktemp("camvid")) / "camvid"


@pytest.fixture(scope="session")
def voc_dir(tmp_path_factory) -> Path:
    """A data_dir holding the three-image PASCAL VOC 2012 sample in the official layout."""
    return extract_archive("voc2012-sample.tar.gz", tmp_path_factory.mktemp("voc"))


@pytest.fixture(scope="session")
def cifar_jpgs(tmp_path_factory) -> Path:
    """A real CIFAR-10 JPEG subset: train/<class>/ (200 each) and test/<class>/ (50 each)."""
    archive = shared_archive("cifar10-jpg.tar.gz")
    return extract_subset(archive, tmp_path_factory.mktemp("cifar10"), {"train": 200, "test": 50})


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Runs `vislab ARGS...` in this process and returns its exit code and output."""

    def run(*args: str) -> Result:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def run_subprocess(*args: str, cwd: Path | None = None, timeout: float = 1800) -> Result:
    """Runs `python -m vislab ARGS...`; the timeout only ends a hung run, far beyond a slow machine's time."""
    done = subprocess.run(
        [sys.executable, "-m", "vislab", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def kill_when(
    process: subprocess.Popen, ready: Callable[[], bool], what: str, timeout_s: float = 900
) -> None:
    """SIGKILLs `process` as soon as `ready()` holds. Fails, saying so, if the process ends first (a crash,
    or a machine fast enough to finish before the test looked) or gets nowhere in `timeout_s`, a deadline
    meant only to end a hung test, never reached by a slow machine that works."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert process.poll() is None, f"the run ended (exit code {process.returncode}) before {what}"
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError(f"the run did not reach {what} in {timeout_s} s")
        time.sleep(0.02)
    process.kill()
    code = process.wait()
    assert code == -signal.SIGKILL, f"the run had ended (exit code {code}) before the kill at {what}"


# No progress bar, and no report except where a test is about reports: the suite stays fast.
QUIET = ["trainer.progress_bar=false", "report=false"]


class RangeServer(http.server.BaseHTTPRequestHandler):
    """Serves one file with HTTP Range support; the first answer can be cut short to test resuming."""

    body, cut_first_at, seen_ranges = b"", None, []

    def do_GET(self):
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            type(self).seen_ranges.append(start)
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(self.body) - start))
        self.end_headers()
        payload = self.body[start:]
        if type(self).cut_first_at is not None:
            payload, type(self).cut_first_at = payload[: type(self).cut_first_at], None
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeServer)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{http_server.server_port}"
    http_server.shutdown()
