"""Every registered model end to end, on real images: train a few steps, report (Grad-CAM included),
evaluate, predict, export to ONNX and predict from the export. A model that crashes in any of these
crashes here first, not in a user's hands (`model=mlp` once trained, then died in its report)."""

import pytest

from vislab.models import registered_models

from conftest import QUIET, copy_classes, small_copy

MODELS = registered_models()
STEPS = ["epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", *QUIET]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, cifar_jpgs):
    return copy_classes(cifar_jpgs / "train", tmp_path_factory.mktemp("photos"), per_class=8, classes=3)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, camvid):
    return small_copy(camvid, tmp_path_factory.mktemp("scenes") / "camvid", train=4, val=2)


def run_through_everything(cli, run, image, *train_args, suffix=".csv") -> None:
    """Predictions go to predictions.csv and from_onnx.csv (segmentation: folders of masks)."""
    trained = cli("train", *train_args, *STEPS, f"runs_dir={run.parent}", f"name={run.name}")
    assert trained.code == 0, trained.err
    for command in (
        ("report", run, "--no-tsne"),
        ("eval", run),
        ("predict", run, image, "--out", run / f"predictions{suffix}"),
        ("export", run, "--format", "onnx"),
        ("predict", run / "export" / "model.onnx", image, "--out", run / f"from_onnx{suffix}"),
    ):
        result = cli(*command)
        assert result.code == 0, (command, result.err)
    assert (run / "report" / "report.html").is_file()


@pytest.mark.parametrize("name", [n for n, e in MODELS.items() if e.task == "classification"])
def test_every_classifier_end_to_end(cli, tmp_path, photos, name):
    size = MODELS[name].input_size
    image = next((photos / "bird").iterdir())
    args = [f"data=folder:{photos}", f"model={name}", f"image_size={size}", "batch_size=8"]
    run_through_everything(cli, tmp_path / name, image, *args)
    # The exported model predicts what the checkpoint predicts.
    assert (tmp_path / name / "predictions.csv").read_text().splitlines()[1].split(",")[1] == (
        (tmp_path / name / "from_onnx.csv").read_text().splitlines()[1].split(",")[1]
    )


@pytest.mark.parametrize("name", [n for n, e in MODELS.items() if e.task == "segmentation"])
def test_every_segmentation_model_end_to_end(cli, tmp_path, scenes, name):
    image = next((scenes / "val" / "images").iterdir())
    args = [f"data=segfolder:{scenes}", f"model={name}", "segmentation.ignore_index=11", "image_size=64"]
    run_through_everything(cli, tmp_path / name, image, *args, "batch_size=2", suffix="")
    masks = sorted(p.name for p in (tmp_path / name / "from_onnx").iterdir())
    assert masks == sorted(p.name for p in (tmp_path / name / "predictions").iterdir()) and len(masks) == 3
