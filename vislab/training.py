"""`vislab train`: config -> data + model -> task -> Lightning Trainer -> run folder."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar, WeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger
from torch.optim.swa_utils import get_ema_multi_avg_fn

from vislab.checkpoint import AtomicCheckpointIO, load_checkpoint
from vislab.config import Config, merge, read_yaml, save_config
from vislab.distributed import RUN_DIR_ENV, agree, is_rank_zero, open_group
from vislab.errors import RunStopped, Stopped, VislabError, describe_os_error
from vislab.files import remove, write_json
from vislab.lookahead import Lookahead
from vislab.models import count_parameters, require_model_code, run_label
from vislab.precision import legacy_auto, resolve_precision
from vislab.progress import LiveProgress
from vislab.resilience import RunGuard
from vislab.runs import EpochLog, create_run_dir, environment, summarize
from vislab.stopping import STOP
from vislab.tasks import evaluate, get_task, report, resolve_config
from vislab.tasks.finetune import BackboneFreeze, FreezeEncoderAfter


class ProgressBar(TQDMProgressBar):
    """Lightning's bar without the logger's version number, which says nothing in a named run folder."""

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class EpochLines(L.pytorch.callbacks.ProgressBar):
    """One line per epoch on stderr, for output that is not a terminal (a log file, CI, a notebook),
    where a redrawn bar leaves hundreds of lines."""

    def __init__(self):
        super().__init__()
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        logged = sorted(trainer.callback_metrics.items())
        shown = "  ".join(f"{k} {float(v):.4f}" for k, v in logged if k.startswith(("train_", "val_")))
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {shown}", file=sys.stderr, flush=True)


def progress_display() -> L.pytorch.callbacks.ProgressBar:
    """A bar for a terminal, a line per epoch for anything else."""
    return ProgressBar() if sys.stderr.isatty() else EpochLines()


def build_trainer(
    config: Config, run_dir: Path, epoch_log: EpochLog, guard: RunGuard, extra: list[L.Callback]
) -> L.Trainer:
    t = config.trainer
    stopping = config.early_stopping
    # Lookahead pulls the weights at the end of a step: before RunGuard, whose checkpoint on a stop signal
    # must hold the pulled weights.
    lookahead = [Lookahead(config.optim.lookahead_after)] if config.optim.lookahead_after is not None else []
    callbacks: list[L.Callback] = [
        epoch_log,
        *lookahead,
        guard,
        LiveProgress(run_dir, config.model),
        # Saved at the end of each training epoch, after validation and the metrics row, so that the
        # checkpoint holds the whole epoch: weights, optimizer, schedule, early-stopping and metrics history.
        # Two callbacks, best first: last.ckpt then records the best score that best.ckpt already holds.
        # (ModelCheckpoint's own save_last skips epochs that set no new best since Lightning 2.6.)
        ModelCheckpoint(
            run_dir / "checkpoints",
            filename="best",
            monitor=stopping.monitor,
            mode=stopping.mode,
            save_top_k=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        ),
        ModelCheckpoint(
            run_dir / "checkpoints",
            filename="last",
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        ),
    ]
    if stopping.patience:
        callbacks.append(
            EarlyStopping(
                stopping.monitor,
                stopping.min_delta,
                stopping.patience,
                mode=stopping.mode,
                check_on_train_epoch_end=True,
            )
        )
    if config.segmentation.freeze_encoder_after is not None:
        callbacks.append(FreezeEncoderAfter(config.segmentation.freeze_encoder_after))
    if config.finetune.mode != "full":
        callbacks.append(
            BackboneFreeze(config.finetune.head_epochs if config.finetune.mode == "two_stage" else None)
        )
    if t.ema_decay:
        callbacks.append(WeightAveraging(multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay)))
    if t.progress_bar:
        callbacks.append(progress_display())
    callbacks += extra  # last: a sweep's pruning sees the epoch's row and checkpoints written
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=resolve_precision(t),
        max_epochs=config.epochs,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        deterministic=t.deterministic,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        callbacks=callbacks,
        logger=TensorBoardLogger(run_dir, name="", version="tensorboard", default_hp_metric=False),
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # our DataModule shards with a seeded DistributedSampler itself
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=1,  # only epoch metrics are logged; this just silences a warning
        default_root_dir=run_dir,
    )


def resume_config(run_dir: Path, overrides: dict) -> Config:
    """The saved config of a run to resume, with overrides applied, once its last checkpoint checks out."""
    if not run_dir.is_dir():
        raise VislabError(f"cannot resume {run_dir}: no such run folder")
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise VislabError(f"cannot resume {run_dir}: it has no checkpoints/last.ckpt")
    saved = read_yaml(run_dir / "config.yaml")
    if isinstance(saved.get("model"), str):  # a user's code is never imported from a run's config
        require_model_code(saved["model"], run_dir)
    config = resolve_config(merge(saved, overrides))
    if saved.get("trainer", {}).get("precision", "auto") == "auto" and config.trainer.precision == "auto":
        config.trainer.precision = legacy_auto(config.trainer)  # saved before `auto` was recorded
    found = load_checkpoint(last, prefer="last").meta.task
    if found != config.task:
        raise VislabError(f"{last} is a {found} checkpoint, but {run_dir}/config.yaml is for {config.task}")
    return config


def open_run_dir(config: Config, skipped: list[Path]) -> Path:
    """Creates the run folder with its config.yaml, or, in a rank Lightning's launcher started, joins rank
    0's (torchrun and srun: `vislab.distributed.agree`)."""
    if not is_rank_zero():
        return Path(os.environ[RUN_DIR_ENV])
    run_dir = create_run_dir(config.runs_dir, config.name, config.data, run_label(config.model))
    os.environ[RUN_DIR_ENV] = str(run_dir)
    save_config(config, run_dir / "config.yaml")
    if skipped:
        listing = run_dir / "skipped_images.txt"
        listing.write_text("".join(f"{p}\n" for p in skipped))
        print(f"vislab: warning: skipped {len(skipped)} unreadable images ({listing})", file=sys.stderr)
    return run_dir


