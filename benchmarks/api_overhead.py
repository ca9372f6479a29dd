"""What the Python API costs against the `vislab` command: training speed and the time to the first step.

Both sides run in fresh processes of this interpreter, so both pay every import, with the same config
given as the same `key=value` strings, on a folder of real CIFAR-10 JPEGs (the first N train images of
each class of ../shared/data/cifar10-jpg.tar.gz, extracted to a temporary folder):
  cli  `python -m vislab train KEY=VALUE ...` (what the `vislab` script runs: vislab.cli:main)
  api  `python -c "import sys, vislab; vislab.train(overrides=sys.argv[1:])" KEY=VALUE ...`
The sides alternate (cli, api, then api, cli, ...) so that drift in the machine's speed hits both.

1. Training: `--epochs` epochs; images/s is `train_images_per_s` of each run's summary.json (vislab's
   own figure: training batches only, validation excluded); wall time is the whole process.
2. To the first step: the same config with `epochs=1 trainer.limit_train_batches=1`. Nothing is added to
   vislab to time it: the run's progress.json (vislab.progress.LiveProgress) is first written at
   Lightning's on_train_start, just before the first batch is fetched, with the wall clock in "updated",
   and next at on_validation_start, which with one training batch is right after the first step. This
   script polls the file every few milliseconds and takes both from it: from the moment it starts the
   process to on_train_start ("to training start") and to the end of the first step ("to first step
   done"). A repeat in which the poll missed a write is reported as missed, not guessed.
3. Start-up alone: `python -c pass` (the interpreter), `python -c "import vislab"`, the first use of
   `vislab.train` (which loads vislab.api), and `python -m vislab --help`.

Run: python benchmarks/api_overhead.py [--repeats 3] [--per-class 200] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
API = "import sys, vislab; vislab.train(overrides=sys.argv[1:])"
POLL_S = 0.003


def extract(archive: Path, out: Path, per_class: int) -> Path:
    """The first `per_class` train images of every class (as tests/conftest.py extract_subset does)."""
    counts: dict[str, int] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or parts[0] != "train":
                continue
            if counts.get(parts[1], 0) < per_class:
                counts[parts[1]] = counts.get(parts[1], 0) + 1
                tar.extract(member, out, filter="data")
    return out / "train"


def environment() -> dict[str, str]:
    env = dict(os.environ)
    # This checkout's vislab, whatever an editable install elsewhere points to.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def command(side: str, keys: list[str]) -> list[str]:
    if side == "cli":
        return [sys.executable, "-m", "vislab", "train", *keys]
    return [sys.executable, "-c", API, *keys]


def run(side: str, keys: list[str], run_dir: Path) -> dict:
    """Runs one training process, polling its progress.json; returns the times and its summary.json."""
    progress = run_dir / "progress.json"
    seen: dict[str, float] = {}
    start = time.time()
    log = open(run_dir.parent / f"{run_dir.name}.log", "w+b")  # noqa: SIM115 (a pipe could fill and block)
    process = subprocess.Popen(command(side, keys), env=environment(), cwd=ROOT, stderr=log)
    while process.poll() is None:
        try:
            state = json.loads(progress.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            state = None
        if state is not None:
            # The first write: state "training", step 0, no curve yet. The first "validating" write of
            # epoch 0 comes after the last training batch of that epoch (with one batch: the first step).
            if state["state"] == "training" and state["step"] == 0 and not state["curve"]:
                seen.setdefault("train_start", state["updated"])
            elif state["state"] == "validating" and state["epoch"] == 0:
                seen.setdefault("validating", state["updated"])
            seen.setdefault("first_seen", state["updated"])
        time.sleep(POLL_S)
    wall = time.time() - start
    log.seek(0)
    stderr = log.read().decode(errors="replace")
    log.close()
    if process.returncode != 0:
        raise SystemExit(f"{side} failed with exit code {process.returncode}:\n{stderr}")
    summary = json.loads((run_dir / "summary.json").read_text())
    # A write missed by the poll shows as a first seen file that is not the first write.
    train_start = seen.get("train_start") if seen.get("first_seen") == seen.get("train_start") else None
    return {
        "side": side,
        "wall_s": round(wall, 2),
        "to_train_start_s": None if train_start is None else round(train_start - start, 3),
        "to_epoch0_validating_s": None if "validating" not in seen else round(seen["validating"] - start, 3),
        "train_images_per_s": summary["train_images_per_s"],
        "train_time_s": summary["train_time_s"],
        "summary_wall_time_s": summary["wall_time_s"],
        "best_val_top1": summary.get("best_val_top1"),
    }


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, env=environment(), cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def spread(values: list[float | None], digits: int = 2) -> str:
    """median (min-max) of the values that were measured; missed ones are counted."""
    got = [v for v in values if v is not None]
    if not got:
        return "missed"
    text = f"{statistics.median(got):.{digits}f} ({min(got):.{digits}f}-{max(got):.{digits}f})"
    missed = len(values) - len(got)
    return text + (f", {missed} missed" if missed else "")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("torch", "lightning", "vislab"):
        code = f"import {name}; print({name}.__version__)"
        found[name] = subprocess.run(
            [sys.executable, "-c", code], env=environment(), capture_output=True, text=True, check=True
        ).stdout.strip()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=200, help="train images per class (10 classes)")
    parser.add_argument("--model", default="resnet8")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, for each measurement")
    parser.add_argument("--out", type=Path, help="also write every run's figures as JSON")
    args = parser.parse_args()

    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "versions": versions(),
        "executable": sys.executable,
        "images": 10 * args.per_class,
    }
    sides = ["cli", "api"]
    with tempfile.TemporaryDirectory() as tmp:
        data = extract(ARCHIVE, Path(tmp), args.per_class)
        runs = Path(tmp) / "runs"
        runs.mkdir()
        common = [
            f"data=folder:{data}",
            f"model={args.model}",
            "trainer.progress_bar=false",
            "report=false",
            f"runs_dir={runs}",
        ]
        results["keys"] = ["data=folder:DIR", *common[1:4], "runs_dir=TMP"]

        training, first_step = [], []
        for repeat in range(args.repeats):
            order = sides if repeat % 2 == 0 else sides[::-1]
            for side in order:
                name = f"train-{side}-{repeat}"
                keys = [*common, f"epochs={args.epochs}", f"name={name}"]
                training.append(run(side, keys, runs / name))
                print(json.dumps(training[-1]), file=sys.stderr)
            for side in order:
                name = f"first-{side}-{repeat}"
                keys = [*common, "epochs=1", "trainer.limit_train_batches=1", f"name={name}"]
                first_step.append(run(side, keys, runs / name))
                print(json.dumps(first_step[-1]), file=sys.stderr)

        startup: dict[str, list[float]] = {}
        probes = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import vislab": [sys.executable, "-c", "import vislab"],
            "import vislab; vislab.train (loads vislab.api)": [
                sys.executable,
                "-c",
                "import vislab; vislab.train",
            ],
            "vislab --help": [sys.executable, "-m", "vislab", "--help"],
        }
        for repeat in range(max(5, args.repeats)):
            names = list(probes) if repeat % 2 == 0 else list(probes)[::-1]
            for name in names:
                startup.setdefault(name, []).append(timed(probes[name]))

    results.update(training=training, first_step=first_step, startup_s=startup)

    def of(rows: list[dict], side: str, key: str) -> list:
        return [r[key] for r in rows if r["side"] == side]

    lines = [
        f"{results['images']} CIFAR-10 JPEGs (10 classes), model={args.model}, {args.repeats} runs a side, "
        f"{results['date']}, {results['machine']}, "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        "",
        "| median (min-max) | `vislab train` (CLI) | `vislab.train(...)` (API) | API / CLI (medians) |",
        "|---|---|---|---|",
    ]
    rows = [
        (f"training images/s ({args.epochs} epochs)", training, "train_images_per_s", 0),
        (f"wall time, {args.epochs}-epoch run (s)", training, "wall_s", 2),
        (f"to training start, {args.epochs}-epoch run (s)", training, "to_train_start_s", 2),
        ("to training start, 1-batch run (s)", first_step, "to_train_start_s", 2),
        ("to first step done, 1-batch run (s)", first_step, "to_epoch0_validating_s", 2),
        ("wall time, 1-batch run (s)", first_step, "wall_s", 2),
    ]
    for label, table, key, digits in rows:
        cli, api = of(table, "cli", key), of(table, "api", key)
        got_cli, got_api = [v for v in cli if v is not None], [v for v in api if v is not None]
        ratio = (
            f"{statistics.median(got_api) / statistics.median(got_cli):.3f}" if got_cli and got_api else "-"
        )
        lines.append(f"| {label} | {spread(cli, digits)} | {spread(api, digits)} | {ratio} |")
    probes_run = len(next(iter(startup.values())))
    lines += ["", f"| start-up alone: median (min-max) of {probes_run} | seconds |", "|---|---|"]
    lines += [f"| `{name}` | {spread(values, 3)} |" for name, values in startup.items()]
    print("\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
