import json

import pytest
import torch
from safetensors import safe_open

from vislab.checkpoint import load_checkpoint
from vislab.cli import main
from vislab.models import create_model
from vislab.tasks import get_task, load_config, prepare

from conftest import QUIET


@pytest.fixture(scope="module")
def run(tmp_path_factory, cifar_jpgs):
    runs = tmp_path_factory.mktemp("runs")
    args = [f"data=folder:{cifar_jpgs}", "model=resnet8", "epochs=1", "name=run", f"runs_dir={runs}"]
    assert main(["train", *args, *QUIET]) == 0
    return runs / "run"


def test_onnx_export_matches_pytorch_and_predicts_like_the_checkpoint(cli, run, cifar_jpgs, tmp_path):
    result = cli("export", run, "--format", "onnx")
    assert result.code == 0, result.err
    difference = float(result.out.rsplit(":", 1)[1])
    assert difference < 1e-4
    onnx_file = run / "export" / "model.onnx"
    images = cifar_jpgs / "test" / "ship"
    assert cli("predict", onnx_file, images, "--out", tmp_path / "onnx.json").code == 0
    # ONNX Runtime runs in fp32: set it against the checkpoint in fp32 (by default the run's own precision).
    assert cli("predict", run, images, "--precision", "32-true", "--out", tmp_path / "torch.json").code == 0
    from_onnx, from_torch = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("onnx", "torch"))
    assert len(from_onnx) == 50
    for a, b in zip(from_onnx, from_torch):
        assert a["top"][0]["class"] == b["top"][0]["class"]
        assert a["top"][0]["prob"] == pytest.approx(b["top"][0]["prob"], abs=1e-4)


def test_torchscript_export_carries_its_preprocessing(cli, run):
    result = cli("export", run, "--format", "torchscript")
    assert result.code == 0, result.err
    extra = {"vislab.json": ""}
    module = torch.jit.load(str(run / "export" / "model.torchscript.pt"), _extra_files=extra)
    meta = json.loads(extra["vislab.json"])
    assert meta["classes"][0] == "airplane" and meta["image_size"] == 32 and len(meta["mean"]) == 3
    assert module(torch.zeros(3, 3, 32, 32)).shape == (3, 10)


def model_tensors(state: dict) -> dict:
    """The network's own tensors of a checkpoint's state dict (without the LightningModule's prefix)."""
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def assert_same_tensors(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    different = [k for k in theirs if not torch.equal(ours[k], theirs[k])]
    assert not different, f"tensors that differ: {different}"


def test_safetensors_export_predicts_like_the_checkpoint_and_seeds_a_new_run(cli, run, cifar_jpgs, tmp_path):
    result = cli("export", run, "--format", "safetensors")
    assert result.code == 0, result.err
    assert float(result.out.rsplit(":", 1)[1]) == 0.0
    exported = run / "export" / "model.safetensors"
    with safe_open(str(exported), framework="pt") as file:  # plain tensors and JSON text, nothing to run
        assert json.loads(file.metadata()["vislab"])["classes"][0] == "airplane"
        assert file.keys() and not any(k.startswith("model.") for k in file.keys())  # the model's own names
    checkpoint, from_file = load_checkpoint(run), load_checkpoint(exported)
    # The same tensors, BatchNorm's running statistics included, and so the same logits on real images.
    assert_same_tensors(model_tensors(from_file.state_dict), model_tensors(checkpoint.state_dict))
    inputs = get_task("classification").export_inputs(checkpoint, 16)
    with torch.no_grad():
        assert torch.equal(from_file.model()(inputs), checkpoint.model()(inputs))
    images = cifar_jpgs / "test" / "ship"
    assert cli("predict", exported, images, "--out", tmp_path / "st.json").code == 0
    assert cli("predict", run, images, "--out", tmp_path / "ckpt.json").code == 0
    from_st, from_ckpt = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("st", "ckpt"))
    assert len(from_st) == 50 and [r["top"] for r in from_st] == [r["top"] for r in from_ckpt]
    # vislab eval scores it exactly as it scores the checkpoint (eval_test.json lands beside each).
    for source in (exported, run):
        evaluated = cli("eval", source, "--split", "test")
        assert evaluated.code == 0 and "(500 images)" in evaluated.out, evaluated.err
    scores = [json.loads(p.read_text()) for p in (run / "export" / "eval_test.json", run / "eval_test.json")]
    assert scores[0].pop("checkpoint") == str(exported) and scores[1].pop("checkpoint") != str(exported)
    assert scores[0] == scores[1]
    # weights= makes it the starting point of another run (fine-tuning on the same classes): the model that
    # `vislab train` builds (the task's own preparation, as train() calls it) holds every tensor of the file.
    config = load_config(None, [f"data=folder:{cifar_jpgs}", "model=resnet8", f"weights={exported}"])
    assert_same_tensors(prepare(config).module.model.state_dict(), model_tensors(checkpoint.state_dict))


def test_export_to_an_unknown_format_is_a_clear_error(cli, run):
    result = cli("export", run, "--format", "tflite")
    assert result.code == 2 and "unknown export format 'tflite'" in result.err


def test_an_onnx_file_without_our_metadata_is_refused(cli, tmp_path, cifar_jpgs):
    path = tmp_path / "foreign.onnx"
    torch.onnx.export(
        create_model("resnet8", 10).eval(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=False
    )
    result = cli("predict", path, cifar_jpgs / "test" / "ship")
    assert result.code == 2 and "no vislab metadata" in result.err


def test_a_segmentation_model_validated_on_one_image_exports(cli, voc_dir, tmp_path):
    """The three-image VOC sample leaves one validation image: traced on a batch of one, the exporter
    took the batch size for a constant and refused to export."""
    args = ["data=voc2012", f"data_dir={voc_dir}", "model=deep_unet", "image_size=64", "epochs=1"]
    assert cli("train", *args, f"runs_dir={tmp_path}", "name=voc", *QUIET).code == 0
    for fmt in ("onnx", "torchscript"):
        result = cli("export", tmp_path / "voc", "--format", fmt)
        assert result.code == 0, result.err
        assert float(result.out.split("real images: ")[1]) < 1e-4
