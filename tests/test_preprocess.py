"""One preprocessing from training to prediction: the picture a model trained on is the picture eval,
predict and exports give it, whether the data sat in memory or streamed, was resized to a timm model's
size, or (segmentation) came in mixed sizes; so `vislab eval` of a checkpoint reports exactly the
metric its training's validation logged for it."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import vislab
from vislab.data.images import fit, read_image, resize, to_tensor
from vislab.data.module import ImageFiles
from vislab.tasks import load_config, prepare

from conftest import copy_classes, extract_archive

FAST = {"report": False, "trainer": {"progress_bar": False}, "epochs": 1, "batch_size": 16}


@pytest.fixture(scope="module")
def flowers(tmp_path_factory):
    """Real 128x128 flower photos, 24 of each of the 5 classes (validation: a fifth of them)."""
    archive = extract_archive("flowers5-128.tar.gz", tmp_path_factory.mktemp("flowers"))
    return copy_classes(archive / "flowers5_128", tmp_path_factory.mktemp("few"), 24)


@pytest.fixture(scope="module")
def flower_runs(tmp_path_factory, flowers):
    """The same run on the flowers resized to 40 pixels, once held in memory and once streamed."""
    runs = tmp_path_factory.mktemp("runs")
    return {
        held: vislab.train(
            data=f"folder:{flowers}", image_size=40, in_memory=held, runs_dir=runs, name=f"held{held}", **FAST
        )
        for held in (True, False)
    }


def logged(run: vislab.Run) -> dict:
    """The metrics.csv row of the epoch best.ckpt was saved at (a one-epoch run: its only row)."""
    (row,) = run.metrics.to_dict("records")
    return row


def test_the_one_resize_is_pils_bilinear_and_the_same_alone_or_in_a_batch(flowers):
    photo = next((flowers / "daisy").iterdir())
    picture = Image.open(photo).convert("RGB")
    image = to_tensor(picture)
    for shape in ((40, 40), (97, 61), (300, 300)):
        resized = resize(image, shape)
        pil = to_tensor(picture.resize(shape[::-1], Image.BILINEAR))
        assert resized.shape == pil.shape and (resized.int() - pil.int()).abs().max() <= 1
    assert torch.equal(fit(image, 40), resize(image, (40, 40)))  # a square photo: nothing to crop
    pair = torch.stack([image, image.flip(-1)])
    assert torch.equal(fit(pair, 40)[1], fit(image.flip(-1), 40))


def test_a_file_is_the_same_picture_in_memory_streamed_and_predicted(flowers, flower_runs):
    model = flower_runs[True].load()
    prepared = prepare(load_config(None, [f"data=folder:{flowers}", "image_size=40", "in_memory=true"]))
    split = prepared.datamodule.splits.val
    streamed = ImageFiles(split.files, split.labels, 3, 40)
    for index in (0, len(split) - 1):
        held = split.images[index]
        assert held.shape == (3, 40, 40)
        assert torch.equal(held, model.meta.preprocess.read(split.files[index]))
        assert torch.equal(held, streamed[(0, index)][0])
        assert torch.equal(held, model.meta.preprocess.read(Image.open(split.files[index])))


@pytest.mark.parametrize("held", [True, False], ids=["in_memory", "streamed"])
def test_eval_of_a_checkpoint_gives_the_metric_its_validation_logged(flower_runs, held):
    run = flower_runs[held]
    metrics = run.load().evaluate()
    row = logged(run)
    assert metrics["top1"] == pytest.approx(row["val_top1"], abs=1e-6)
    assert metrics["loss"] == pytest.approx(row["val_loss"], rel=1e-4)


def test_streamed_data_trains_on_the_inputs_in_memory_data_trains_on(flower_runs):
    """Crop padding, flips and the rest of the augmentation run on the batch for both: the two runs are
    the same run."""
    held, streamed = (logged(flower_runs[key]) for key in (True, False))
    assert flower_runs[False].config.augment.crop_padding == 4  # the folder default, applied to both
    for key in ("train_loss", "train_acc", "val_loss", "val_top1"):
        assert streamed[key] == pytest.approx(held[key], rel=1e-5), key


def test_an_export_names_its_preprocessing_and_predicts_as_the_checkpoint(flower_runs, flowers, tmp_path):
    model = flower_runs[True].load()
    path = model.export("onnx", tmp_path / "flowers.onnx")
    stored = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    preprocess = json.loads(stored["vislab"])["preprocess"]
    assert preprocess["size"] == 40 and preprocess["crop"] == "centre size x size"
    assert preprocess["mean"] == list(model.meta.mean) and preprocess["pad_to_multiple_of"] == 1
    photos = sorted((flowers / "tulip").iterdir())[:4]
    from_file = vislab.load(path).predict(photos).probabilities  # ONNX: fp32 whatever the run trained in
    np.testing.assert_allclose(from_file, model.predict(photos, precision="32-true").probabilities, atol=1e-5)


def test_a_timm_model_validates_and_evaluates_on_images_resized_to_its_size(tmp_path, cifar_jpgs):
    """32-pixel CIFAR-10 photos upsampled to a ViT's 224: in memory at load, by predict from the files."""
    photos = copy_classes(cifar_jpgs / "train", tmp_path / "photos", 16, classes=3)
    run = vislab.train(
        data=f"folder:{photos}", model="timm:vit_tiny_patch16_224", runs_dir=tmp_path / "runs", **FAST
    )
    assert run.config.image_size == 224
    metrics, row = run.load().evaluate(), logged(run)
    assert metrics["top1"] == pytest.approx(row["val_top1"], abs=1e-6)
    assert metrics["loss"] == pytest.approx(row["val_loss"], rel=1e-4)
    photo = next((photos / "airplane").iterdir())
    assert torch.equal(run.load().meta.preprocess.read(photo), read_image(photo, 3, 224))