def train(config: Config, resume: Path | None = None, callbacks: list[L.Callback] = ()) -> Path:
    """Trains a model for the config's task (or resumes the run folder `resume`); returns the run folder.
    `callbacks` join vislab's own (a sweep's pruning).
    A stop signal before training starts leaves no new run folder behind; during training it stops at the
    next step with a checkpoint; after the last step, once summary.json is written (vislab.stopping)."""
    with STOP.installed():
        run_dir, global_zero = fit(config, resume, list(callbacks))
        doing, later = "", ""
        try:
            if config.scores_test and global_zero:
                doing, later = "scoring the test split", f"score it with: {test_command(run_dir, config)}"
                evaluate(run_dir, "test", tta=config.test_tta, write=True)
            if config.report and global_zero:
                doing, later = "writing the report", f"write the report with: vislab report {run_dir}"
                report(run_dir)
        except Stopped as stop:
            raise RunStopped(
                f"stopped by {stop.name} while {doing}, after training finished (summary.json is written); "
                f"{later}",
                exit_code=stop.exit_code,
            ) from None
    return run_dir


def test_command(run_dir: Path, config: Config) -> str:
    """The command that scores a run's test split as `test`/`test_tta` would have."""
    return f"vislab eval {run_dir} --split test" + " --tta" * config.test_tta


