"""What keeps a run's work when training is stopped or goes wrong: a resumable checkpoint, mid-epoch
included, on SIGTERM, SIGINT and SIGUSR1 (what Slurm sends before preemption) and every few minutes; and a
clean stop on a non-finite loss, before it reaches the weights."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import lightning as L
import torch

from vislab.errors import RunStopped
from vislab.stopping import STOP


class RunGuard(L.Callback):
    """Saves `checkpoints/last.ckpt` after the optimizer step during which a stop signal arrived, or when
    `every_min` minutes have passed since the last save, and then (for a signal) stops the run. Checkpoints
    are only taken between optimizer steps, never in the middle of gradient accumulation or validation; a
    signal during an epoch's last batch or its validation stops the run after the epoch's own checkpoint.
    In DDP the ranks agree on every decision, so all of them save and stop at the same step."""

    def __init__(self, run_dir: Path, every_min: float):
        self.run_dir, self.every_s = run_dir, every_min * 60
        self.last = run_dir / "checkpoints" / "last.ckpt"
        self.saved_at = 0.0
        self.cut_short = False  # stopped by a signal before its last epoch

    @property
    def signal(self) -> int | None:
        return STOP.received

    def on_train_start(self, trainer, pl_module) -> None:
        # From the first step to the summary, a stop signal is held: the run stops at a step boundary with
        # a checkpoint, or, when it came after the last step, once summary.json is written (vislab.training).
        STOP.reinstall()
        STOP.hold("saving a checkpoint")
        self.saved_at = time.monotonic()

    def agreed(self, trainer, pl_module, *flags: bool) -> list[bool]:
        """Each flag true on any rank (one tiny all-reduce in DDP, nothing with one process)."""
        if trainer.world_size == 1:
            return list(flags)
        votes = torch.tensor([float(f) for f in flags], device=pl_module.device)
        return [bool(v > 0) for v in trainer.strategy.reduce(votes, reduce_op="sum")]

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        (bad,) = self.agreed(trainer, pl_module, not bool(torch.isfinite(loss).all()))
        if bad:
            raise RunStopped(self.non_finite_message(trainer, pl_module, loss), exit_code=1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if not stepped or batch_idx + 1 >= trainer.num_training_batches:
            return  # mid-accumulation, or the epoch's last batch, whose end saves a checkpoint anyway
        due = self.every_s > 0 and time.monotonic() - self.saved_at >= self.every_s
        stop, due = self.agreed(trainer, pl_module, self.signal is not None, due)
        if stop or due:
            trainer.save_checkpoint(self.last, weights_only=False)
            self.saved_at = time.monotonic()
        if stop:
            where = f"epoch {trainer.current_epoch + 1}, batch {batch_idx + 1}/{trainer.num_training_batches}"
            raise self.stopped(where)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Runs before ModelCheckpoint's epoch-end save (Lightning calls checkpoint callbacks last).
        stop = trainer.strategy.reduce_boolean_decision(self.signal is not None, all=False)
        self.cut_short = stop and not trainer.should_stop and trainer.current_epoch + 1 < trainer.max_epochs
        trainer.should_stop = trainer.should_stop or stop

    def stopped(self, where: str) -> RunStopped:
        signum = self.signal or signal.SIGTERM  # a DDP rank that stops because another got the signal
        return RunStopped(
            f"stopped by {signal.Signals(signum).name} at {where}; {self.last} holds that point; "
            f"continue with: vislab train --resume {self.run_dir}",
            exit_code=128 + signum,
        )

    def stop_if_cut_short(self, trainer) -> None:
        """After training: a run that a signal stopped at an epoch's end before its last says so, like one
        stopped mid-epoch. (A signal in the last epoch stops the run after its summary: vislab.training.)"""
        if self.cut_short:
            raise self.stopped(f"the end of epoch {trainer.current_epoch}")

    def non_finite_message(self, trainer, pl_module, loss: torch.Tensor) -> str:
        where = f"epoch {trainer.current_epoch + 1}, batch {trainer.fit_loop.epoch_loop.batch_idx + 1}"
        lower = f"optim.lr={pl_module.config.optim.lr / 10:g}"
        if self.last.is_file():
            kept = f"{self.last} (the last good checkpoint) is untouched"
            advice = f"continue with a lower learning rate: vislab train --resume {self.run_dir} {lower}"
        else:
            kept = "no checkpoint had been saved yet"
            advice = f"start again with a lower learning rate, e.g. {lower}"
        value = loss.item()
        return f"the training loss became {value} at {where}, before the weights changed; {kept}; {advice}"
