"""The Python API: what a notebook does with vislab, in-process, checked against the CLI on real data."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import vislab

from conftest import QUIET, copy_classes, small_copy

FAST = {"report": False, "trainer": {"progress_bar": False}}


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """Two one-epoch digits runs that differ in their learning rate."""
    runs = tmp_path_factory.mktemp("runs")
    return [
        vislab.train(data="digits", epochs=1, runs_dir=runs, name=f"lr{lr}", optim={"lr": lr}, **FAST)
        for lr in (0.05, 0.1)
    ]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, cifar_jpgs):
    """Real CIFAR-10 JPEGs of three classes: train/ (60 each) and test/ (10 each)."""
    root = tmp_path_factory.mktemp("photos")
    copy_classes(cifar_jpgs / "train", root / "train", 60, classes=3)
    copy_classes(cifar_jpgs / "test", root / "test", 10, classes=3)
    return root


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory, photos):
    runs = tmp_path_factory.mktemp("runs")
    return vislab.train(
        data=f"folder:{photos}", epochs=2, batch_size=32, runs_dir=runs, name="photos", **FAST
    )


def test_train_returns_the_run_with_its_summary_and_metrics(digits_runs):
    run = digits_runs[0]
    assert isinstance(run, vislab.Run) and run.path.name == "lr0.05"
    assert run.summary == json.loads((run.path / "summary.json").read_text())
    assert isinstance(run.metrics, pd.DataFrame) and len(run.metrics) == 1
    assert run.metrics["val_top1"].iloc[0] == pytest.approx(run.summary["final_val_top1"])
    assert run.config.optim.lr == 0.05 and run.config.model == "small_cnn"


def test_sections_as_dicts_and_dotted_overrides_make_the_same_config():
    from vislab.api import train_config

    as_dict = train_config(data="digits", optim={"lr": 0.05, "name": "adam"}, augment={"cutout": 2})
    as_words = train_config(data="digits", overrides=["optim.lr=0.05", "optim.name=adam", "augment.cutout=2"])
    assert as_dict == as_words and as_dict.optim.name == "adam" and as_dict.augment.cutout == 2
    assert train_config("cifar10_resnet20", epochs=3).model == "resnet20"  # a recipe by name, then keys


@pytest.mark.parametrize(
    "keys, words",
    [
        ({"optim": {"lrr": 0.1}}, ["optim.lrr=0.1"]),
        ({"epochs": "many"}, ["epochs=many"]),
        ({"overrides": ["optim.lr=fast"]}, ["optim.lr=fast"]),
        ({"model": "resnet99"}, ["model=resnet99"]),
    ],
)
def test_bad_keys_are_refused_with_the_clis_line(cli, tmp_path, keys, words):
    with pytest.raises(vislab.VislabError) as refused:
        vislab.train(data="digits", runs_dir=tmp_path, **keys)
    result = cli("train", "data=digits", f"runs_dir={tmp_path}", *words)
    assert result.code == 2 and result.err.strip() == f"vislab: error: {refused.value}"
    assert not any(tmp_path.iterdir())  # nothing half-made


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(vislab.VislabError, match="not a vislab run folder"):
        vislab.Run(tmp_path)
    with pytest.raises(vislab.VislabError, match="no such run folder"):
        vislab.Run(tmp_path / "missing")
    with pytest.raises(vislab.VislabError, match="no checkpoints"):
        vislab.load(tmp_path)


def test_resume_continues_a_run_for_more_epochs(tmp_path):
    first = vislab.train(data="digits", epochs=1, runs_dir=tmp_path, name="r", **FAST)
    resumed = vislab.train(resume=first.path, epochs=2)
    assert resumed.path == first.path and resumed.summary["epochs_run"] == 2 and len(resumed.metrics) == 2


def test_predict_gives_the_labels_of_vislab_predict_for_files_pil_images_and_arrays(
    cli, photo_run, photos, tmp_path
):
    printed = cli("predict", photo_run.path, photos / "test", "--out", tmp_path / "preds.csv")
    assert printed.code == 0, printed.err
    expected = pd.read_csv(tmp_path / "preds.csv")

    model = vislab.load(photo_run)
    predicted = model.predict(photos / "test")
    assert predicted.names == list(expected["file"]) and predicted.labels == list(expected["class1"])
    table = predicted.to_pandas()
    assert list(table.columns) == list(expected.columns)
    assert np.allclose(table["prob1"], expected["prob1"], atol=1e-5)

    files = [photos / "test" / f for f in expected["file"].str.split("/test/").str[1]]
    assert model.predict([Image.open(f) for f in files]).labels == predicted.labels
    assert model.predict([np.asarray(Image.open(f)) for f in files]).labels == predicted.labels
    assert predicted.probabilities.shape == (30, 3) and np.allclose(predicted.probabilities.sum(1), 1)


def test_evaluate_gives_the_top1_of_vislab_eval_and_writes_nothing_unless_asked(cli, photo_run):
    metrics = vislab.load(photo_run).evaluate(split="test")
    assert not (photo_run.path / "eval_test.json").exists()
    assert metrics["images"] == 30 and metrics.confusion.to_numpy().sum() == 30
    assert list(metrics.per_class.index) == metrics["classes"]

    assert cli("eval", photo_run.path, "--split", "test").code == 0
    written = json.loads((photo_run.path / "eval_test.json").read_text())
    assert written["top1"] == metrics["top1"] and written["confusion_matrix"] == metrics["confusion_matrix"]

    (photo_run.path / "eval_test.json").unlink()
    vislab.load(photo_run).evaluate(split="test", write=True)
    assert (photo_run.path / "eval_test.json").is_file()


def test_an_onnx_export_predicts_the_same_labels_without_the_checkpoint(photo_run, photos, tmp_path):
    model = vislab.load(photo_run)
    path = model.export("onnx", tmp_path / "model.onnx")
    assert path == tmp_path / "model.onnx"
    exported = vislab.load(path)
    assert exported.predict(photos / "test").labels == model.predict(photos / "test").labels
    with pytest.raises(vislab.VislabError, match="needs a run"):
        exported.evaluate()


def test_compare_has_one_row_per_run(digits_runs):
    table = vislab.compare(digits_runs)
    assert isinstance(table, pd.DataFrame) and list(table["run"]) == ["lr0.05", "lr0.1"]
    assert list(table["optim.lr"]) == [0.05, 0.1] and table["params"].dtype.kind == "i"


def test_runs_predictions_and_metrics_show_themselves_in_a_notebook(digits_runs, photo_run, photos):
    assert "<img" in digits_runs[0]._repr_html_() and "best_val_top1" in digits_runs[0]._repr_html_()
    model = vislab.load(photo_run)
    shown = model.predict(photos / "test")._repr_html_()
    assert shown.count("<img") == 30  # a thumbnail per image
    assert "<img" in model.evaluate()._repr_html_()


def test_segmentation_predicts_a_mask_per_image_at_its_own_size(camvid, tmp_path):
    root = small_copy(camvid, tmp_path / "camvid", train=8, val=2)
    (root / "dataset.yaml").write_text("ignore_index: 11\n")
    run = vislab.train(data=f"segfolder:{root}", image_size=64, epochs=1, runs_dir=tmp_path, **FAST)
    model = vislab.load(run)
    predicted = model.predict(root / "val" / "images")
    truth = [
        Image.open(root / "val" / "masks" / f"{name.rsplit('/', 1)[1][:-4]}.png") for name in predicted.names
    ]
    assert [m.shape for m in predicted.masks] == [(t.height, t.width) for t in truth]
    assert predicted.probabilities is None and set(predicted.labels) <= set(model.classes)
    table = predicted.to_pandas()
    assert np.allclose(table[model.classes].sum(axis=1), 1)
    metrics = model.evaluate()
    assert metrics.task == "segmentation" and 0 <= metrics["miou"] <= 1 and metrics["images"] == 2
    assert "<img" in predicted._repr_html_() and len(predicted._repr_html_()) < 200_000


def test_training_prints_a_line_per_epoch_when_stderr_is_not_a_terminal(tmp_path, capsys):
    vislab.train(data="digits", epochs=2, runs_dir=tmp_path, report=False, trainer={"limit_train_batches": 2})
    lines = capsys.readouterr().err.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"] and "val_top1" in epochs[0]
    assert not any("\r" in line for line in lines)


def test_a_model_registered_through_vislab_trains_by_name(tmp_path):
    from torch import nn

    @vislab.register_model("api_linear", input_size=8)
    def api_linear(num_classes, in_chans):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * 64, num_classes))

    run = vislab.train(data="digits", model="api_linear", epochs=1, runs_dir=tmp_path, **FAST)
    assert run.config.model == "api_linear" and len(vislab.load(run).predict(np.zeros((8, 8), np.uint8))) == 1


def test_import_vislab_loads_no_torch_and_train_is_the_function():
    code = "import sys, vislab; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import vislab.training  # noqa: F401  (a submodule named like a function must not replace it)

    assert callable(vislab.train), vislab.train


def test_cli_train_goes_through_the_api(cli, tmp_path):
    result = cli("train", f"runs_dir={tmp_path}", "name=cli", "epochs=1", *QUIET)
    assert result.code == 0 and result.out.startswith(f"{tmp_path / 'cli'}: best val_top1")
    assert vislab.Run(tmp_path / "cli").summary["epochs_run"] == 1
