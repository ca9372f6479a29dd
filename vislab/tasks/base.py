"""What every task provides, and the LightningModule behaviour the tasks share. A task is one `Task`
record: the CLI, the trainer and the UI look it up by name and call it; nothing else asks which task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric, Metric

from vislab.checkpoint import Checkpoint, ModelMeta
from vislab.config import Config, build_config, merge, parse_overrides
from vislab.data import dataset_task
from vislab.data.module import position_seed
from vislab.errors import VislabError
from vislab.models import backbone_of, create_model
from vislab.optim import optimizers_for, replan_schedule, rescale_learning_rates
from vislab.precision import resolve_precision


@dataclass
class Prepared:
    """What a task hands the trainer."""

    config: Config  # resolved: everything the data decided (normalisation, sizes) filled in
    module: L.LightningModule
    datamodule: L.LightningDataModule
    info: dict  # train_size, val_size, num_classes, classes: facts for the run's summary
    skipped: list[Path] = field(default_factory=list)


@dataclass
class Preview:
    """A dataset at a glance, for the UI: one line, a table of counts, and sample pictures."""

    summary: str
    columns: list[str]
    rows: list[list]
    samples: list[tuple[Any, str]]  # (HxWx3 uint8 array, caption)


LEGEND = "colours"  # the caption of a mask colours' legend among the pictures


@dataclass
class Shown:
    """One image's prediction as the UI shows it."""

    name: str
    top: dict[str, float] | None  # class -> probability (classification)
    pictures: list[tuple[Any, str]]  # (HxWx3 uint8 array, caption): the image, Grad-CAM or masks
    row: dict  # its row of the downloadable CSV


@dataclass(frozen=True)
class Task:
    name: str
    default_model: str
    default_model_args: dict  # used only with the default model
    # In place of the default model where the data are a folder of photos (vislab.data.photo_side): a
    # pretrained model and what fine-tuning it needs, under the values the user gave.
    photo_defaults: dict
    defaults: dict  # config values the task starts from, under recipes and overrides
    monitor: str  # the validation metric that picks the best checkpoint
    metric_columns: list[str]  # of metrics.csv
    scores: list[tuple[str, str]]  # (label, summary.json key): the headline numbers of compare
    # Config keys (or key=value) that mean nothing for this task, with why: setting one is an error, not a
    # silent no-op.
    foreign_keys: dict[str, str]
    prepare: Callable[[Config], Prepared]
    evaluate: Callable[[Checkpoint, str, list[str], bool], dict]  # (checkpoint, split, overrides, tta)
    describe_eval: Callable[[dict], str]  # the one line `vislab eval` prints
    # (checkpoint of a finished run, ReportOptions, the folder to write) -> report.html
    report: Callable[[Checkpoint, Any, Path], Path]
    export_inputs: Callable[[Checkpoint, int], torch.Tensor]  # real images as model input, for checks
    any_input_size: bool  # the model takes any height and width (exports keep them dynamic)
    # For the web UI: a dataset at a glance; predictions as pictures (predictor, files, topk); and the
    # images behind a confusion-matrix cell (checkpoint, split, true class, predicted class).
    preview: Callable[[Config], Preview]
    show: Callable[[Any, list[Path], int], list[Shown]]
    confusion_images: Callable[[Checkpoint, str, int, int], list[tuple[Any, str]]]
    # Started when a run is shown, so that its first cell click need not wait for a slow pass (None: none).
    prefetch_cells: Callable[[Checkpoint, str], None] | None


def eval_config(meta: ModelMeta, overrides: list[str] | None) -> Config:
    """The config a checkpoint is evaluated with: its run's, with `key=value` overrides (other data)."""
    config = build_config(merge(meta.config, parse_overrides(overrides or [])))
    if dataset_task(config.data) != meta.task:
        raise VislabError(
            f"{config.data} is a {dataset_task(config.data)} dataset; this is a {meta.task} model"
        )
    return config


