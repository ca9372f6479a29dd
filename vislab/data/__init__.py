"""Data: dataset registry and loaders, batched on-device augmentation, and the DataModule."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import torch

from vislab.config import Config
from vislab.data import builtin, folder, tiny_imagenet  # noqa: F401  (importing registers the datasets)
from vislab.data.images import read_images
from vislab.data.registry import FOLDER_PREFIX, LoadRequest, get_dataset, registered_datasets
from vislab.data.splits import Splits, channel_stats
from vislab.errors import VislabError
from vislab.models import model_input_size, needs_exact_input_size
from vislab.models.timm_models import timm_data_config


def default_data_dir() -> Path:
    return Path(platformdirs.user_cache_dir("vislab")) / "datasets"


def data_dir_of(config: Config) -> Path:
    return Path(config.data_dir).expanduser() if config.data_dir else default_data_dir()


def load_splits(config: Config) -> Splits:
    """Loads the configured dataset at the size the model needs."""
    get_dataset(config.data)  # an unknown name fails before anything is read
    size = config.image_size
    if size is None and needs_exact_input_size(config.model):
        size = model_input_size(config.model)
    path = (
        Path(config.data.removeprefix(FOLDER_PREFIX)).expanduser()
        if config.data.startswith(FOLDER_PREFIX)
        else None
    )
    request = LoadRequest(
        data_dir_of(config), config.val_fraction, size, config.skip_bad_images, config.in_memory, path
    )
    splits = get_dataset(config.data).load(request)
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


def resolve_defaults(config: Config, splits: Splits) -> Config:
    """Fills what the config left to the data: augmentation defaults, normalisation, image size.
    The result is what the run folder records, so a rerun needs nothing but its config.yaml."""
    mean, std = config.mean, config.std
    from_weights = (config.pretrained or config.weights) and needs_exact_input_size(config.model)
    if (mean is None or std is None) and from_weights:  # what the weights were trained on
        _, mean, std = timm_data_config(config.model.removeprefix("timm:"), config.pretrained)
        if splits.channels == 1:  # timm folds RGB first-layer weights into one channel; so do the statistics
            mean, std = [sum(mean) / 3], [sum(std) / 3]
    if mean is None or std is None:
        mean, std = channel_stats(stats_sample(splits))
    if len(mean) != splits.channels or len(std) != splits.channels:
        raise VislabError(
            f"mean and std need {splits.channels} values for {config.data}, got {len(mean)}/{len(std)}"
        )
    update = {"mean": mean, "std": std, "image_size": splits.image_size}
    return with_augment_defaults(config).model_copy(update=update)


__all__ = [
    "load_splits",
    "resolve_defaults",
    "with_augment_defaults",
    "registered_datasets",
    "data_dir_of",
    "Splits",
]
