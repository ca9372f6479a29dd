"""Optimizer and learning-rate schedule factories: torch's own classes, configured from the config."""

from __future__ import annotations

import warnings

import torch
from torch.optim import lr_scheduler

from vislab.config import OptimConfig, SchedConfig
from vislab.errors import VislabError


def create_optimizer(params, optim: OptimConfig) -> torch.optim.Optimizer:
    if optim.name == "sgd":
        nesterov = optim.nesterov and optim.momentum > 0
        return torch.optim.SGD(
            params, optim.lr, optim.momentum, nesterov=nesterov, weight_decay=optim.weight_decay
        )
    if optim.name == "adam":
        return torch.optim.Adam(params, optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
    return torch.optim.AdamW(params, optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)


def create_scheduler(optimizer, sched: SchedConfig, total_steps: int, steps_per_epoch: int) -> dict | None:
    """A Lightning lr_scheduler config. Schedules advance every optimizer step (smooth warm-up and cosine);
    plateau reduction advances once per epoch on the validation loss."""
    if sched.name == "none":
        return None
    if sched.name == "plateau":
        plateau = lr_scheduler.ReduceLROnPlateau(
            optimizer, "min", sched.gamma, sched.patience, min_lr=sched.min_lr
        )
        return {"scheduler": plateau, "interval": "epoch", "monitor": "val_loss"}
    if sched.name == "onecycle":  # peaks keep discriminative learning rates (and a re-planned run's peaks)
        peaks = [group.get("max_lr", group["lr"]) for group in optimizer.param_groups]
        return {
            "scheduler": lr_scheduler.OneCycleLR(optimizer, peaks, total_steps=total_steps),
            "interval": "step",
        }
    for group in optimizer.param_groups:  # what torch's schedules start from (set here for LinearLR's end)
        group.setdefault("initial_lr", group["lr"])
    warmup = round(sched.warmup_epochs * steps_per_epoch)
    if warmup >= total_steps:
        raise VislabError(f"sched.warmup_epochs={sched.warmup_epochs} covers the whole run; lower it")
    if sched.name == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, total_steps - warmup, eta_min=sched.min_lr)
    elif sched.name == "linear":  # down in a straight line to min_lr (warm-up first: airbench's triangle)
        end = max(sched.min_lr / max(group["initial_lr"] for group in optimizer.param_groups), 1e-8)
        main = lr_scheduler.LinearLR(optimizer, 1.0, end, total_iters=total_steps - warmup)
    elif sched.name == "step":
        main = lr_scheduler.StepLR(optimizer, sched.step_size * steps_per_epoch, sched.gamma)
    else:
        milestones = [m * steps_per_epoch - warmup for m in sched.milestones]
        main = lr_scheduler.MultiStepLR(optimizer, milestones, sched.gamma)
    if warmup:
        ramp = lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup, total_iters=warmup)
        main = lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
    return {"scheduler": main, "interval": "step"}


def optimizers_for(module, params) -> dict | list:
    """What a LightningModule's configure_optimizers returns: the configured optimizer over `params`
    and its schedule, sized from the trainer's count of optimizer steps."""
    config, trainer = module.config, module.trainer
    optimizer = create_optimizer(params, config.optim)
    total = int(trainer.estimated_stepping_batches)
    scheduler = create_scheduler(optimizer, config.sched, total, max(1, total // trainer.max_epochs))
    return [optimizer] if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}


LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")  # what torch's schedules keep in each parameter group


def rescale_learning_rates(trainer, factor: float) -> None:
    """Scales every learning rate of a restored optimizer and its schedule by `factor`: how a run resumed
    with a new `optim.lr` (after its loss diverged, say) goes on along the same schedule, scaled."""
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            for key in LR_KEYS:
                if key in group:
                    group[key] *= factor
    for config in trainer.lr_scheduler_configs:
        schedules = [config.scheduler, *getattr(config.scheduler, "_schedulers", [])]  # SequentialLR's parts
        for schedule in schedules:
            for name in ("base_lrs", "_last_lr"):
                if hasattr(schedule, name):
                    setattr(schedule, name, [lr * factor for lr in getattr(schedule, name)])


def replan_schedule(trainer, sched: SchedConfig) -> None:
    """A run resumed with another length (`epochs=`) or schedule (`sched.*`) gets its schedule planned anew
    for the new total, standing at the step the run has reached, exactly as if it had been planned so from
    the start (timm's way): a warm-up already behind it is not repeated, and no schedule runs past its end
    (torch's cosine, restored with its old length, would climb back up). From there on it is saved in
    checkpoints like any schedule, so the run resumes bit for bit."""
    if sched.name in ("none", "plateau") or not trainer.lr_scheduler_configs:
        return  # nothing planned to a total: plateau reduction follows the validation loss
    optimizer = trainer.optimizers[0]
    for group in optimizer.param_groups:  # a fresh schedule starts from the initial rates, as on day one
        group["lr"] = group["initial_lr"]
    total = int(trainer.estimated_stepping_batches)
    planned = create_scheduler(optimizer, sched, total, max(1, total // trainer.max_epochs))
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": a replay, on purpose
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(trainer.global_step):
            planned["scheduler"].step()
    trainer.lr_scheduler_configs[0].scheduler = planned["scheduler"]
