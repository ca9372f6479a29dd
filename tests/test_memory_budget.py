"""A config whose data or batch cannot fit is one line before anything is allocated, naming the estimate and
the key to change; a batch larger than the training set is a warning, and the run trains."""

import pytest
import torch
from PIL import Image
from torch import nn

from vislab import memory
from vislab.config import Config
from vislab.data import load_dataset
from vislab.errors import VislabError
from vislab.memory import batch_warning, check_training_fits, kept_elements
from vislab.tasks import get_task, load_config
from vislab.training import train

from conftest import QUIET

GiB = 2**30


def train_args(runs, *args):
    return ("train", "epochs=1", f"runs_dir={runs}", "trainer.accelerator=cpu", *QUIET, *args)


def assert_refused(result, runs, *phrases):
    """Exit 2, one line and no traceback, every phrase in it, and no run folder left behind."""
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vislab: error:") and "Traceback" not in result.err
    for phrase in phrases:
        assert phrase in lines[0]
    assert not runs.exists() or not any(runs.iterdir()), "a refused run left a folder behind"
    return lines[0]


@pytest.fixture
def free(monkeypatch):
    """Sets how much memory the machine has free, so that the tests do not depend on the machine."""

    def set_free(count: int) -> None:
        monkeypatch.setattr(memory, "free_memory", lambda: count)

    return set_free


@pytest.fixture
def photos(tmp_path):
    """Two class folders of four small PNGs each."""
    generator = torch.Generator().manual_seed(0)
    for name in ("cat", "dog"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for index in range(4):
            pixels = torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8, generator=generator).numpy()
            Image.fromarray(pixels).save(tmp_path / "photos" / name / f"{index}.png")
    return tmp_path / "photos"


