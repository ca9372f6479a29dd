"""The task interface: the task follows from data and model, keys that do not apply are refused, and
segmentation gets the same in-memory, on-device, exactly resumable data path and exports as classification."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vislab.checkpoint import load_checkpoint
from vislab.cli import main
from vislab.data.seg_augment import SegmentationAugment
from vislab.errors import VislabError
from vislab.tasks import load_config

from conftest import QUIET, kill_when, small_copy


@pytest.mark.parametrize(
    "overrides, task, model",
    [
        ([], "classification", "small_cnn"),
        (["data=cifar10"], "classification", "small_cnn"),
        (["data=folder:/photos", "model=timm:resnet18"], "classification", "timm:resnet18"),
        (["data=voc2012"], "segmentation", "deep_unet"),
        (["data=segfolder:/streets"], "segmentation", "deep_unet"),
        (["data=voc2012", "model=fcn8s"], "segmentation", "fcn8s"),
        (["data=voc2012", "task=segmentation", "model=resunet"], "segmentation", "resunet"),
    ],
)
def test_the_task_follows_from_data_and_model(overrides, task, model):
    config = load_config(None, overrides)
    assert (config.task, config.model) == (task, model)
    assert config.early_stopping.monitor == {"classification": "val_top1", "segmentation": "val_miou"}[task]


def test_each_task_brings_its_defaults_under_what_the_user_sets():
    segmentation = load_config(None, ["data=voc2012"])
    assert (segmentation.batch_size, segmentation.optim.name, segmentation.model_args) == (
        8,
        "adamw",
        {"width": 16, "levels": 4},
    )
    assert load_config(None, ["data=voc2012", "batch_size=4"]).batch_size == 4
    # The default model's options do not follow another model.
    assert load_config(None, ["data=voc2012", "model=fcn8s"]).model_args == {}
    assert load_config(None, ["data=voc2012", "model_args={width: 8}"]).model_args == {"width": 8}
    assert load_config().batch_size == 128 and load_config().optim.name == "sgd"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=resunet"], "digits is classification data but resunet is a segmentation model"),
        (["data=voc2012", "model=resnet20"], "voc2012 is segmentation data but resnet20 is a classification"),
        (["data=voc2012", "task=classification"], "task=classification, but voc2012 is segmentation data"),
        (["segmentation.loss=focal"], "segmentation.loss=focal does not apply to classification"),
        (["data=voc2012", "augment.mixup=0.2"], "augment.mixup=0.2 does not apply to segmentation"),
        (["data=voc2012", "finetune.head_hidden=512"], "does not apply to segmentation"),
        (["data=voc2012", "augment.hflip=alternate"], "hflip=alternate does not apply to segmentation"),
        (["early_stopping.monitor=val_miou"], "val_miou is not a classification metric"),
    ],
)
def test_a_mismatch_is_one_line_that_says_so(cli, overrides, message):
    with pytest.raises(VislabError, match=message):
        load_config(None, overrides)
    result = cli("train", *overrides, "--print-config")
    assert result.code == 2 and message.split(" ")[0] in result.err and result.err.count("\n") == 1


def test_print_config_shows_the_inferred_task(cli):
    result = cli("train", "data=voc2012", "--print-config")
    assert result.code == 0 and "task: segmentation" in result.out and "model: deep_unet" in result.out


def blocky_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of 8x8 blocks of random colours with masks painted from the images' own red channel."""
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (4, 3, 6, 8), generator=generator, dtype=torch.uint8)
    images = blocks.repeat_interleave(8, 2).repeat_interleave(8, 3)
    return images, images[:, 0] // 64  # four classes, one per quarter of the red range


def test_joint_augmentation_keeps_image_and_mask_aligned():
    images, masks = blocky_batch(0)
    augment = SegmentationAugment(
        [0.0] * 3, [1.0] * 3, 255, crop_size=40, scale_range=(0.6, 1.7), hflip=True, jitter=0
    )
    torch.manual_seed(1)
    crops, labels = augment(images, masks)
    assert crops.shape == (4, 3, 40, 40) and labels.shape == (4, 40, 40)
    inside = labels != 255
    # Rescaled 0.6-1.7x, cropped, some flipped: the mask painted from the red channel still matches the
    # red channel under it, up to the interpolated edges between blocks.
    painted = (crops[:, 0] * 255).round().clamp(0, 255).long() // 64
    assert (painted[inside] == labels[inside]).float().mean() > 0.9
    # Where the rescaled image is smaller than the crop, the rest is padding: ignored in the mask and
    # the mean colour (zero once normalised) in the image.
    augment.scale_range = (0.5, 0.5)  # 24x32 images in 40x40 crops
    crops, labels = augment(images, masks)
    outside = labels == 255
    seam = (crops[:, 0][outside] != 0).float().mean()  # bilinear sampling blends one pixel at the edge
    assert outside.float().mean() > 0.4 and seam < 0.1


