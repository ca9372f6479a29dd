"""Time to accuracy on CIFAR-10: the seeds' plain PyTorch loop against vislab's fast recipe, side by side on
the same machine and the same CIFAR-10 JPEGs, each timed from its process start to the test accuracy it
reports (extracting the archive, shared by both, is not counted).

  plain   the seeds' loop: ResNet-20, torchvision ImageFolder with per-image PIL transforms (crop with
          4-pixel padding, flip) in DataLoader workers, SGD + Nesterov, one-cycle schedule, batch 128,
          `--plain-epochs` epochs, then the test set
  vislab  `vislab train --config RECIPE data=folder:DIR test_tta=true`: trains, then scores the test split
          with and without test-time augmentation, as `vislab eval RUN --split test --tta` would

Each vislab run also records the time from its process start to the end of the first epoch whose
validation top-1 (the recipe's held-out train images) reached 85%, 88% and 90%.

Run: python benchmarks/cifar10_time_to_accuracy.py [--recipe cifar10_fast_cpu] [--repeats 1] [--skip-plain]
     [--precisions 32-true bf16-mixed] [key=value ...]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"
TARGETS = (0.85, 0.88, 0.90)
CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


def plain_loop(data: Path, epochs: int, device: str, workers: int) -> float:
    """The seeds' main.py, reduced to what matters for time: returns the test accuracy."""
    import torch.nn.functional as F
    import torchvision.transforms as T
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from vislab.models import create_model  # the same ResNet-20 architecture as the seeds' own

    torch.manual_seed(0)
    normalize = T.Normalize(CIFAR_MEAN, CIFAR_STD)
    augment = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    train = ImageFolder(data / "train", T.Compose([*augment, T.ToTensor(), normalize]))
    test = ImageFolder(data / "test", T.Compose([T.ToTensor(), normalize]))
    loader = DataLoader(train, batch_size=128, shuffle=True, num_workers=workers, drop_last=True)
    model = create_model("resnet20", 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=epochs * len(loader))
    for _ in range(epochs):
        model.train()
        for images, labels in loader:
            loss = F.cross_entropy(model(images.to(device)), labels.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in DataLoader(test, batch_size=512, num_workers=workers):
            correct += (model(images.to(device)).argmax(1).cpu() == labels).sum().item()
    return correct / len(test)


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done.stdout


def run_vislab(data: Path, runs: Path, name: str, recipe: str, extra: list[str]) -> dict:
    started = time.time()
    train_s, out = timed(
        [
            *[sys.executable, "-m", "vislab", "train", "--config", recipe],
            f"data=folder:{data}",
            f"runs_dir={runs}",
            f"name={name}",
            "test_tta=true",
            "report=false",
            "trainer.progress_bar=false",
            *extra,
        ]
    )
    tta = json.loads((runs / name / "eval_test.json").read_text())["tta"]
    summary = json.loads((runs / name / "summary.json").read_text())
    summary_written = (runs / name / "summary.json").stat().st_mtime
    return {
        "contender": f"vislab {recipe}",
        "precision": summary["precision"],
        "test_top1_tta": tta["with"],
        "test_top1": tta["without"],
        "epochs": summary["epochs_run"],
        "wall_s": round(train_s, 1),
        "train_loop_s": summary["wall_time_s"],
        # Training ended when summary.json was written (the test split is scored after it).
        "time_to_val_top1": times_to(runs / name, summary_written - started - summary["wall_time_s"]),
        "output": out.strip().splitlines()[-1],
    }


def times_to(run: Path, start_s: float) -> dict[str, float | None]:
    """Seconds from the process start to the end of the first epoch whose validation top-1 (the held-out
    train images, without test-time augmentation) reached each of TARGETS; None where no epoch did.
    `start_s`: the time before the training loop's clock started (imports, decoding, set-up)."""
    with open(run / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    ends = itertools.accumulate(float(r["epoch_time_s"]) for r in rows)  # each epoch's end, loop clock
    reached = [(float(r["val_top1"]), start_s + end) for r, end in zip(rows, ends)]
    return {
        f"{target:.0%}": next((round(t, 1) for top1, t in reached if top1 >= target), None)
        for target in TARGETS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="cifar10_fast_cpu")
    parser.add_argument("--repeats", type=int, default=1, help="vislab runs (seeds 0, 1, ...)")
    parser.add_argument(
        "--precisions", nargs="+", default=["auto"], help="vislab runs in each (e.g. 32-true bf16-mixed)"
    )
    parser.add_argument("--plain-epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    parser.add_argument("--plain-worker", type=Path, help=argparse.SUPPRESS)  # the plain loop's own process
    parser.add_argument("overrides", nargs="*", help="vislab key=value overrides, e.g. trainer.compile=true")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.plain_worker:
        print(f"test accuracy {plain_loop(args.plain_worker, args.plain_epochs, device, args.workers):.4f}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "cifar10"
        with tarfile.open(args.archive) as tar:
            tar.extractall(data, filter="data")
        rows = []
        for seed in range(args.repeats):  # vislab first: its result shows before the plain loop's long run
            for precision in args.precisions:
                extra = [f"seed={seed}", f"trainer.precision={precision}", *args.overrides]
                name = f"run{seed}-{precision}"
                rows.append(run_vislab(data, Path(tmp) / "runs", name, args.recipe, extra))
                print(rows[-1], flush=True)
        if not args.skip_plain:
            command = [sys.executable, __file__, "--plain-worker", str(data)]
            command += ["--plain-epochs", str(args.plain_epochs), "--workers", str(args.workers)]
            wall, out = timed(command)
            accuracy = float(re.search(r"test accuracy ([0-9.]+)", out).group(1))
            plain = {"contender": "plain loop (ResNet-20)", "test_top1": accuracy}
            rows.append(plain | {"epochs": args.plain_epochs, "wall_s": round(wall, 1)})
            print(rows[-1], flush=True)
    machine = torch.cuda.get_device_name() if device == "cuda" else f"{platform.processor() or 'cpu'}"
    print(f"\n{machine}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print("| contender | precision | epochs | test top-1 | with TTA | wall time from process start (s) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        tta = f"{row['test_top1_tta']:.2%}" if "test_top1_tta" in row else "-"
        cells = [row["contender"], row.get("precision", "32-true"), row["epochs"], f"{row['test_top1']:.2%}"]
        print("| " + " | ".join(map(str, [*cells, tta, f"{row['wall_s']:.0f}"])) + " |")
    if args.out:
        results = {"machine": machine, "torch": torch.__version__, "rows": rows}
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
