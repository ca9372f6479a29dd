"""Kill one training run again and again, resume it each time, and check it ends exactly like the run that
was never interrupted.

For each setup (in-memory digits, a streamed image folder, in-memory CamVid segmentation) this trains a
reference run, then the same run interrupted by SIGKILL at `--kills` random moments (a quarter of them aimed
at the moment a checkpoint is being written) and by SIGTERM at `--terms` moments of training, resuming
after each. After every
interruption it checks that the checkpoint on disk loads (none is ever truncated); at the end it compares
metrics.csv (all but the timing column), summary.json's metrics and the weights of last.ckpt and best.ckpt,
bit for bit. Checkpoints are taken every few seconds (`checkpoint_every_min`) so that kills land in writes.

    python benchmarks/kill_anywhere.py --out /tmp/kill --cifar PATH/cifar10 --camvid PATH/camvid

`--cifar` is a CIFAR-10 JPEG folder (train/<class>/*.jpg), `--camvid` CamVid in the segfolder layout; a setup
whose data is not given is skipped. Exits 1 if any run differs or any checkpoint failed to load.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from vislab.checkpoint import read_checkpoint

QUIET = ["trainer.progress_bar=false", "report=false", "checkpoint_every_min=0.03"]
VISLAB = [sys.executable, "-m", "vislab", "train"]


def setups(cifar: Path | None, camvid: Path | None) -> dict[str, list[str]]:
    # Long enough (about a minute of training each on 2 CPU cores) to outlast 30 interruptions.
    found = {"in-memory": ["model=resnet8", "epochs=30", "batch_size=8", "augment.mixup=0.2"]}
    if cifar is not None:
        found["streamed folder"] = [
            f"data=folder:{cifar}",
            "in_memory=false",
            "num_workers=2",
            "model=resnet8",
            "epochs=15",
            "batch_size=32",
            "augment.randaugment_n=1",
        ]
    if camvid is not None:
        found["segmentation"] = [f"data=segfolder:{camvid}", "image_size=64", "epochs=30", "batch_size=4"]
    return found


def small_cifar(source: Path, out: Path, per_class: int = 100) -> Path:
    """The first `per_class` training images of each class: enough for epochs of a few seconds."""
    for class_dir in sorted((source / "train").iterdir()):
        (out / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:per_class]:
            shutil.copy(image, out / class_dir.name / image.name)
    return out


def train(runs: Path, name: str, args: list[str], resume: bool) -> subprocess.Popen:
    command = (
        [*VISLAB, "--resume", str(runs / name)]
        if resume
        else [*VISLAB, *args, f"runs_dir={runs}", f"name={name}", *QUIET]
    )
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def checkpoint_loads(path: Path) -> bool:
    try:
        read_checkpoint(path)
        return True
    except Exception:
        return False


def interrupt(runs: Path, name: str, args: list[str], how: str, delay: float) -> dict:
    """Starts (or resumes) the run and interrupts it. A plain SIGKILL comes `delay` s after the start,
    whatever the run is doing (start-up included). An aimed SIGKILL comes at the first checkpoint write
    after `delay` s; a SIGTERM `delay` s after this attempt's first checkpoint, so that it finds training
    under way. Reports what the interruption hit and whether the checkpoint on disk still loads."""
    run = runs / name
    last = run / "checkpoints" / "last.ckpt"
    if not last.is_file():  # killed before its first checkpoint last time: a user starts it again
        shutil.rmtree(run, ignore_errors=True)
    before = last.stat().st_mtime_ns if last.is_file() else 0
    process = train(runs, name, args, resume=last.is_file())
    temporary = run / "checkpoints" / ".last.tmp.ckpt"
    started, hit = time.monotonic(), "a random moment"
    if how == "SIGTERM":  # from this attempt's first checkpoint on
        while process.poll() is None and (not last.is_file() or last.stat().st_mtime_ns == before):
            time.sleep(0.01)
        started, hit = time.monotonic(), "training"
    while process.poll() is None and time.monotonic() - started < delay:
        time.sleep(0.001)
    if how == "SIGKILL in a checkpoint write":
        while process.poll() is None and not temporary.exists():
            time.sleep(0.0002)
        hit = "a checkpoint write"
    if process.poll() is not None:
        return {"how": how, "hit": "run had finished", "code": process.returncode, "checkpoint_ok": True}
    process.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGKILL)
    _, err = process.communicate()
    return {
        "how": how,
        "hit": hit,
        "code": process.returncode,
        "message": err.strip().splitlines()[-1] if err.strip() else "",
        "checkpoint_ok": not last.exists() or checkpoint_loads(last),
    }


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as file:
        return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in csv.DictReader(file)]


def summary_metrics(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k.startswith(("best_", "final_", "epochs_run"))}


def same_weights(a: Path, b: Path) -> bool:
    left, right = (torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in (a, b))
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def check_setup(label: str, args: list[str], runs: Path, kills: int, terms: int, rng: random.Random) -> dict:
    start = time.monotonic()
    reference = train(runs, "reference", args, resume=False)
    if reference.wait() != 0:
        raise SystemExit(f"{label}: the reference run failed: {reference.stderr.read()}")
    total = time.monotonic() - start
    training = json.loads((runs / "reference" / "summary.json").read_text())["wall_time_s"]
    startup = total - training
    plan = ["SIGKILL"] * (kills - kills // 4) + ["SIGKILL in a checkpoint write"] * (kills // 4)
    plan += ["SIGTERM"] * terms
    rng.shuffle(plan)
    events = []
    for how in plan:
        # Each attempt runs a random moment past start-up, so the run advances a little between interruptions.
        delay = rng.uniform(0.5, startup + training / len(plan)) if how == "SIGKILL" else rng.uniform(0, 1.5)
        event = interrupt(runs, "interrupted", args, how, delay)
        print(
            f"  {label}: {how:<34} after {delay:5.1f}s hit {event['hit']:<17} exit {event['code']}",
            flush=True,
        )
        events.append(event)
    final = train(
        runs, "interrupted", args, resume=(runs / "interrupted" / "checkpoints" / "last.ckpt").is_file()
    )
    if final.wait() != 0:
        raise SystemExit(f"{label}: the final resume failed: {final.stderr.read()}")
    a, b = runs / "reference", runs / "interrupted"
    result = {
        "setup": label,
        "args": args,
        "interruptions": len(events),
        "sigkill": sum(e["how"] != "SIGTERM" for e in events),
        "sigkill_in_checkpoint_write": sum(e["hit"] == "a checkpoint write" for e in events),
        "sigterm": sum(e["how"] == "SIGTERM" for e in events),
        "sigterm_exit_143": sum(e["how"] == "SIGTERM" and e["code"] == 143 for e in events),
        "checkpoints_loadable_after_every_interruption": all(e["checkpoint_ok"] for e in events),
        "same_metrics_csv": metrics(a) == metrics(b),
        "same_summary_metrics": summary_metrics(a) == summary_metrics(b),
        "same_last_weights": same_weights(a / "checkpoints" / "last.ckpt", b / "checkpoints" / "last.ckpt"),
        "same_best_weights": same_weights(a / "checkpoints" / "best.ckpt", b / "checkpoints" / "best.ckpt"),
        "reference_s": round(total, 1),
        "events": events,
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a folder for the runs and results.json")
    parser.add_argument("--cifar", type=Path, help="CIFAR-10 JPEGs (train/<class>/)")
    parser.add_argument("--camvid", type=Path, help="CamVid in the segfolder layout")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--terms", type=int, default=10)
    parser.add_argument("--only", help="run one setup: in-memory, streamed folder or segmentation")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    cifar = small_cifar(options.cifar, Path(tempfile.mkdtemp()) / "cifar") if options.cifar else None
    rng, results = random.Random(options.seed), []
    for label, args in setups(cifar, options.camvid).items():
        if options.only and label != options.only:
            continue
        runs = options.out / label.replace(" ", "-")
        shutil.rmtree(runs, ignore_errors=True)
        results.append(check_setup(label, args, runs, options.kills, options.terms, rng))
        summary = {k: v for k, v in results[-1].items() if k not in ("events", "args")}
        print(json.dumps(summary, indent=1), flush=True)
    (options.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    checks = [k for k in results[0] if k.startswith(("same_", "checkpoints_"))] if results else []
    return 0 if all(r[k] for r in results for k in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
