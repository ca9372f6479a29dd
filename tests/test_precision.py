"""The precision a run trains in: `auto` decided from the CPU's flags, recorded in config.yaml and
summary.json, and used again by evaluation and prediction; and the run guard's non-finite check, read
without waiting for the device on every step (issue 25)."""

from __future__ import annotations

import torch
from torch import nn

import vislab
from vislab import resilience
from vislab.config import TrainerConfig, read_yaml
from vislab.errors import RunStopped
from vislab.precision import cpu_has_bf16, resolve_precision

# On the CPU (what `auto` decides there is the subject, and one CPU process reads the check every step).
FAST = {"data": "digits", "epochs": 1, "batch_size": 128, "report": False}
FAST["trainer"] = {"progress_bar": False, "accelerator": "cpu"}


def test_bf16_is_chosen_from_the_flags_the_cpu_reports(tmp_path):
    with_bf16, without = tmp_path / "epyc", tmp_path / "older"
    flags = "fpu vme sse sse2 avx2 avx512f avx512bw avx512vl"
    with_bf16.write_text(f"processor\t: 0\nflags\t\t: {flags} avx512_bf16 vaes\n\nprocessor\t: 1\n")
    without.write_text(f"processor\t: 0\nflags\t\t: {flags} vaes\n")
    assert cpu_has_bf16(with_bf16) and not cpu_has_bf16(without)
    assert not cpu_has_bf16(tmp_path / "no-such-file")  # not Linux: fp32
    expected = "bf16-mixed" if cpu_has_bf16() else "32-true"
    assert resolve_precision(TrainerConfig(accelerator="cpu")) == expected
    assert (
        resolve_precision(TrainerConfig(accelerator="cpu", precision="32-true")) == "32-true"
    )  # given: kept


def test_auto_is_recorded_and_evaluation_runs_in_the_trained_precision(tmp_path):
    run = vislab.train(runs_dir=tmp_path, name="auto", **(FAST | {"epochs": 4, "batch_size": 64}))
    decided = "bf16-mixed" if cpu_has_bf16() else "32-true"
    assert read_yaml(run.path / "config.yaml")["trainer"]["precision"] == decided
    assert run.summary["precision"] == decided
    model = run.load()
    assert model.meta.precision == decided
    logged = run.metrics.set_index("epoch").loc[run.summary["best_epoch"]]  # the epoch best.ckpt holds
    scores = model.evaluate()  # in the precision it trained and validated in: the score it logged
    assert (
        abs(scores["top1"] - logged["val_top1"]) < 1e-6
        and abs(scores["loss"] / logged["val_loss"] - 1) < 1e-5
    )
    in_fp32 = model.evaluate(overrides=["trainer.precision=32-true"])
    assert in_fp32["top1"] > 0.7  # told otherwise: the same model in fp32, near the same score
    if decided == "bf16-mixed":  # bf16 keeps 8 bits of mantissa: the two differ, slightly
        assert in_fp32["loss"] != scores["loss"]
        digits = digit_files(tmp_path)
        trained = model.predict(digits).probabilities
        exact = model.predict(digits, precision="32-true").probabilities
        assert 0 < abs(trained - exact).max() < 0.05


def digit_files(folder):
    """Four real digits from scikit-learn's set as PNG files."""
    from PIL import Image
    from sklearn.datasets import load_digits

    paths = []
    for index, image in enumerate(load_digits().images[:4]):
        path = folder / f"digit{index}.png"
        Image.fromarray((image * 16).clip(0, 255).astype("uint8")).save(path)
        paths.append(path)
    return paths


BUILT: list[nn.Module] = []


def poisoned(num_classes: int, in_chans: int = 3, image_size: int = 8) -> nn.Module:
    """A linear classifier whose 15th training forward pass returns NaN: a loss that goes non-finite at a
    known batch (digits, batch 128: 12 batches an epoch, so epoch 2, batch 3)."""

    class Poisoned(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(in_chans * image_size * image_size, num_classes)
            self.calls = 0

        def forward(self, images):
            logits = self.linear(images.flatten(1))
            if self.training:
                self.calls += 1
                if self.calls == 15:
                    logits = logits * float("nan")
            return logits

    BUILT.append(Poisoned())
    return BUILT[-1]


def stopped_message(**keys) -> str:
    try:
        vislab.train(**(FAST | {"model": poisoned, "epochs": 2} | keys))
    except RunStopped as stopped:
        return str(stopped)
    raise AssertionError("the run did not stop")


def test_on_a_cpu_a_non_finite_loss_stops_the_run_before_the_weights_change(tmp_path):
    message = stopped_message(runs_dir=tmp_path, name="cpu")
    assert "the training loss became nan at epoch 2, batch 3, before the weights changed" in message
    assert torch.isfinite(BUILT[-1].linear.weight).all()  # no optimizer step took the NaN gradients


def test_read_every_few_steps_a_non_finite_loss_never_reaches_a_checkpoint(tmp_path, monkeypatch):
    """As on a GPU or across processes: the check is noted on the device and read every READ_EVERY (16)
    steps, at epoch ends and before checkpoints; the run stops at the first read after it."""
    started = resilience.RunGuard.on_train_start

    def as_on_a_gpu(self, trainer, pl_module):
        started(self, trainer, pl_module)
        self.every_step = False

    monkeypatch.setattr(resilience.RunGuard, "on_train_start", as_on_a_gpu)
    message = stopped_message(runs_dir=tmp_path, name="gpu", checkpoint_every_min=0)
    # Batch 3 of epoch 2 went non-finite; global step 16 (batch 4) read it and stopped there.
    assert message.startswith("the training loss became nan at epoch 2, batch 3 (seen at batch 4;"), message
    assert "last good checkpoint) is untouched" in message
    assert not torch.isfinite(BUILT[-1].linear.weight).all()  # in memory the step was taken...
    saved = torch.load(tmp_path / "gpu" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 12  # ...but the last checkpoint is epoch 1's, and clean
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