def test_joint_augmentation_at_scale_one_moves_pixels_exactly_together():
    images, masks = blocky_batch(2)
    augment = SegmentationAugment(
        [0.0] * 3, [1.0] * 3, 255, crop_size=32, scale_range=(1.0, 1.0), hflip=True, jitter=0
    )
    torch.manual_seed(3)
    crops, labels = augment(images, masks)
    painted = (crops[:, 0] * 255).round().long() // 64
    assert torch.equal(painted[labels != 255], labels[labels != 255])


def seg_args(data, runs, name, *extra):
    return [
        "train",
        f"data=segfolder:{data}",
        "segmentation.ignore_index=11",
        "model_args={width: 8, levels: 3}",
        "image_size=48",
        "batch_size=4",
        f"runs_dir={runs}",
        f"name={name}",
        *QUIET,
        *extra,
    ]


def test_an_in_memory_segmentation_run_killed_and_resumed_ends_exactly_like_an_uninterrupted_one(
    camvid, tmp_path
):
    data = small_copy(camvid, tmp_path / "camvid", train=64, val=4)
    args = seg_args(data, tmp_path, "full", "epochs=4")[1:]
    assert main(["train", *map(str, args)]) == 0  # only the killed run needs a process of its own
    killed = [a.replace("name=full", "name=killed") for a in args]
    process = subprocess.Popen(
        [sys.executable, "-m", "vislab", "train", *map(str, killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = tmp_path / "killed" / "metrics.csv"

    def rows() -> int:  # epochs done (metrics.csv is replaced whole, never read half-written)
        return len(metrics.read_text().splitlines()) - 1 if metrics.is_file() else 0

    kill_when(process, lambda: rows() >= 2, "its second epoch's row")  # so, during the third epoch
    assert rows() < 4
    assert main(["train", "--resume", str(tmp_path / "killed")]) == 0
    full = load_checkpoint(tmp_path / "full", prefer="last").state_dict
    resumed = load_checkpoint(tmp_path / "killed", prefer="last").state_dict
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)
    rows = [(tmp_path / n / "metrics.csv").read_text().splitlines() for n in ("full", "killed")]
    assert [r.split(",")[:6] for r in rows[0]] == [r.split(",")[:6] for r in rows[1]]


def test_segfolder_declares_its_ignore_value_and_linear_probing_freezes_the_encoder(cli, camvid, tmp_path):
    data = small_copy(camvid, tmp_path / "camvid", train=8, val=2)
    (data / "dataset.yaml").write_text("ignore_index: 11\n")
    args = seg_args(data, tmp_path, "probe", "epochs=1", "finetune.mode=linear")
    args.remove("segmentation.ignore_index=11")
    assert cli(*args).code == 0
    checkpoint = load_checkpoint(tmp_path / "probe")
    assert checkpoint.meta.ignore_index == 11 and checkpoint.meta.config["segmentation"]["ignore_index"] == 11
    fresh = torch.load(tmp_path / "probe" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert fresh.keys() == checkpoint.state_dict.keys()


def test_a_segmentation_model_exports_to_onnx_and_predicts_the_same_masks(cli, camvid, tmp_path):
    data = small_copy(camvid, tmp_path / "camvid", train=8, val=3)
    assert cli(*seg_args(data, tmp_path, "seg", "epochs=1")).code == 0
    result = cli("export", tmp_path / "seg")
    assert result.code == 0, result.err
    difference = float(result.out.rsplit(":", 1)[1])
    assert difference < 1e-4
    onnx_file = tmp_path / "seg" / "export" / "model.onnx"
    # Whole 480x360 images, which the exporter never saw: the height and width stay dynamic.
    assert cli("predict", onnx_file, data / "val" / "images", "--out", tmp_path / "onnx").code == 0
    assert cli("predict", tmp_path / "seg", data / "val" / "images", "--out", tmp_path / "torch").code == 0
    from PIL import Image

    for labels in sorted((tmp_path / "torch").glob("*_labels.png")):
        ours, theirs = np.array(Image.open(labels)), np.array(Image.open(tmp_path / "onnx" / labels.name))
        assert ours.shape == (360, 480) and (ours == theirs).mean() > 0.999


def test_eval_of_a_segmentation_run_takes_other_data(cli, camvid, tmp_path):
    data = small_copy(camvid, tmp_path / "camvid", train=8, val=2)
    other = small_copy(camvid, tmp_path / "other", train=2, val=5)
    assert cli(*seg_args(data, tmp_path, "seg", "epochs=1")).code == 0
    result = cli("eval", tmp_path / "seg", f"data=segfolder:{other}")
    assert result.code == 0 and "(5 images)" in result.out
    assert json.loads((tmp_path / "seg" / "eval_val.json").read_text())["data"] == f"segfolder:{other}"
    wrong = cli("eval", tmp_path / "seg", "data=digits")
    assert wrong.code == 2 and "digits is a classification dataset" in wrong.err
