"""Fine-tuning: a backbone frozen for linear probing, or for the first epochs of two-stage training."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn


class BackboneFreeze(L.Callback):
    """Freezes the model's `features` (weights and BatchNorm statistics) before epoch `until`, or for the
    whole run when `until` is None. Whether it is frozen depends on the epoch alone, so resuming is exact.
    Lightning's BaseFinetuning supplies the freezing; the optimizer holds the backbone from the start (in its
    own parameter group with its own learning rate), and frozen parameters simply get no gradient."""

    def __init__(self, until: int | None):
        self.until = until

    def frozen(self, epoch: int) -> bool:
        return self.until is None or epoch < self.until

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            BaseFinetuning.freeze(pl_module.model.features, train_bn=False)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        backbone = pl_module.model.features
        if not self.frozen(trainer.current_epoch):
            BaseFinetuning.make_trainable(backbone)
            return
        BaseFinetuning.freeze(backbone, train_bn=False)
        # Lightning puts the whole model back in train mode each epoch; frozen BatchNorm layers must keep
        # normalising with their pretrained running statistics, as at evaluation.
        for module in backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
