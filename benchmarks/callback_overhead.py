"""The per-step cost of vislab's training callbacks against a bare Lightning loop on the same model.

Both sides train the same LightningModule (a vislab model, cross-entropy, SGD) on the same in-memory
batches, in one process, alternating, with Lightning's Trainer. The bare side has no callbacks, no logger,
no checkpoints and no progress bar; the vislab side has what `vislab train` adds through
`vislab.training.build_trainer`: the run guard (non-finite loss, stop signals, timed checkpoints), the live
progress file, the metrics.csv row, best/last checkpoints at each epoch's end and the TensorBoard logger.
The difference in time per training step is what those callbacks cost (checkpoint writes at epoch ends
included, spread over the epoch's steps). Both validate on 2 batches at each epoch's end.

The inputs are random (speed does not depend on the pixels). Two models: ResNet-20 on 32x32 images, batch
128 (a real CIFAR step), and `small_cnn` on 8x8 images, batch 32 (a step of about a millisecond, where any
per-step cost shows most).

Run: python benchmarks/callback_overhead.py [--steps 100] [--epochs 3] [--repeats 3] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vislab.config import build_config  # noqa: E402
from vislab.models import create_model  # noqa: E402
from vislab.resilience import RunGuard  # noqa: E402
from vislab.runs import EpochLog  # noqa: E402
from vislab.training import build_trainer, quiet_lightning  # noqa: E402

CASES = {"resnet20": (32, 128), "small_cnn": (8, 32)}  # model: (image side, batch)


class Plain(L.LightningModule):
    def __init__(self, model: torch.nn.Module, config):
        super().__init__()
        self.model, self.config = model.to(memory_format=torch.channels_last), config

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = F.cross_entropy(self.model(images), labels)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        self.log("val_loss", F.cross_entropy(self.model(images), labels), on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def loader(side: int, batch: int, steps: int) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(steps * batch, 3, side, side, generator=generator)
    labels = torch.randint(0, 10, (steps * batch,), generator=generator)
    return DataLoader(TensorDataset(images.contiguous(memory_format=torch.channels_last), labels), batch)


def fit(name: str, precision: str, with_vislab: bool, steps: int, epochs: int) -> float:
    """Seconds per training step of one fit (the whole fit, epoch ends included, over its steps)."""
    side, batch = CASES[name]
    torch.manual_seed(0)
    config = build_config({"model": name, "epochs": epochs, "trainer": {"precision": precision}})
    config.early_stopping.monitor = "val_loss"
    module = Plain(create_model(name, 10, 3, side), config)
    with tempfile.TemporaryDirectory() as folder:
        if with_vislab:
            run_dir = Path(folder)
            config.trainer.progress_bar = False
            log = EpochLog(run_dir / "metrics.csv", ["epoch", "train_loss"])
            trainer = build_trainer(config, run_dir, log, RunGuard(run_dir, 5.0), [])
        else:
            trainer = L.Trainer(
                accelerator="cpu",
                precision=precision,
                max_epochs=epochs,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
        start = time.perf_counter()
        trainer.fit(module, loader(side, batch, steps), loader(side, batch, 2))
        return (time.perf_counter() - start) / (steps * epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    quiet_lightning()
    results = []
    for name in CASES:
        for precision in ("32-true", "bf16-mixed"):
            fit(name, precision, False, 5, 1)  # warm-up: oneDNN's kernels for these shapes
            times = {"bare": [], "vislab": []}
            for repeat in range(args.repeats):
                order = ("bare", "vislab") if repeat % 2 == 0 else ("vislab", "bare")
                for side in order:
                    times[side].append(fit(name, precision, side == "vislab", args.steps, args.epochs))
            bare, ours = (statistics.median(times[side]) for side in ("bare", "vislab"))
            row = {
                "model": name,
                "precision": precision,
                "batch": CASES[name][1],
                "bare_ms_per_step": round(bare * 1e3, 3),
                "vislab_ms_per_step": round(ours * 1e3, 3),
                "overhead_ms_per_step": round((ours - bare) * 1e3, 3),
                "overhead_percent": round(100 * (ours / bare - 1), 1),
                "runs": {k: [round(t * 1e3, 3) for t in v] for k, v in times.items()},
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    record = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "steps": args.steps,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "results": results,
    }
    if args.out:
        args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
