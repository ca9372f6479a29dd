"""DDP on this machine's CPU (gloo): training images/s of ResNet-20 with 1 and 2 processes, for vislab and
for a bare Lightning loop on the same model, data and batch size, in one run.

Data: the first N train images of each CIFAR-10 class (../shared/data/cifar10-jpg.tar.gz), held in memory.
  vislab  `python -m vislab train data=folder:... model=resnet20` (1 process), and the same under
          `torchrun --standalone --nproc_per_node=2` with `trainer.devices=2 trainer.strategy=ddp`;
          images/s is summary.json's `train_images_per_s` (training batches only, validation excluded).
  bare    this file's `--bare` mode: a LightningModule with only the model, cross-entropy and SGD, the same
          uint8 images (read by vislab's loader, then a TensorDataset normalised per batch), Lightning's
          own DistributedSampler, no callbacks, no logger, no checkpoints; images/s measured as vislab
          measures it (epoch time minus validation time).
Augmentation is off on both sides (vislab's batch augmentation is not part of the comparison), precision
is 32-bit and the memory layout channels-last on both. Each of the four runs is repeated, alternating, and
the median is reported; the difference between vislab and bare at equal process count is the per-step cost
of vislab's callbacks (progress, run guard, epoch log, checkpoints) and data path.

Run: python benchmarks/ddp_scaling.py [--per-class 300] [--epochs 3] [--repeats 2] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from api_overhead import ARCHIVE, extract  # noqa: E402

BATCH = 64
COMMON = [
    "model=resnet20",
    f"batch_size={BATCH}",
    "augment.crop_padding=0",
    "augment.hflip=false",
    "trainer.accelerator=cpu",
    "trainer.precision=32",
    "report=false",
    "trainer.progress_bar=false",
    "checkpoint_every_min=0",
]


def environment(processes: int) -> dict[str, str]:
    # torchrun gives each of 2 processes one thread; one process gets the machine's cores.
    threads = str(max(1, (os.cpu_count() or 2) // processes))
    return dict(os.environ, OMP_NUM_THREADS=threads, PYTHONPATH=str(ROOT))


def launcher(processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]


def vislab_run(data: Path, runs: Path, processes: int, epochs: int, name: str) -> float:
    ddp = [f"trainer.devices={processes}", "trainer.strategy=ddp"] if processes > 1 else []
    command = [*launcher(processes), "-m", "vislab", "train", f"data=folder:{data}", f"epochs={epochs}"]
    command += [*COMMON, *ddp, f"runs_dir={runs}", f"name={name}"]
    subprocess.run(command, env=environment(processes), check=True, capture_output=True)
    return json.loads((runs / name / "summary.json").read_text())["train_images_per_s"]


def bare_run(data: Path, out: Path, processes: int, epochs: int) -> float:
    command = [*launcher(processes), str(Path(__file__).resolve()), "--bare", str(data), str(out)]
    command += ["--epochs", str(epochs), "--processes", str(processes)]
    done = subprocess.run(command, env=environment(processes), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(out.read_text())["train_images_per_s"]


def bare(data: Path, out: Path, epochs: int, processes: int) -> None:
    """The bare Lightning loop (run by `--bare`, in each process)."""
    import lightning as L
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from vislab.data import load_dataset
    from vislab.data.splits import channel_stats
    from vislab.models import create_model
    from vislab.tasks import load_config

    splits = load_dataset(load_config(None, [f"data=folder:{data}"]))
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in channel_stats(splits.train.images))

    class Bare(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = create_model("resnet20", len(splits.classes), 3, 32).to(
                memory_format=torch.channels_last
            )

        def inputs(self, images):
            return ((images.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)

        def training_step(self, batch, index):
            images, labels = batch
            return F.cross_entropy(self.model(self.inputs(images)), labels)

        def validation_step(self, batch, index):
            images, labels = batch
            self.log("val_loss", F.cross_entropy(self.model(self.inputs(images)), labels), sync_dist=True)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)

    class Clock(L.Callback):
        def __init__(self):
            self.train_s, self.images, self.val_s = 0.0, 0, 0.0

        def on_train_epoch_start(self, trainer, module):
            self.start, self.val_s = time.perf_counter(), 0.0

        def on_validation_epoch_start(self, trainer, module):
            self.val_start = time.perf_counter()

        def on_validation_epoch_end(self, trainer, module):
            self.val_s += time.perf_counter() - self.val_start

        def on_train_epoch_end(self, trainer, module):
            self.train_s += time.perf_counter() - self.start - self.val_s
            self.images += trainer.num_training_batches * BATCH * trainer.world_size

    def loader(split, train):
        dataset = TensorDataset(split.images, split.labels)
        return DataLoader(dataset, batch_size=BATCH, shuffle=train, drop_last=train)

    clock = Clock()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=processes,
        strategy="ddp" if processes > 1 else "auto",
        max_epochs=epochs,
        precision="32",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(Bare(), loader(splits.train, True), loader(splits.val, False))
    if trainer.is_global_zero:
        out.write_text(json.dumps({"train_images_per_s": round(clock.images / clock.train_s, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--bare", nargs=2, type=Path, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare(*args.bare, args.epochs, args.processes)
        return
    import lightning
    import torch

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data = extract(ARCHIVE, scratch / "cifar", args.per_class)
        sides = [(side, processes) for processes in (1, 2) for side in ("vislab", "bare")]
        measured: dict[str, list[float]] = {f"{side} x{p}": [] for side, p in sides}
        for repeat in range(args.repeats):
            for side, processes in sides if repeat % 2 == 0 else reversed(sides):
                name = f"{side}{processes}-{repeat}"
                if side == "vislab":
                    value = vislab_run(data, scratch / "runs", processes, args.epochs, name)
                else:
                    value = bare_run(data, scratch / f"{name}.json", processes, args.epochs)
                measured[f"{side} x{processes}"].append(value)
                print(f"{side} x{processes} (repeat {repeat + 1}): {value:.0f} images/s", flush=True)
    medians = {key: statistics.median(values) for key, values in measured.items()}
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "train_images": args.per_class * 10,
        "epochs": args.epochs,
        "images_per_s": measured,
        "median": medians,
        "speed_up_2_processes": {
            side: round(medians[f"{side} x2"] / medians[f"{side} x1"], 2) for side in ("vislab", "bare")
        },
        "vislab_over_bare": {p: round(medians[f"vislab x{p}"] / medians[f"bare x{p}"], 2) for p in (1, 2)},
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
