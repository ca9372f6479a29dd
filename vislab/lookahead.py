"""airbench's lookahead (Jordan 2024, after Zhang et al. 2019): late in training the weights are pulled
back, every few steps, towards a slow average of themselves, which ends the run in a flatter, more
accurate place than the last step's weights."""

from __future__ import annotations

import lightning as L
import torch

EVERY = 5  # optimizer steps between pulls
DECAY, POWER = 0.95, 3.0  # the pull's decay per step, grown as (step / total) ** POWER


class Lookahead(L.Callback):
    """From epoch `after` (0-based) on, every EVERY optimizer steps the slow copy of the model's floating
    state (weights and BatchNorm statistics) moves to `decay * slow + (1 - decay) * fast`, with `decay =
    DECAY ** EVERY * (step / total) ** POWER`, and the model is set to it; each epoch's last step ends on
    the slow copy, so that validation and checkpoints see it. The slow copy is saved in checkpoints, so a
    run stopped mid-epoch resumes exactly (the callback runs before RunGuard's, whose checkpoint on a stop
    signal then holds the step's pull)."""

    def __init__(self, after: int):
        self.after = after
        self.slow: dict[str, torch.Tensor] | None = None
        self.pulled_at = -1  # the optimizer step last pulled at (batches of one step under accumulation)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if trainer.current_epoch < self.after:
            return
        if step % EVERY == 0 and step != self.pulled_at:
            self.pulled_at = step
            decay = DECAY**EVERY * (step / trainer.estimated_stepping_batches) ** POWER
            self.pull(pl_module, decay)
        if batch_idx + 1 >= trainer.num_training_batches and self.slow is not None:
            self.pull(pl_module, 1.0)

    @torch.no_grad()
    def pull(self, pl_module, decay: float) -> None:
        state = {k: v for k, v in pl_module.model.state_dict().items() if v.is_floating_point()}
        if self.slow is None:
            self.slow = {k: v.detach().clone() for k, v in state.items()}
            return
        for key, fast in state.items():
            slow = self.slow[key]
            if slow.device != fast.device:  # restored from a checkpoint, which loads onto the CPU
                slow = self.slow[key] = slow.to(fast.device)
            slow.lerp_(fast, 1 - decay)
            fast.copy_(slow)

    def state_dict(self) -> dict:
        return {"slow": self.slow, "pulled_at": self.pulled_at}

    def load_state_dict(self, state_dict: dict) -> None:
        self.slow, self.pulled_at = state_dict["slow"], state_dict["pulled_at"]
