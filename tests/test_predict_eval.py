import json

import pytest
import torch
from PIL import Image
from torch import nn

from vislab.checkpoint import load_checkpoint
from vislab.cli import main
from vislab.data import load_dataset
from vislab.tasks import load_config

from conftest import QUIET


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert main(["train", f"runs_dir={runs}", "name=digits", "epochs=15", *QUIET]) == 0
    return runs / "digits"


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory, cifar_jpgs):
    runs = tmp_path_factory.mktemp("runs")
    assert (
        main(
            [
                "train",
                f"data=folder:{cifar_jpgs}",
                "model=resnet8",
                "epochs=4",
                "batch_size=64",
                f"runs_dir={runs}",
                "name=cifar",
                *QUIET,
            ]
        )
        == 0
    )
    return runs / "cifar"


def test_predict_names_the_right_digit_for_held_out_images(cli, digits_run, tmp_path):
    val = load_dataset(load_config()).val
    for index in range(100):
        Image.fromarray(val.images[index, 0].numpy()).save(tmp_path / f"{index:03d}_{val.labels[index]}.png")
    result = cli("predict", digits_run, tmp_path, "--topk", "3", "--out", tmp_path / "preds.json")
    assert result.code == 0, result.err
    rows = json.loads((tmp_path / "preds.json").read_text())
    assert len(rows) == 100 and all(len(row["top"]) == 3 for row in rows)
    correct = sum(row["top"][0]["class"] == row["file"].rsplit("_", 1)[1][0] for row in rows)
    assert correct >= 95


def test_eval_writes_metrics_and_a_confusion_matrix(cli, digits_run):
    result = cli("eval", digits_run)
    assert result.code == 0, result.err
    report = json.loads((digits_run / "eval_val.json").read_text())
    summary = json.loads((digits_run / "summary.json").read_text())
    assert report["images"] == 180 and report["top1"] == pytest.approx(summary["best_val_top1"], abs=1e-6)
    assert report["top5"] >= report["top1"] and 0 < report["macro_f1"] <= 1
    assert set(report["per_class_accuracy"]) == {str(d) for d in range(10)}
    matrix = (digits_run / "confusion_val.csv").read_text().splitlines()
    assert len(matrix) == 11 and sum(int(v) for line in matrix[1:] for v in line.split(",")[1:]) == 180


def test_predict_on_real_jpegs_agrees_with_eval_on_the_test_split(cli, cifar_run, cifar_jpgs, tmp_path):
    evaluated = cli("eval", cifar_run, "--split", "test")
    assert evaluated.code == 0, evaluated.err
    report = json.loads((cifar_run / "eval_test.json").read_text())
    assert report["images"] == 500 and report["top1"] > 0.25  # chance is 0.1

    predicted = cli(
        "predict",
        cifar_run / "checkpoints" / "best.ckpt",
        cifar_jpgs / "test",
        "--out",
        tmp_path / "preds.csv",
    )
    assert predicted.code == 0, predicted.err
    lines = (tmp_path / "preds.csv").read_text().splitlines()
    assert lines[0].startswith("file,class1,prob1") and len(lines) == 501
    correct = sum(line.split(",")[1] == line.split("/")[-2] for line in lines[1:])
    assert correct / 500 == pytest.approx(report["top1"], abs=1e-6)  # the checkpoint alone reproduces eval


def test_a_checkpoint_is_evaluated_in_the_memory_layout_it_trained_in(cifar_run):
    checkpoint = load_checkpoint(cifar_run)
    assert checkpoint.meta.config["trainer"]["channels_last"] is True  # the default for convolutions
    convolutions = [m for m in checkpoint.model().modules() if isinstance(m, nn.Conv2d)]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convolutions)
