"""The dataset registry: each dataset registers a loader, how to tell whether it is on disk, and the
augmentation that suits it (flips are wrong for digits, right for CIFAR)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vislab.data.splits import Splits
from vislab.errors import unknown_name

FOLDER_PREFIX = "folder:"
# Crop with 4-pixel padding and flip: the standard augmentation for small photos (CIFAR, folders).
PHOTO_AUGMENT = dict(crop_padding=4, hflip=True, color_jitter=0.0, randaugment_n=0, randaugment_m=9, cutout=0)


@dataclass(frozen=True)
class LoadRequest:
    """What a loader needs from the config."""

    data_dir: Path
    val_fraction: float
    image_size: int | None  # None: the dataset's native size
    skip_bad_images: bool
    in_memory: bool | None
    path: Path | None = None  # for folder datasets


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    load: Callable[[LoadRequest], Splits]
    is_present: Callable[[Path], bool]
    description: str
    augment: dict = field(default_factory=dict)  # defaults for the config's `augment` section


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(entry: DatasetEntry) -> DatasetEntry:
    _DATASETS[entry.name] = entry
    return entry


def registered_datasets() -> dict[str, DatasetEntry]:
    return dict(_DATASETS)


def get_dataset(name: str) -> DatasetEntry:
    """The entry for a dataset name; `folder:PATH` maps to the folder loader."""
    if name.startswith(FOLDER_PREFIX):
        return _DATASETS["folder"]
    if name not in _DATASETS or name == "folder":
        raise unknown_name("dataset", name, [n for n in _DATASETS if n != "folder"] + ["folder:PATH"])
    return _DATASETS[name]
