"""The dataset registry: each dataset registers its task, a loader, how to tell whether it is on disk, and
the augmentation that suits it (flips are wrong for digits, right for CIFAR)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vislab.errors import unknown_name

FOLDER_PREFIX = "folder:"
SEGFOLDER_PREFIX = "segfolder:"
CSV_PREFIX = "csv:"
PREFIXES = {
    FOLDER_PREFIX: "folder",
    SEGFOLDER_PREFIX: "segfolder",
    CSV_PREFIX: "csv",  # or "segcsv": the file's columns say which (vislab.data.tables)
}  # `prefix:PATH` -> the entry that loads it
HIDDEN = {"segcsv"}  # entries reached through a prefix of another's
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
    ignore_index: int | None = None  # segmentation: None for the dataset's own
    sbd: bool = False  # voc2012: add the Semantic Boundaries Dataset's images to train


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    task: str  # classification or segmentation: what the dataset's labels are for
    load: Callable[[LoadRequest], Any]  # Splits for classification, SegSplits for segmentation
    is_present: Callable[[Path], bool]
    description: str
    augment: dict = field(default_factory=dict)  # defaults for the config's `augment` section


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(entry: DatasetEntry) -> DatasetEntry:
    _DATASETS[entry.name] = entry
    return entry


def registered_datasets() -> dict[str, DatasetEntry]:
    return {name: entry for name, entry in _DATASETS.items() if name not in HIDDEN}


def get_dataset(name: str) -> DatasetEntry:
    """The entry for a dataset name; `folder:PATH` and `segfolder:PATH` map to the folder loaders."""
    if name.startswith("python:"):  # a Dataset object handed to vislab.train in this process
        from vislab.data.objects import python_dataset

        return python_dataset(name)
    for prefix, entry in PREFIXES.items():
        if name.startswith(prefix):
            if prefix == CSV_PREFIX:
                from vislab.data.tables import table_task

                path = dataset_path(name)
                entry = "segcsv" if table_task(path) == "segmentation" else "csv"
            return _DATASETS[entry]
    if name not in _DATASETS or name in PREFIXES.values() or name in HIDDEN:
        raise unknown_name("dataset", name, [shown_name(n) for n in _DATASETS if n not in HIDDEN])
    return _DATASETS[name]


def shown_name(name: str) -> str:
    """How a user writes the dataset: `folder:PATH` for the folder loaders, else its name."""
    if name == "csv":
        return "csv:FILE"
    return f"{name}:PATH" if name in PREFIXES.values() else name


def dataset_path(name: str) -> Path | None:
    """The PATH of `folder:PATH` or `segfolder:PATH`, else None."""
    for prefix in PREFIXES:
        if name.startswith(prefix):
            return Path(name.removeprefix(prefix)).expanduser()
    return None
