"""Data: dataset registry and loaders, batched on-device augmentation, and the DataModules."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import torch

from vislab.config import Config
from vislab.data import (  # noqa: F401  (importing registers them)
    builtin,
    folder,
    photo_archives,
    segmentation,
    tables,
    tiny_imagenet,
)
from vislab.data.images import read_images
from vislab.data.registry import FOLDER_PREFIX, LoadRequest, dataset_path, get_dataset, registered_datasets
from vislab.data.splits import Splits, channel_stats
from vislab.errors import VislabError


def default_data_dir() -> Path:
    return Path(platformdirs.user_cache_dir("vislab")) / "datasets"


def data_dir_of(config: Config) -> Path:
    return Path(config.data_dir).expanduser() if config.data_dir else default_data_dir()


def dataset_task(name: str) -> str:
    """classification or segmentation: what the dataset's labels are for."""
    return get_dataset(name).task


def photo_side(data: str, image_size: object = None) -> int | None:
    """For `data` a `folder:PATH` of photos, as trained at `image_size` (None: the images' own), the side
    they train at by default (vislab.data.folder.photo_side); else None."""
    path = dataset_path(data) if data.startswith(FOLDER_PREFIX) else None
    return folder.photo_side(path, image_size if isinstance(image_size, int) else None) if path else None


def load_dataset(config: Config, image_size: int | None = None):
    """Loads the configured dataset (Splits or SegSplits, by its task), its images at `image_size`
    (None: the dataset's own size)."""
    entry = get_dataset(config.data)  # an unknown name fails before anything is read
    request = LoadRequest(
        data_dir_of(config),
        config.val_fraction,
        image_size,
        config.skip_bad_images,
        config.in_memory,
        dataset_path(config.data),
        config.segmentation.ignore_index,
        config.segmentation.sbd,
    )
    splits = entry.load(request)
    if len(splits.train) == 0 or len(splits.val) == 0:
        raise VislabError(f"dataset {config.data} has an empty train or val split")
    return splits


def stats_sample(splits: Splits, most: int = 2000) -> torch.Tensor:
    """The train images to compute normalisation on: all in-memory ones, or an even sample of files."""
    if splits.train.in_memory:
        return splits.train.images
    files = splits.train.files[:: max(1, len(splits.train.files) // most)]
    tensors, _ = read_images(files, splits.channels, splits.image_size, skip_bad=True)
    return torch.stack([t for t in tensors if t is not None])


def with_augment_defaults(config: Config) -> Config:
    """Fills the augmentation keys left unset (null) with the dataset's defaults."""
    defaults = get_dataset(config.data).augment
    filled = {key: defaults.get(key, 0) if value is None else value for key, value in config.augment}
    return config.model_copy(update={"augment": config.augment.model_validate(filled)})


def with_normalisation(config: Config, images: torch.Tensor | None, channels: int) -> Config:
    """The config with mean and std computed on `images` (uint8 train images) unless it gives them,
    checked to hold one value per channel."""
    mean, std = config.mean, config.std
    if mean is None or std is None:
        mean, std = channel_stats(images)
    if len(mean) != channels or len(std) != channels:
        raise VislabError(
            f"mean and std need {channels} values for {config.data}, got {len(mean)}/{len(std)}"
        )
    return config.model_copy(update={"mean": mean, "std": std})


__all__ = [
    "load_dataset",
    "dataset_task",
    "with_augment_defaults",
    "with_normalisation",
    "registered_datasets",
    "data_dir_of",
    "stats_sample",
    "Splits",
]
