"""What a task hands the trainer: its LightningModule, its DataModule, and facts for the run's summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lightning as L

from vislab.config import Config


@dataclass
class Prepared:
    config: Config  # resolved: everything the data decided (normalisation, sizes) filled in
    module: L.LightningModule
    datamodule: L.LightningDataModule
    info: dict  # train_size, val_size, num_classes, classes
    skipped: list[Path] = field(default_factory=list)