@pytest.fixture
def segfolder(tmp_path):
    """A segfolder of two train and one val 40x32 image/mask pairs, two classes."""
    root = tmp_path / "seg"
    for split, count in (("train", 2), ("val", 1)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for index in range(count):
            Image.new("RGB", (40, 32), (index * 90, 40, 200)).save(root / split / "images" / f"{index}.png")
            Image.new("L", (40, 32), index % 2).save(root / split / "masks" / f"{index}.png")
    (root / "classes.txt").write_text("sky\nroad\n")
    return root


def test_an_image_size_the_in_memory_digits_cannot_be_held_at_is_one_line(cli, tmp_path):
    runs = tmp_path / "runs"
    line = assert_refused(
        cli(*train_args(runs, "data=digits", "image_size=100000")),
        runs,
        "1,797 images at image_size=100000 need 16.3 TiB in memory",
        "lower image_size",
    )
    assert "in_memory" not in line  # the built-in digits are always held in memory


def test_in_memory_true_that_cannot_fit_names_image_size_and_in_memory(cli, tmp_path, photos, free):
    free(100_000)  # the 8 images at 100x100 need 240,000 bytes
    runs = tmp_path / "runs"
    assert_refused(
        cli(*train_args(runs, f"data=folder:{photos}", "image_size=100", "in_memory=true")),
        runs,
        "8 images at image_size=100 need 234.4 KiB in memory, more than the 97.7 KiB free",
        "lower image_size or set in_memory=false",
    )


def test_left_to_choose_data_too_large_for_memory_is_streamed(tmp_path, photos, free):
    free(20_000)  # the 8 images at 32x32 need 24,576 bytes; one, decoded and batched, 15,360
    config = load_config(None, [f"data=folder:{photos}", "val_fraction=0.5"])
    assert not load_dataset(config, 32).train.in_memory
    free(100 * GiB)
    assert load_dataset(config, 32).train.in_memory


def test_streamed_images_too_large_to_decode_one_are_refused(cli, tmp_path, photos):
    runs = tmp_path / "runs"
    assert_refused(
        cli(*train_args(runs, f"data=folder:{photos}", "image_size=1000000")),
        runs,
        "one image at image_size=1000000 needs 13.6 TiB to decode and batch",
        "lower image_size",
    )


def test_segmentation_pairs_that_cannot_fit_in_memory_are_one_line(cli, tmp_path, segfolder, free):
    free(50_000)  # at 128 px (160x128): 2 train pairs x 4 bytes x 20,480 pixels, and the val image's 3 x
    # 20,480 bytes with its mask at its own 40x32 (1,280 bytes): 226,560 bytes
    runs = tmp_path / "runs"
    assert_refused(
        cli(*train_args(runs, f"data=segfolder:{segfolder}", "image_size=128", "in_memory=true")),
        runs,
        "3 image/mask pairs at image_size=128 need 221.2 KiB in memory",
        "lower image_size or set in_memory=false",
    )


def test_an_absurd_batch_size_is_refused_naming_batch_size(cli, tmp_path, free):
    free(GiB)
    runs = tmp_path / "runs"
    line = assert_refused(
        cli(*train_args(runs, "data=digits", "image_size=64", "batch_size=10000000")),
        runs,
        "batch_size=10000000 (1,617 images a batch) of small_cnn at image_size=64 needs",
        "of activations per image",
        "more than the 1.0 GiB free: lower batch_size (about",
    )
    fitting = int(line.split("(about ")[1].split(" fit")[0].replace(",", ""))
    assert 100 < fitting < 1617


def test_a_single_image_beyond_memory_names_image_size(cli, tmp_path, free):
    free(GiB)
    runs = tmp_path / "runs"
    assert_refused(
        cli(*train_args(runs, "data=digits", "model=mlp", "image_size=512", "batch_size=1")),
        runs,
        "training mlp at image_size=512 needs",
        "for a single image",
        "lower image_size",
    )


@pytest.mark.parametrize(
    ("model", "size", "phrase"),
    [
        ("small_cnn", 1, "small_cnn cannot take 1x1 images (Given input size"),
        ("timm:vit_tiny_patch16_224", 64, "timm:vit_tiny_patch16_224 cannot take 64x64 images"),
    ],
)
def test_a_model_that_cannot_take_the_image_size_is_one_line(cli, tmp_path, model, size, phrase):
    runs = tmp_path / "runs"
    assert_refused(
        cli(*train_args(runs, "data=digits", f"model={model}", f"image_size={size}")),
        runs,
        phrase,
        "change image_size",
    )


def test_a_batch_larger_than_the_training_set_warns_and_trains(cli, tmp_path):
    runs = tmp_path / "runs"
    result = cli(*train_args(runs, "data=digits", "batch_size=5000", "name=big"))
    assert result.code == 0, result.err
    warning = (
        "vislab: warning: batch_size=5000 is larger than the 1,617 training images: each epoch is one "
        "batch of 1,617 (lower batch_size for more steps per epoch)"
    )
    assert warning in result.err.splitlines()
    assert (runs / "big" / "checkpoints" / "last.ckpt").is_file()
    assert batch_warning(5000, 1617) == warning and batch_warning(1617, 1617) is None


def test_the_web_ui_shows_the_same_warning_when_it_checks_the_data():
    config = load_config(None, ["data=digits", "batch_size=5000"])
    assert batch_warning(5000, 1617) in get_task(config.task).preview(config).summary.splitlines()


def test_from_python_train_raises_vislab_error_and_leaves_no_folder(tmp_path):
    runs = tmp_path / "runs"
    config = Config(data="digits", image_size=100000, epochs=1, runs_dir=str(runs), report=False)
    with pytest.raises(VislabError, match="image_size=100000 need 16.3 TiB"):
        train(config)
    assert not runs.exists() or not any(runs.iterdir())


def test_kept_activations_count_each_storage_once():
    # The input (64) and the convolution's output (4 x 64); the in-place ReLU and the flattening view
    # share the convolution's storage, and the Linear's output adds 10.
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(256, 10)
    )
    with torch.device("meta"):
        model = model.to("meta")
    assert kept_elements(model, 1, 8) == 64 + 256 + 10


def test_a_frozen_backbone_keeps_no_activations(free):
    free(GiB)  # small_cnn at 64 px keeps about 4 MiB an image when it all trains: 1,617 of them do not fit
    full = load_config(None, ["data=digits", "image_size=64", "batch_size=2000", "trainer.accelerator=cpu"])
    with pytest.raises(VislabError, match="lower batch_size"):
        check_training_fits(full, 10, 1, 64, 1617)
    linear = full.model_copy(update={"finetune": full.finetune.model_copy(update={"mode": "linear"})})
    check_training_fits(linear, 10, 1, 64, 1617)  # only the head's activations are kept: it fits


def test_a_model_the_meta_device_cannot_run_is_not_judged(monkeypatch):
    class NeedsValues(nn.Module):
        def forward(self, x):
            return x * x.sum().item()  # .item() has no value on the meta device

    monkeypatch.setattr(memory, "meta_model", lambda *args: NeedsValues())
    config = load_config(None, ["data=digits", "batch_size=10000000"])
    check_training_fits(config, 10, 1, 100000, 1617)  # neither a shape error nor an estimate: no refusal
