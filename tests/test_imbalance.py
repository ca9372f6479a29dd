"""Class imbalance: loss weights from the train split's counts, and class-balanced batches that are seeded
per epoch and resume mid-epoch like the plain shuffle."""

from __future__ import annotations

import json

import torch

from vislab.data.module import ResumableSampler, balanced_weights
from vislab.tasks.classification.module import loss_weights

from conftest import QUIET


def test_loss_weights_favour_rare_classes_and_average_one():
    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    auto = loss_weights(labels, 3, "auto")
    assert torch.allclose(auto.mean(), torch.tensor(1.0)) and auto[2] / auto[0] == torch.tensor(90.0)
    effective = loss_weights(labels, 3, "effective")
    assert effective[0] < effective[1] < effective[2] and effective[2] / effective[0] < 90
    assert loss_weights(labels, 3, "none") is None


def test_balanced_sampler_draws_classes_evenly_and_resumes_exactly():
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    weights = balanced_weights(labels)

    def sampler(done: int, epoch: int = 3):
        return ResumableSampler(range(1000), 1, 0, True, 7, False, lambda: (epoch, done), weights)

    drawn = list(sampler(0))
    counts = torch.bincount(labels[drawn], minlength=3)
    assert len(drawn) == 1000 and counts.min() > 250  # about a third each, against 1% for class 2
    assert list(sampler(0)) == drawn and list(sampler(400)) == drawn[400:]  # seeded, resumable
    assert list(sampler(0, epoch=4)) != drawn  # a new draw each epoch


def test_training_reports_its_balancing(cli, tmp_path):
    args = ["epochs=2", "class_weights=auto", "sampler=balanced", f"runs_dir={tmp_path}", "name=run", *QUIET]
    assert cli("train", *args).code == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["sampler"] == "balanced" and len(summary["class_weights"]) == 10
    assert "class_weights: auto" in (tmp_path / "run" / "config.yaml").read_text()
    refused = cli("train", "data=segfolder:/nowhere", "sampler=balanced")
    assert refused.code == 2 and "sampler=balanced does not apply to segmentation" in refused.err
