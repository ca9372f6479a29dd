"""What keeps a run's work when training is stopped or goes wrong: a resumable checkpoint, mid-epoch
included, on SIGTERM, SIGINT and SIGUSR1 (what Slurm sends before preemption) and every few minutes; and a
clean stop on a non-finite loss, before it reaches a checkpoint (on a CPU, before it reaches the weights)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import lightning as L
import torch

from vislab.errors import RunStopped
from vislab.stopping import STOP

# Steps between two reads of the device-side checks on a GPU or across processes: each read waits for the
# device (and in DDP for every rank); in between, the checks only queue work on the device.
READ_EVERY = 16


class RunGuard(L.Callback):
    """Saves `checkpoints/last.ckpt` after the optimizer step during which a stop signal arrived, or when
    `every_min` minutes have passed since the last save, and then (for a signal) stops the run. Checkpoints
    are only taken between optimizer steps, never in the middle of gradient accumulation or validation; a
    signal during an epoch's last batch or its validation stops the run after the epoch's own checkpoint.
    In DDP the ranks agree on every decision, so all of them save and stop at the same step.

    Nothing here waits for the device on every step. A non-finite loss is noted on the device; the note is
    read before every checkpoint (so none ever holds weights a non-finite loss touched), at each epoch's
    last batch, and every READ_EVERY steps; in one process on a CPU, where reading costs nothing, before
    every optimizer step, so that the weights never change. Across processes the ranks vote every
    READ_EVERY steps, one all-reduce for the note, the stop signal and the checkpoint timer together."""

    def __init__(self, run_dir: Path, every_min: float):
        self.run_dir, self.every_s = run_dir, every_min * 60
        self.last = run_dir / "checkpoints" / "last.ckpt"
        self.saved_at = 0.0
        self.cut_short = False  # stopped by a signal before its last epoch
        # On the training device: the first non-finite loss's batch (epoch * batches + batch, -1: none
        # yet) and value.
        self.bad_at: torch.Tensor | None = None
        self.bad_loss: torch.Tensor | None = None
        self.every_step = False  # read the note before every optimizer step

    @property
    def signal(self) -> int | None:
        return STOP.received

    def on_train_start(self, trainer, pl_module) -> None:
        # From the first step to the summary, a stop signal is held: the run stops at a step boundary with
        # a checkpoint, or, when it came after the last step, once summary.json is written (vislab.training).
        STOP.reinstall()
        STOP.hold("saving a checkpoint")
        self.saved_at = time.monotonic()
        self.bad_at = torch.full((), -1, dtype=torch.long, device=pl_module.device)
        self.bad_loss = torch.zeros((), device=pl_module.device)
        self.every_step = trainer.world_size == 1 and pl_module.device.type == "cpu"

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        batch = trainer.fit_loop.epoch_loop.batch_idx
        position = trainer.current_epoch * trainer.num_training_batches + batch
        first = ~torch.isfinite(loss.detach()).all() & (self.bad_at < 0)
        self.bad_at = torch.where(first, position, self.bad_at)
        self.bad_loss = torch.where(first, loss.detach().float(), self.bad_loss)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.every_step and self.bad_at >= 0:  # a CPU tensor: reading it waits for nothing
            raise RunStopped(self.non_finite_message(trainer, pl_module), exit_code=1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        epoch_end = batch_idx + 1 >= trainer.num_training_batches  # its end saves a checkpoint anyway
        if (batch_idx + 1) % trainer.accumulate_grad_batches and not epoch_end:
            return  # mid-accumulation
        due = self.every_s > 0 and time.monotonic() - self.saved_at >= self.every_s
        stop = self.signal is not None
        if trainer.world_size == 1:
            if not (stop or due or epoch_end or trainer.global_step % READ_EVERY == 0):
                return
            bad = bool(self.bad_at >= 0)
        elif epoch_end or trainer.global_step % READ_EVERY == 0:  # the same steps on every rank
            flags = torch.tensor([stop, due], dtype=torch.float, device=pl_module.device)
            votes = torch.cat([(self.bad_at >= 0).float()[None], flags])
            bad, stop, due = (bool(v > 0) for v in trainer.strategy.reduce(votes, reduce_op="sum"))
        else:
            return
        if bad:
            raise RunStopped(self.non_finite_message(trainer, pl_module), exit_code=1)
        if epoch_end:
            return
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

    def first_bad(self, trainer) -> int:
        """The earliest batch position at which any rank's loss went non-finite (every rank calls this)."""
        if trainer.world_size == 1:
            return int(self.bad_at)
        # The earliest as the largest of the negated positions (a rank with none offers one past all).
        far = trainer.max_epochs * trainer.num_training_batches + 1
        negated = torch.where(self.bad_at >= 0, -self.bad_at, -far).float()
        return -int(trainer.strategy.reduce(negated, reduce_op="max"))

    def non_finite_message(self, trainer, pl_module) -> str:
        position, local = self.first_bad(trainer), int(self.bad_at)
        epoch, batch = divmod(position, trainer.num_training_batches)
        value = f"{float(self.bad_loss)}" if local == position else "non-finite"
        what = f"the training loss became {value} at epoch {epoch + 1}, batch {batch + 1}"
        if self.every_step:
            what += ", before the weights changed"
        else:
            seen = trainer.fit_loop.epoch_loop.batch_idx + 1
            what += f" (seen at batch {seen}; no checkpoint was written after it)"
        lower = f"optim.lr={pl_module.config.optim.lr / 10:g}"
        if self.last.is_file():
            kept = f"{self.last} (the last good checkpoint) is untouched"
            advice = f"continue with a lower learning rate: vislab train --resume {self.run_dir} {lower}"
        else:
            kept = "no checkpoint had been saved yet"
            advice = f"start again with a lower learning rate, e.g. {lower}"
        return f"{what}; {kept}; {advice}"
