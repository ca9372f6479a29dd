"""The run folder: its name, the per-epoch metrics.csv, and summary.json."""

from __future__ import annotations

import csv
import io
import platform
import re
import time
from pathlib import Path

import lightning as L
import torch

import vislab
from vislab.errors import VislabError
from vislab.files import write_atomically, write_json


def create_run_dir(runs_dir: str | Path, name: str | None, data: str, model: str) -> Path:
    """Creates runs/<name>; without a name, <data>-<model>-<n> with the first free n."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    if name:
        path = runs_dir / name
        try:
            path.mkdir()
        except FileExistsError:
            raise VislabError(
                f"run folder {path} already exists: pick another name= or --resume it"
            ) from None
        return path
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(data.removeprefix('folder:')).name}-{model}").strip("_")
    for number in range(1, 100_000):
        path = runs_dir / f"{stem}-{number}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise VislabError(f"no free run name under {runs_dir}")


class EpochLog(L.Callback):
    """Writes one metrics.csv row per epoch. The rows also live in the checkpoint, so a resumed run
    rewrites exactly the history its checkpoint saw, with no duplicate or missing epochs."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        self.rows: list[dict] = []
        self.epoch_start = self.fit_start = self.val_start = self.val_time = 0.0
        self.resumed = {"wall_s": 0.0, "epoch_s": 0.0}  # the clocks of the checkpoint a run resumed from

    # Times accumulate across resumes: this session's clocks start where the checkpoint's stopped (an epoch
    # resumed mid-way gets no on_train_epoch_start, so its clock is set here too).
    def on_train_start(self, trainer, pl_module) -> None:
        now = time.perf_counter()
        self.fit_start, self.epoch_start = now - self.resumed["wall_s"], now - self.resumed["epoch_s"]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_start, self.val_time = time.perf_counter(), 0.0

    # Lightning validates inside the training epoch; its time is kept out of training throughput.
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.val_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self.val_time += time.perf_counter() - self.val_start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        row = {"epoch": trainer.current_epoch + 1}  # counted from 1, as people count (Lightning: from 0)
        row |= {
            k: round(metrics[k], 6) for k in self.columns if k.startswith(("train_", "val_")) and k in metrics
        }
        row["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        row["epoch_time_s"] = round(time.perf_counter() - self.epoch_start, 3)
        row["train_time_s"] = round(row["epoch_time_s"] - self.val_time, 3)
        row["wall_time_s"] = round(time.perf_counter() - self.fit_start, 3)
        row["train_images"] = (
            trainer.num_training_batches * trainer.train_dataloader.batch_size * trainer.world_size
        )
        self.rows.append(row)
        if trainer.is_global_zero:
            self.write()

    def write(self) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomically(self.path, text.getvalue())

    def state_dict(self) -> dict:
        now = time.perf_counter()
        return {"rows": self.rows, "wall_s": now - self.fit_start, "epoch_s": now - self.epoch_start}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict["rows"])
        if self.rows and self.rows[0]["epoch"] == 0:  # a checkpoint written before epochs counted from 1
            self.rows = [row | {"epoch": row["epoch"] + 1} for row in self.rows]
        self.resumed = {key: state_dict.get(key, 0.0) for key in self.resumed}


def summarize(rows: list[dict], columns: list[str], monitor: str, mode: str, extra: dict) -> dict:
    """The run's headline numbers: best (by `monitor`) and final value of every validation metric;
    accuracies and IoUs are fractions in 0..1."""
    if not rows:
        raise VislabError("the run finished no epoch, so there is nothing to summarise")
    pick = max if mode == "max" else min
    best = pick(rows, key=lambda r: r.get(monitor, float("nan")))
    final = rows[-1]
    train_time = sum(r["train_time_s"] for r in rows)
    scores = [c for c in columns if c.startswith("val_") and c != "val_loss"]
    return {
        "best_epoch": best["epoch"],
        **{f"best_{name}": best.get(name) for name in [*scores, monitor]},
        **{f"final_{name}": final.get(name) for name in scores},
        "final_val_loss": final.get("val_loss"),
        "final_train_loss": final.get("train_loss"),
        "epochs_run": len(rows),
        "wall_time_s": final["wall_time_s"],
        "train_time_s": round(train_time, 2),
        "train_images_per_s": round(sum(r["train_images"] for r in rows) / max(train_time, 1e-9), 1),
        **extra,
    }


def run_dir_of(checkpoint_path: Path) -> Path:
    """Where results go: the run folder for a run's checkpoint, else the checkpoint's own folder."""
    parent = checkpoint_path.parent
    return parent.parent if parent.name == "checkpoints" else parent


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.csv as one dict per epoch (empty cells left out)."""
    with open(run_dir / "metrics.csv") as file:
        return [
            {k: float(v) if k != "epoch" else int(v) for k, v in row.items() if v != ""}
            for row in csv.DictReader(file)
        ]


def write_eval(run_dir: Path, split: str, result: dict) -> None:
    """eval_<split>.json, and the confusion matrix as confusion_<split>.csv with class names."""
    write_json(run_dir / f"eval_{split}.json", result)
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["true \\ predicted", *result["classes"]])
    writer.writerows([name, *row] for name, row in zip(result["classes"], result["confusion_matrix"]))
    write_atomically(run_dir / f"confusion_{split}.csv", table.getvalue())


def environment() -> dict:
    import lightning
    import torchvision

    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu ({platform.processor() or platform.machine()})"
    )
    return {
        "device": device,
        "versions": {
            "vislab": vislab.__version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "lightning": lightning.__version__,
        },
    }
