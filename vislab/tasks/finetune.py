"""Fine-tuning: a backbone frozen for linear probing, or for the first epochs of two-stage training; and
the segmentation seeds' encoder frozen after a number of steps."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn

from vislab.models import backbone_of


def freeze(backbone: nn.Module) -> None:
    """Freezes weights and BatchNorm statistics. Lightning puts the whole model back in train mode each
    epoch; frozen BatchNorm layers must keep normalising with their running statistics, as at evaluation."""
    BaseFinetuning.freeze(backbone, train_bn=False)
    for module in backbone.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class BackboneFreeze(L.Callback):
    """Freezes the model's backbone (weights and BatchNorm statistics) before epoch `until`, or for the
    whole run when `until` is None. Whether it is frozen depends on the epoch alone, so resuming is exact.
    Lightning's BaseFinetuning supplies the freezing; the optimizer holds the backbone from the start (in its
    own parameter group with its own learning rate), and frozen parameters simply get no gradient."""

    def __init__(self, until: int | None):
        self.until = until

    def frozen(self, epoch: int) -> bool:
        return self.until is None or epoch < self.until

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            BaseFinetuning.freeze(backbone_of(pl_module.model), train_bn=False)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        backbone = backbone_of(pl_module.model)
        if self.frozen(trainer.current_epoch):
            freeze(backbone)
        else:
            BaseFinetuning.make_trainable(backbone)

    # Lightning skips on_train_epoch_start for an epoch resumed mid-way: apply the epoch's state at the start.
    on_train_start = on_train_epoch_start


class FreezeEncoderAfter(L.Callback):
    """The segmentation seeds' two-stage training: after `steps` optimizer steps the encoder (weights and
    BatchNorm statistics) is frozen and only the decoder keeps learning. Depends on the step count alone."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step >= self.steps:
            freeze(backbone_of(pl_module.model))