def with_tta(result: dict, without: dict, score: str) -> dict:
    """An evaluation with test-time augmentation, its headline `score` without it and the gain beside."""
    gain = round(result[score] - without[score], 6)
    return result | {"tta": {"score": score, "with": result[score], "without": without[score], "gain": gain}}


def wants_channels_last(config: Config, model: nn.Module) -> bool:
    """`trainer.channels_last`, or when unset: for models built from 2-D convolutions, where the
    channels-last layout is faster on CPUs (oneDNN) and on GPUs with tensor cores alike."""
    if config.trainer.channels_last is not None:
        return config.trainer.channels_last
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def build_model(config: Config, num_classes: int, channels: int, size: int) -> tuple[nn.Module, Config]:
    """The configured network in its memory layout (and compiled when asked), and the config with the
    layout and the precision decided (config.yaml records what `auto` became on this machine)."""
    finetune = config.finetune
    model = create_model(
        config.model,
        num_classes,
        channels,
        size,
        config.pretrained,
        config.weights,
        finetune.head_hidden,
        finetune.head_dropout,
        **config.model_args,
    )
    channels_last = wants_channels_last(config, model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.trainer.compile:
        model.compile()  # in place, so checkpoints keep the plain parameter names
    decided = {"channels_last": channels_last, "precision": resolve_precision(config.trainer)}
    return model, config.model_copy(update={"trainer": config.trainer.model_copy(update=decided)})


RANK_METRICS = (
    "train_metrics_by_rank"  # in DDP checkpoints: so that a resume mid-epoch is exact on every rank
)


class TaskModule(L.LightningModule):
    """A model, its config and its metadata; optimizers with discriminative learning rates for the
    backbone; the metadata saved into every checkpoint."""

    def __init__(self, model: nn.Module, config: Config, meta: ModelMeta):
        super().__init__()
        self.model, self.config, self.meta = model, config, meta
        self.preprocess = meta.preprocess  # how validation reads its images
        # No NaN check here: it reads the device every step, and RunGuard stops a non-finite loss anyway.
        self.train_loss = MeanMetric(nan_strategy="disable")
        # Weighted by images and summed over ranks: the same value whatever the number of processes.
        self.val_loss = MeanMetric()
        self.resumed_lr: float | None = None  # the learning rate the checkpoint resumed from was trained at
        self.resumed_plan: dict | None = None  # the schedule's plan in the checkpoint resumed from

    def log_train_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        # The weight made on the device: a Python number would be copied there, a wait on every step.
        self.train_loss.update(loss.detach(), loss.new_full((), batch_size))
        self.log("train_loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)

    def train_metrics(self) -> list[Metric]:
        return [m for name, m in self.named_children() if name.startswith("train_") and isinstance(m, Metric)]

    # Training metrics accumulate over the epoch. They are saved in checkpoints, so that a run resumed
    # mid-epoch reports the same epoch figures as one that never stopped, and reset when an epoch starts
    # (Lightning calls on_train_epoch_start for a fresh epoch only, not for one resumed mid-way).
    def setup(self, stage: str) -> None:
        for metric in self.train_metrics():
            metric.persistent(True)

    def on_train_epoch_start(self) -> None:
        for metric in self.train_metrics():
            metric.reset()
        self.start_layers_epoch()

    def start_layers_epoch(self) -> None:
        """Layers whose training depends on the epoch (airbench's whitening bias, frozen after its first
        epochs) are told which one starts. Under DDP, whose gradient buckets are fixed when it wraps the
        model, a parameter that stops learning mid-run is refused before any step."""
        layers = [m for m in self.model.modules() if callable(getattr(m, "start_epoch", None))]
        before = [p.requires_grad for p in self.model.parameters()]
        if self.trainer.world_size > 1 and layers:
            for layer in layers:
                layer.start_epoch(self.trainer.max_epochs - 1)
            if [p.requires_grad for p in self.model.parameters()] != before:
                raise VislabError(
                    f"{self.config.model} freezes a layer part-way through the run (model_args), which "
                    "DDP cannot follow: leave that model argument out when training on several processes"
                )
        for layer in layers:
            layer.start_epoch(self.current_epoch)

    def model_inputs(self, images: torch.Tensor) -> torch.Tensor:
        if self.config.trainer.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def seed_batch(self, batch_idx: int) -> None:
        torch.manual_seed(position_seed(self.config.seed, self.global_rank, self.current_epoch, batch_idx))

    def parameter_groups(self) -> list[dict]:
        """Backbone and head as two groups when fine-tuning with discriminative learning rates; each split
        again into weights and BatchNorm/bias parameters when `optim.bias_lr_scale` is not 1."""
        finetune, lr = self.config.finetune, self.config.optim.lr
        scale = finetune.backbone_lr_scale
        if scale is None:
            scale = 0.1 if finetune.mode == "two_stage" else 1.0
        backbone = backbone_of(self.model)
        if scale == 1.0 or backbone is None:
            groups = [{"params": list(self.model.parameters()), "lr": lr}]
        else:
            inside = set(backbone.parameters())
            groups = [
                {"params": list(backbone.parameters()), "lr": lr * scale},
                {"params": [p for p in self.model.parameters() if p not in inside], "lr": lr},
            ]
        return self.split_biases(groups)

    def split_biases(self, groups: list[dict]) -> list[dict]:
        optim = self.config.optim
        if optim.bias_lr_scale == 1.0:
            return groups
        norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
        biases = {id(p) for m in self.model.modules() if isinstance(m, norms) for p in m.parameters()}
        biases |= {id(p) for name, p in self.model.named_parameters() if name.endswith(".bias")}
        split = []
        for group in groups:
            for is_bias in (False, True):
                params = [p for p in group["params"] if (id(p) in biases) == is_bias]
                scale = optim.bias_lr_scale if is_bias else 1.0
                decay = optim.weight_decay / scale
                split.append({"params": params, "lr": group["lr"] * scale, "weight_decay": decay})
        return [group for group in split if group["params"]]

    def configure_optimizers(self):
        return optimizers_for(self, self.parameter_groups())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vislab"] = self.meta.to_dict()
        if self.trainer.world_size > 1:  # every rank's running training metrics, not only rank 0's
            checkpoint[RANK_METRICS] = {
                key: self.all_gather(value)
                for key, value in checkpoint["state_dict"].items()
                if key.startswith("train_")
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint["vislab"].get("config", {})
        self.resumed_lr = saved.get("optim", {}).get("lr")
        self.resumed_plan = schedule_plan(saved)
        by_rank = checkpoint.get(RANK_METRICS, {})
        if by_rank and all(len(v) == self.trainer.world_size for v in by_rank.values()):
            checkpoint["state_dict"].update({key: v[self.global_rank] for key, v in by_rank.items()})

    def on_train_start(self) -> None:
        """A run resumed with another `optim.lr` scales its restored optimizer and schedule to it; one
        resumed with another length or schedule re-plans the schedule for it."""
        lr = self.config.optim.lr
        if self.resumed_lr and lr != self.resumed_lr:
            rescale_learning_rates(self.trainer, lr / self.resumed_lr)
        planned = schedule_plan(self.config.model_dump(mode="json"))
        if self.resumed_plan is not None and self.resumed_plan != planned:
            replan_schedule(self.trainer, self.config.sched)
        self.start_layers_epoch()  # an epoch resumed mid-way gets no on_train_epoch_start


def schedule_plan(config: dict) -> dict:
    """What a run's learning-rate schedule is planned from (a run's config as saved in its checkpoints)."""
    return {"epochs": config.get("epochs"), "sched": config.get("sched")}
