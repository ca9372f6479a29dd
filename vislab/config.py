"""The one typed config of a run. Recipes are YAML files of it; CLI overrides are its dotted keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vislab.errors import VislabError, unknown_name
from vislab.files import write_atomically


class Section(BaseModel):
    # Unknown keys are errors, not silently ignored typos; numbers given for text fields become text.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, validate_assignment=True)


class AugmentConfig(Section):
    """Training-time augmentation. `None` means "the dataset's default", filled in by `resolve_defaults`."""

    crop_padding: int | None = None  # random crop of the native size after padding by this many pixels
    # What the padding holds: zeros (black, as torchvision's RandomCrop), or the image reflected at its
    # border (airbench's translate).
    crop_padding_mode: Literal["zeros", "reflect"] = "zeros"
    # Random resized crop: each image keeps a random part of at least this fraction of its area (aspect
    # 3:4 to 4:3), resized back; 0 = off. Replaces the padded crop; the default for photo-sized images.
    crop_scale: float | None = Field(None, ge=0, le=1)
    # Mirror a random half of the images; "alternate": a fixed random half in even epochs and the other
    # half in odd ones, so that every two epochs show each image both ways (airbench's alternating flip).
    hflip: bool | Literal["alternate"] | None = None
    rotation: float | None = Field(None, ge=0, le=180)  # random rotation within +-degrees, 0 = off
    color_jitter: float | None = None  # strength of brightness/contrast/saturation jitter, 0 = off
    hue: float | None = Field(None, ge=0, le=0.5)  # random hue shift, +-this fraction of the colour wheel
    randaugment_n: int | None = None  # ops per image, 0 = off
    randaugment_m: int | None = Field(None, ge=0, le=30)  # magnitude on RandAugment's 0..30 scale
    cutout: int | None = None  # side of the square cut out, 0 = off
    mixup: float | None = None  # Beta(alpha, alpha) of MixUp, 0 = off
    cutmix: float | None = None  # Beta(alpha, alpha) of CutMix, 0 = off


class OptimConfig(Section):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, ge=0)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    # Learning rate of BatchNorm parameters and biases / that of the weights (airbench: 64), their weight
    # decay divided by it so that decay per step stays the same.
    bias_lr_scale: float = Field(1.0, gt=0)
    # airbench's lookahead after this many epochs (airbench: 3): every 5 steps the weights are pulled back
    # to a slow average of themselves, harder as the run ends (vislab.lookahead). None: off.
    lookahead_after: int | None = Field(None, ge=0)


class SchedConfig(Section):
    name: Literal["none", "step", "multistep", "cosine", "linear", "onecycle", "plateau"] = "cosine"
    warmup_epochs: float = (
        0.0  # linear warm-up before step/multistep/cosine; cosine + warm-up is the seed recipe
    )
    min_lr: float = 0.0
    step_size: int = 30  # step
    milestones: list[int] = Field(default_factory=lambda: [30, 60, 80])  # multistep
    gamma: float = 0.1  # step, multistep, plateau
    patience: int = 5  # plateau, in epochs


class FinetuneConfig(Section):
    """How a backbone (the model's `features`) and its head are trained."""

    mode: Literal["full", "linear", "two_stage"] = (
        "full"  # linear: frozen backbone; two_stage: frozen, then not
    )
    head_epochs: int = Field(1, ge=0)  # two_stage: epochs of head-only training before the backbone unfreezes
    backbone_lr_scale: float | None = None  # backbone lr / head lr; None: 0.1 in two_stage, else 1
    head_hidden: int = Field(
        0, ge=0
    )  # timm models: a hidden layer in the head (e.g. 512), 0 = one linear layer
    head_dropout: float = Field(0.0, ge=0, lt=1)


class SegmentationConfig(Section):
    """Segmentation only (task: segmentation)."""

    ignore_index: int | None = (
        None  # mask value excluded from loss and metrics; None: the dataset's (VOC 255)
    )
    loss: Literal["ce", "focal", "dice", "ce_dice"] = "ce"
    focal_gamma: float = 2.0
    focal_alpha: float | None = None  # weight of the focal term; None = 1
    # Weight the loss by median-frequency balancing of the train masks (SegNet's choice for CamVid): rare
    # classes count, and mIoU rose from 0.30 to 0.38 on CamVid in 6 epochs (docs/benchmarks.md).
    class_weights: bool = True
    crop_size: int | None = None  # square training crops (padded with ignore); None: whole images
    # Random rescaling (of the `image_size` image) before cropping. Off by default: it cost mIoU in short
    # runs (CamVid, 6 epochs: 0.37 without, 0.23 with [0.5, 2.0]); long schedules usually take [0.5, 2.0].
    scale_range: tuple[float, float] = (1.0, 1.0)
    freeze_encoder_after: int | None = None  # optimizer steps after which the encoder is frozen (two-stage)
    sbd: bool = False  # voc2012: add the Semantic Boundaries Dataset's images to train (VOC "train_aug")


class EarlyStoppingConfig(Section):
    patience: int = 0  # epochs without improvement before stopping; 0 = off
    monitor: Literal["val_top1", "val_top5", "val_loss", "val_miou", "val_pixel_acc"] | None = (
        None  # None: task's
    )
    mode: Literal["max", "min"] = "max"
    min_delta: float = 0.0


# The precisions a trained model evaluates and predicts in (`vislab.precision.inference`).
INFERENCE_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


class TrainerConfig(Section):
    """How the run executes; passed to Lightning's Trainer."""

    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"  # e.g. ddp, ddp_spawn; on CPU DDP uses gloo
    num_nodes: int = 1
    # auto: bf16-mixed where the GPU or the CPU has bf16 units, 16-mixed on older GPUs, else 32-true
    precision: str = "auto"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    ema_decay: float | None = (
        None  # e.g. 0.999: evaluate and save an exponential moving average of the weights
    )
    channels_last: bool | None = None  # None: on for convolutional models (faster on CPUs and GPUs)
    compile: bool = False
    deterministic: bool = False
    progress_bar: bool = True
    limit_train_batches: float | int = 1.0  # fraction or count of batches per epoch, for smoke runs
    limit_val_batches: float | int = 1.0


class Config(Section):
    task: Literal["classification", "segmentation"] | None = None  # None: what the data and model imply
    data: str = "digits"  # a registered dataset name, folder:PATH or segfolder:PATH
    data_dir: str | None = None  # where datasets are downloaded; default: the user cache dir
    val_fraction: float = Field(0.1, gt=0, lt=1)  # held out from train when a dataset has no val split
    skip_bad_images: bool = False  # warn and skip unreadable images instead of stopping
    image_size: int | None = Field(
        None, ge=1
    )  # resize to this square size; default: the dataset's native size
    in_memory: bool | None = None  # hold the dataset as one uint8 tensor; default: when it fits
    num_workers: int = 4  # DataLoader workers for streamed (not in-memory) datasets
    mean: list[float] | None = None  # per-channel normalisation; default: computed on the train split
    std: list[float] | None = None

    model: str | None = None  # None: the task's (small_cnn; segmentation: deep_unet, width 16, 4 levels)
    model_args: dict[str, Any] = Field(default_factory=dict)  # keyword options of the model constructor
    pretrained: bool = False  # ImageNet weights for timm models (hub, or an installed weights package)
    weights: str | None = (
        None  # a local state dict or checkpoint to start from; a mismatched head is replaced
    )

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    seed: int = 0
    name: str | None = None  # the run folder's name under runs_dir; default: <data>-<model>-<n>
    runs_dir: str = "runs"

    @field_validator("name")
    @classmethod
    def a_name_not_a_path(cls, name: str | None) -> str | None:
        # `name=../elsewhere` would put the run folder outside runs_dir (from the web page too).
        if name is not None and ("/" in name or "\\" in name or name.startswith(".")):
            raise ValueError("a run name is a folder name, not a path: no '/', not starting with '.'")
        return name

    report: bool = True  # write runs/<name>/report/ when training ends (vislab report RUN writes it later)
    # When training ends, score the best checkpoint on the data's test split, as `vislab eval RUN --split
    # test` (eval_test.json); with test_tta, with test-time augmentation too (`--tta`).
    test: bool = False
    test_tta: bool = False

    @property
    def scores_test(self) -> bool:
        """Whether training ends by scoring the test split (`test`, or `test_tta`, which implies it)."""
        return self.test or self.test_tta

    # A resumable checkpoint every this many minutes within long epochs (0 = only at epoch ends): what a
    # machine that vanishes without a signal (kill -9, power loss) can lose at most.
    checkpoint_every_min: float = Field(5.0, ge=0)

    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # Imbalanced classes: loss weights from the train split's counts (auto: inverse frequency; effective:
    # the effective number of samples, Cui et al. 2019), and/or batches drawn class-balanced (with
    # replacement, seeded per epoch, resumable).
    class_weights: Literal["none", "auto", "effective"] = "none"
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    sched: SchedConfig = Field(default_factory=SchedConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    segmentation: SegmentationConfig = Field(default_factory=SegmentationConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)


def dotted_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every settable key of the config, nested sections written with dots."""
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            keys += dotted_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config values as one dict of dotted keys (`model_args` stays one value)."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and key != "model_args":
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = value
    return flat


def parse_overrides(words: list[str]) -> dict[str, Any]:
    """Turns `key=value` words into a nested dict; values are read as YAML (numbers, lists, booleans)."""
    nested: dict[str, Any] = {}
    for word in words:
        key, sep, text = word.partition("=")
        if not sep or not key:
            raise VislabError(f"override {word!r} is not of the form key=value")
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        *parents, leaf = key.split(".")
        target = nested
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise VislabError(f"override {word!r} conflicts with another override of {part!r}")
        target[leaf] = value
    return nested


def merge(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """Deep-merges `updates` into a copy of `base`; nested sections merge, everything else is replaced."""
    merged = dict(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "model_args":
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise VislabError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise VislabError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise VislabError(f"{path} must hold a mapping of config keys, not a {type(loaded).__name__}")
    return loaded


def build_config(values: dict[str, Any]) -> Config:
    """Validates a nested dict into a Config, with one readable line for the first problem."""
    try:
        return Config.model_validate(values)
    except ValidationError as error:
        problem = error.errors()[0]
        key = ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "extra_forbidden":
            raise unknown_name("config key", key, dotted_keys()) from None
        parts = key.split(".")
        while len(parts) > 1 and ".".join(parts) not in dotted_keys():  # a union's branch: augment.hflip.bool
            parts.pop()
        key = ".".join(parts)
        # A union fails once per branch: "a valid boolean ... or 'alternate'".
        located = [
            (".".join(map(str, p["loc"])), p["msg"].lower().removeprefix("value error, "))
            for p in error.errors()
        ]
        branches = [msg for loc, msg in located if loc == key or loc.startswith(key + ".")]
        given, expected = problem.get("input"), " or ".join(dict.fromkeys(branches))
        raise VislabError(f"config key '{key}': {expected} (got {given!r})") from None


def save_config(config: Config, path: Path) -> None:
    write_atomically(path, to_yaml(config))


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
