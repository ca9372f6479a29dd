"""`vislab sweep` on this machine with real data: what median pruning saves, and what `--jobs 2` does.

Data: the first N train images of each CIFAR-10 class (../shared/data/cifar10-jpg.tar.gz; vislab holds
out its validation split). The search: learning rate x weight decay as a 4 x 3 grid (12 trials, the same
points in the same order on every side, so that the sides differ only in what is measured), ResNet-8,
a few epochs each. Three sweeps, each one `vislab sweep` process timed from start to end:
  unpruned  --jobs 1 --prune none
  pruned    --jobs 1 --prune median  (a trial behind the median of the earlier ones at an epoch stops)
  jobs 2    --jobs 2 --prune none    (two trials at once, each with half the cores)
Reported: wall time, the best validation top-1 each found, trials pruned, epochs trained in all.

Run: python benchmarks/sweep.py [--per-class 200] [--epochs 4] [--out results.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from api_overhead import ARCHIVE, extract  # noqa: E402

SPACE = ["optim.lr=grid(0.02,0.05,0.1,0.2)", "optim.weight_decay=grid(5e-5,5e-4,5e-3)"]
SIDES = {
    "unpruned": ["--jobs", "1"],
    "pruned": ["--jobs", "1", "--prune", "median"],
    "jobs 2": ["--jobs", "2"],
}


def sweep(data: Path, runs: Path, study: str, options: list[str], epochs: int) -> dict:
    command = [sys.executable, "-m", "vislab", "sweep", *SPACE, *options, "--study", study]
    command += [f"data=folder:{data}", "model=resnet8", f"epochs={epochs}", "batch_size=128"]
    command += [f"runs_dir={runs}", "report=false", "trainer.progress_bar=false", "checkpoint_every_min=0"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    with open(runs / study / "sweep.csv") as file:
        rows = list(csv.DictReader(file))
    info = json.loads((runs / study / "sweep.json").read_text())
    return {
        "wall_s": round(wall, 1),
        "best_val_top1": info["best"]["value"],
        "best_params": info["best"]["params"],
        "pruned": sum(r["state"] == "pruned" for r in rows),
        "epochs_trained": sum(int(r["epochs"] or 0) for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import lightning
    import optuna
    import torch

    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        data = extract(ARCHIVE, Path(scratch) / "cifar", args.per_class)
        for side, options in SIDES.items():
            results[side] = sweep(data, Path(scratch) / "runs", side.replace(" ", ""), options, args.epochs)
            print(f"{side}: {results[side]}", flush=True)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "optuna": optuna.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "train_images": args.per_class * 10,
        "epochs": args.epochs,
        "sweeps": results,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
