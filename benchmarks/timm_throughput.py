"""Training images/s of a timm model: timm's own train.py against `vislab train model=timm:...`, side by side
in one run on the same CIFAR-10 JPEGs, batch size, optimizer and layout (channels-last).

timm's train.py is not part of vislab or of the timm wheel: pass a checkout of
huggingface/pytorch-image-models with --timm-repo (it runs with that checkout's own timm package).
Augmentation is the same family, each tool's own default way: timm crops (random resized crop, scale
0.35-1) and flips every image in its DataLoader workers; vislab crops (4-pixel padding) and flips whole
batches on the device. Both rates exclude validation and the first epoch (warm-up).
Run: python benchmarks/timm_throughput.py --timm-repo PATH [--model resnet10t] [--per-class 500]"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"
CIFAR_MEAN, CIFAR_STD = ["0.4914", "0.4822", "0.4465"], ["0.2470", "0.2435", "0.2616"]


def extract(out: Path, per_class: dict[str, int]) -> Path:
    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(ARCHIVE) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and parts[0] in per_class and counts.get(parts[:2], 0) < per_class[parts[0]]:
                counts[parts[:2]] = counts.get(parts[:2], 0) + 1
                tar.extract(member, out, filter="data")
    return out


def timm_images_per_s(repo: Path, root: Path, model: str, batch: int, epochs: int, out: Path) -> float:
    command = [sys.executable, str(repo / "train.py"), "--data-dir", str(root), "--train-split", "train",
               "--val-split", "test", "--model", model, "--num-classes", "10",
               "--input-size", "3", "32", "32",
               "--batch-size", str(batch), "--epochs", str(epochs), "--workers", "2", "--device", "cpu",
               "--no-prefetcher", "--opt", "sgd", "--lr", "0.05", "--weight-decay", "5e-4",
               "--sched", "cosine",
               "--warmup-epochs", "0", "--scale", "0.35", "1", "--color-jitter", "0", "--hflip", "0.5",
               "--mean", *CIFAR_MEAN, "--std", *CIFAR_STD, "--channels-last", "--log-interval", "5",
               "--output", str(out)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(repo))
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=out.parent)
    if done.returncode != 0:
        raise SystemExit(f"timm's train.py failed:\n{done.stderr[-2000:]}")
    # "Train: E [...]  Time: 0.123s, 1040.51/s  (0.130s,  984.62/s)": the epoch's running average.
    rates = {}
    for line in (done.stdout + done.stderr).splitlines():
        found = re.search(r"Train: (\d+) .*\(\s*[0-9.]+s,\s*([0-9.]+)/s\)", line)
        if found:
            rates[int(found.group(1))] = float(found.group(2))
    timed = [rate for epoch, rate in rates.items() if epoch > 0]
    return sum(timed) / len(timed)


def vislab_images_per_s(root: Path, model: str, batch: int, epochs: int, runs: Path) -> float:
    command = [sys.executable, "-m", "vislab", "train", f"data=folder:{root}", f"model=timm:{model}",
               "image_size=32", f"epochs={epochs}", f"batch_size={batch}", "optim.lr=0.05",
               f"runs_dir={runs}", "name=bench", "report=false", "trainer.progress_bar=false",
               "trainer.accelerator=cpu"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    rows = torch.load(runs / "bench" / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    history = next(state["rows"] for key, state in rows.items() if key.startswith("EpochLog"))[1:]
    return sum(r["train_images"] for r in history) / sum(r["train_time_s"] for r in history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timm-repo", type=Path, required=True)
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = extract(Path(tmp) / "cifar", {"train": args.per_class, "test": 20})
        ours = vislab_images_per_s(root, args.model, args.batch, args.epochs, Path(tmp) / "runs")
        theirs = timm_images_per_s(
            args.timm_repo, root, args.model, args.batch, args.epochs, Path(tmp) / "timm"
        )
    results = {
        "model": args.model,
        "device": f"CPU, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "train_images": 10 * args.per_class,
        "images_per_s": {"timm_train_py": round(theirs), "vislab": round(ours)},
        "vislab_vs_timm": round(ours / theirs, 2),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