@pytest.fixture(scope="module")
def mixed_sizes(tmp_path_factory):
    """A segmentation folder of VOC's three real images and masks, cut to five different sizes for
    validation (the uncut images train)."""
    voc = extract_archive("voc2012-sample.tar.gz", tmp_path_factory.mktemp("voc")) / "VOCdevkit" / "VOC2012"
    root = tmp_path_factory.mktemp("mixed")
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
    names = sorted(p.stem for p in (voc / "JPEGImages").glob("*.jpg"))
    for name in names:
        shutil.copy(voc / "JPEGImages" / f"{name}.jpg", root / "train" / "images")
        shutil.copy(voc / "SegmentationClass" / f"{name}.png", root / "train" / "masks")
    boxes = [(0, 0, 500, 338), (40, 10, 440, 310), (100, 0, 337, 330), (0, 50, 301, 250), (60, 20, 460, 333)]
    for index, box in enumerate(boxes):
        name = names[index % len(names)]
        Image.open(voc / "JPEGImages" / f"{name}.jpg").crop(box).save(
            root / "val" / "images" / f"v{index}.jpg"
        )
        Image.open(voc / "SegmentationClass" / f"{name}.png").crop(box).save(
            root / "val" / "masks" / f"v{index}.png"
        )
    from vislab.data.segmentation import VOC_CLASSES

    (root / "classes.txt").write_text("\n".join(VOC_CLASSES) + "\n")
    return root


SEGMENTER = """
from torch import nn


def segmenter(num_classes, in_chans):
    # Small and without BatchNorm: even untrained, its predictions vary from pixel to pixel.
    return nn.Sequential(
        nn.Conv2d(in_chans, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, num_classes, 1), nn.Upsample(scale_factor=2, mode="bilinear"),
    )
"""


@pytest.mark.parametrize("held", [True, False], ids=["in_memory", "streamed"])
def test_segmentation_eval_gives_the_miou_validation_logged_on_images_of_mixed_sizes(
    mixed_sizes, tmp_path, held
):
    (tmp_path / "nets.py").write_text(SEGMENTER)
    run = vislab.train(
        data=f"segfolder:{mixed_sizes}",
        model=f"{tmp_path / 'nets.py'}:segmenter",
        image_size=64,
        in_memory=held,
        runs_dir=tmp_path,
        **FAST,
    )
    metrics, row = run.load().evaluate(), logged(run)
    assert metrics["images"] == 5
    assert (np.array(metrics["confusion_matrix"]).sum(0) > 0).sum() > 3  # predictions that padding moves
    for key in ("miou", "pixel_acc", "mean_acc"):
        assert metrics[key] == pytest.approx(row[f"val_{key}"], abs=1e-6), key
