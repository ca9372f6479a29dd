"""`progress.json` in the run folder: where a run stands, rewritten every few seconds during training, so
that the web UI (or `watch cat`) shows epoch, step, speed, ETA and a loss curve within an epoch without
talking to the training process. metrics.csv keeps the per-epoch rows; this file adds what happens
between them."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import lightning as L
import torch

from vislab.estimate import long_run_warning
from vislab.files import process_identity, write_json

POINTS_KEPT = 2000  # curve points kept in the file; older ones are thinned to every other one


class LiveProgress(L.Callback):
    """Every `every_s` seconds of training, and at each epoch's end, rewrites progress.json atomically with
    the running mean training loss since the last point, the learning rate, images/s and the ETA; and
    once the speed is timed, a warning on the terminal where what is left takes over an hour."""

    def __init__(self, run_dir: Path, model: str, every_s: float = 2.0):
        self.path, self.model, self.every_s = run_dir / "progress.json", model, every_s
        self.timed = False  # the long-run check: once, on this session's second point (the first pays set-up)
        self.earlier = 0  # points of a resumed run's earlier sessions, not timed here
        self.points: list[dict] = []
        self.loss_sum: torch.Tensor | None = None  # on the training device: no sync per step
        self.loss_count = self.images = 0
        self.written_at = self.window_start = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        # A resumed run keeps the curve its checkpoint saw and drops what came after it.
        if self.path.is_file():
            previous = json.loads(self.path.read_text()).get("curve", [])
            self.points = [p for p in previous if p["step"] <= trainer.global_step]
        self.earlier = len(self.points)
        self.written_at = self.window_start = time.monotonic()
        self.write(trainer, "training")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            loss = loss.detach().float()
            self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
            self.loss_count += 1
        self.images += trainer.train_dataloader.batch_size * trainer.world_size
        if time.monotonic() - self.written_at >= self.every_s:
            self.add_point(trainer)
            self.write(trainer, "training")

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.write(trainer, "validating")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.add_point(trainer)
        self.write(trainer, "training")

    def on_train_end(self, trainer, pl_module) -> None:
        self.write(trainer, "finishing")

    def on_exception(self, trainer, pl_module, exception) -> None:
        # Stopped or failed: said in the file, for a run whose process lives on (a notebook's kernel),
        # which the page must neither signal nor count as training.
        self.write(trainer, "ended")

    def add_point(self, trainer) -> None:
        if not self.loss_count:
            return
        now = time.monotonic()
        batches = trainer.num_training_batches
        self.points.append(
            {
                "step": trainer.global_step,
                "epoch": round(
                    trainer.current_epoch + min(trainer.fit_loop.epoch_loop.batch_idx + 1, batches) / batches,
                    4,
                ),
                "train_loss": round(float(self.loss_sum) / self.loss_count, 6),
                "lr": trainer.optimizers[0].param_groups[0]["lr"],
                "images_per_s": round(self.images / max(now - self.window_start, 1e-9), 1),
            }
        )
        if len(self.points) > POINTS_KEPT:
            self.points = self.points[::2]
        self.loss_sum, self.loss_count, self.images, self.window_start = None, 0, 0, now

    def write(self, trainer, state: str) -> None:
        self.written_at = time.monotonic()
        if not trainer.is_global_zero:
            return
        batches, epochs = trainer.num_training_batches, trainer.max_epochs
        batch = min(trainer.fit_loop.epoch_loop.batch_idx + 1, batches) if state != "finishing" else batches
        done = min(trainer.current_epoch * batches + batch, epochs * batches)
        speed = self.points[-1]["images_per_s"] if self.points else None
        batch_size = (
            trainer.train_dataloader.batch_size * trainer.world_size if trainer.train_dataloader else 1
        )
        eta = (epochs * batches - done) * batch_size / speed if speed else None
        if eta is not None and len(self.points) - self.earlier >= 2 and not self.timed:
            self.timed = True
            left = f"the {epochs - trainer.current_epoch} epochs left of {self.model}"
            line = long_run_warning(f"{left} (timed on its first steps)", eta)
            if line:
                print(line, file=sys.stderr, flush=True)
        write_json(
            self.path,
            {
                "state": state,
                "pid": os.getpid(),
                # So that a stop never reaches another process given this id (of the writing process:
                # rank 0 may be a spawned child of the one that built this callback).
                "process": process_identity(os.getpid()),
                "updated": time.time(),
                "epoch": trainer.current_epoch,
                "epochs": epochs,
                "batch": batch,
                "batches": batches,
                "step": trainer.global_step,
                "images_per_s": speed,
                "eta_s": None if eta is None else round(eta, 1),
                "curve": self.points,
            },
        )