def fit(config: Config, resume: Path | None, callbacks: list[L.Callback] = ()) -> tuple[Path, bool]:
    """Training up to its summary.json: everything of `train` but the report. Returns the run folder and
    whether this process is the one that writes (rank 0)."""
    quiet_lightning()
    L.seed_everything(config.seed, workers=True, verbose=False)
    if config.task is None:  # a Config built in Python rather than by load_config
        config = resolve_config(config.model_dump(exclude_unset=True))
    created = resume is None and is_rank_zero()
    run_dir, last = resume, None
    try:
        launched = open_group(config)  # torchrun, srun: every rank runs this from the start
        task = get_task(config.task)
        prepared = task.prepare(config)
        config = prepared.config
        if config.scores_test and prepared.datamodule.splits.split("test") is None:
            key = "test_tta" if config.test_tta else "test"
            raise VislabError(f"{key}=true, but {config.data} has no test split to score")
        make = lambda: open_run_dir(config, prepared.skipped)  # noqa: E731
        if launched:
            run_dir = agree(config, make, resume)
        else:
            run_dir = resume if resume is not None else make()
        if resume is not None and is_rank_zero():
            save_config(config, run_dir / "config.yaml")  # with the overrides it was resumed with
            for stale in (run_dir / "checkpoints").glob(".*.tmp*"):  # a process killed while saving
                remove(stale)
        if is_rank_zero():  # where to look while it trains (the web UI reads this line too)
            print(f"vislab: run folder {run_dir}", file=sys.stderr)
        epoch_log = EpochLog(run_dir / "metrics.csv", task.metric_columns)
        guard = RunGuard(run_dir, config.checkpoint_every_min)
        last = run_dir / "checkpoints" / "last.ckpt"
        trainer = build_trainer(config, run_dir, epoch_log, guard, list(callbacks))
        ckpt_path = last if resume else None
        trainer.fit(prepared.module, datamodule=prepared.datamodule, ckpt_path=ckpt_path, weights_only=True)
        guard.stop_if_cut_short(trainer)
        STOP.hold("writing summary.json")
        if trainer.is_global_zero:
            extra = {
                "params": count_parameters(prepared.module.model),
                "task": config.task,
                "precision": config.trainer.precision,
                **prepared.info,
                **environment(),
            }
            stopping = config.early_stopping
            summary = summarize(epoch_log.rows, epoch_log.columns, stopping.monitor, stopping.mode, extra)
            write_json(run_dir / "summary.json", summary)
    except (VislabError, Stopped) as error:
        nothing_saved = last is None or not last.is_file()
        if created and run_dir is not None and nothing_saved:  # no half-made run folder stays behind
            shutil.rmtree(run_dir, ignore_errors=True)
        if isinstance(error, VislabError):
            raise
        kept = "nothing was saved" if nothing_saved else f"continue with: vislab train --resume {run_dir}"
        raise RunStopped(
            f"stopped by {error.name} before training finished; {kept}", error.exit_code
        ) from None
    except OSError as error:  # disk full, quota, a write refused: what was saved before stays intact
        kept = (
            f"{last} is intact" if last is not None and last.is_file() else "no checkpoint had been saved yet"
        )
        raise RunStopped(
            f"training stopped: {describe_os_error(error)}; {kept}; make room, then continue with: "
            f"vislab train --resume {run_dir}",
            exit_code=1,
        ) from None
    finally:
        held = STOP.release()
    if held is not None:  # came after the last step: the run is whole, only its test score and report missing
        name = signal.Signals(held).name
        advice = f"write its report with: vislab report {run_dir}" if config.report else "it has no report"
        if config.scores_test:
            advice = f"score the test split with: {test_command(run_dir, config)}; {advice}"
        raise RunStopped(
            f"stopped by {name} after training finished; checkpoints and summary.json are written; {advice}",
            exit_code=128 + held,
        )
    return run_dir, trainer.is_global_zero


def quiet_lightning() -> None:
    """Lightning's start-up banners (GPU available, LOCAL_RANK...) and its "Received SIGTERM" (vislab says
    what it does with a signal) are noise in a CLI."""
    quiet = ("utilities.rank_zero", "accelerators.cuda", "trainer.connectors.signal_connector")
    for name in (f"lightning.pytorch.{module}" for module in quiet):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*")  # Lightning's own call
    # A resumed run writes into its own checkpoint folder, and its sampler resumes mid-epoch by itself.
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
