import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from vislab.data import load_dataset
from vislab.data.images import decode_jpegs_as_is, jpeg_size, read_image, read_images
from vislab.data.splits import channel_stats
from vislab.errors import VislabError
from vislab.tasks import load_config
from vislab.tasks.classification.module import resolve_defaults

from conftest import QUIET, copy_classes


def folder_config(path: Path, *overrides: str):
    return load_config(None, [f"data=folder:{path}", *overrides])


def test_digits_split_is_stratified_and_fixed():
    first = load_dataset(load_config())
    second = load_dataset(load_config(None, ["seed=7"]))
    assert len(first.train) + len(first.val) == 1797
    assert torch.equal(first.val.labels, second.val.labels) and torch.equal(
        first.val.images, second.val.images
    )
    counts = Counter(first.val.labels.tolist())
    assert min(counts.values()) >= 17 and max(counts.values()) <= 19  # 10% of each ~180-image class
    assert first.train.images.dtype == torch.uint8 and first.train.images.shape[1:] == (1, 8, 8)


def test_folder_with_train_and_test_splits_val_from_train_and_keeps_test(cifar_jpgs):
    splits = load_dataset(folder_config(cifar_jpgs))
    assert splits.classes[:3] == ["airplane", "automobile", "bird"] and len(splits.classes) == 10
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1800, 200, 500)
    assert splits.train.images.shape[1:] == (3, 32, 32) and splits.image_size == 32
    assert Counter(splits.val.labels.tolist()) == {label: 20 for label in range(10)}


def test_folder_of_class_folders_is_split_with_a_fixed_seed(cifar_jpgs, tmp_path):
    root = copy_classes(cifar_jpgs / "test", tmp_path / "photos", per_class=20)
    splits = load_dataset(folder_config(root, "val_fraction=0.25"))
    again = load_dataset(folder_config(root, "val_fraction=0.25", "seed=3"))
    assert (len(splits.train), len(splits.val), splits.test) == (150, 50, None)
    assert torch.equal(splits.val.images, again.val.images)


def test_normalisation_is_computed_on_the_train_split(cifar_jpgs):
    config = folder_config(cifar_jpgs)
    splits = load_dataset(config)
    resolved = resolve_defaults(config, splits)
    assert resolved.mean == channel_stats(splits.train.images)[0]
    assert 0.4 < resolved.mean[0] < 0.55 and 0.2 < resolved.std[0] < 0.3  # CIFAR-10's known statistics
    assert resolved.augment.hflip is True and resolved.augment.crop_padding == 4


def test_images_stream_from_disk_when_not_held_in_memory(cifar_jpgs):
    splits = load_dataset(folder_config(cifar_jpgs, "in_memory=false"))
    assert not splits.train.in_memory and len(splits.train.files) == 1800


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_every_image_mode_becomes_rgb(cifar_jpgs, tmp_path, mode):
    source = next((cifar_jpgs / "test" / "cat").iterdir())
    converted = Image.open(source).convert(mode if mode != "I;16" else "I").convert(mode)
    path = tmp_path / ("image.tif" if mode in ("CMYK", "I;16") else "image.png")
    converted.save(path)
    tensor = read_image(path, channels=3)
    assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.uint8


def test_jpegs_decoded_in_batches_equal_pil_pixel_for_pixel(cifar_jpgs, tmp_path):
    photos = sorted((cifar_jpgs / "train" / "cat").iterdir())[:40]
    source = Image.open(photos[0])
    for mode in ("L", "CMYK"):
        source.convert(mode).save(tmp_path / f"{mode}.jpg", quality=90)
    source.save(tmp_path / "lossless.png")
    source.resize((48, 40)).save(tmp_path / "larger.jpg")
    odd = [tmp_path / name for name in ("L.jpg", "CMYK.jpg", "lossless.png", "larger.jpg")]
    paths = photos + odd
    batched = decode_jpegs_as_is(paths, 32)
    assert all(t is not None for t in batched[:42]) and batched[42:] == [None, None]  # PNG; needs resizing
    tensors, bad = read_images(paths, 3, 32, skip_bad=False)
    assert bad == [] and all(torch.equal(t, read_image(p, 3, 32)) for t, p in zip(tensors, paths))


def test_a_jpeg_declaring_a_huge_frame_is_refused_before_it_is_decoded(cifar_jpgs, tmp_path):
    data = bytearray(next((cifar_jpgs / "test" / "cat").iterdir()).read_bytes())
    assert jpeg_size(bytes(data)) == (32, 32)
    frame = data.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = (50_000).to_bytes(2, "big") * 2  # height, width: 7.5 GB once decoded
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(bytes(data))
    assert jpeg_size(bytes(data)) == (50_000, 50_000) and decode_jpegs_as_is([bomb], None) == [None]
    with pytest.raises(VislabError, match=f"image {bomb} has over .* decompression bomb"):
        read_images([bomb], 3, None, skip_bad=False)


def test_a_corrupt_image_is_named_in_the_error(cifar_jpgs, tmp_path):
    root = copy_classes(cifar_jpgs / "test", tmp_path / "photos", per_class=10)
    bad = root / "cat" / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(VislabError, match=f"cannot read image {bad}"):
        load_dataset(folder_config(root))


def test_skip_bad_images_leaves_them_out_and_lists_them(cifar_jpgs, tmp_path):
    root = copy_classes(cifar_jpgs / "test", tmp_path / "photos", per_class=10)
    bad = root / "dog" / "truncated.jpg"
    bad.write_bytes((root / "dog").iterdir().__next__().read_bytes()[:100])
    splits = load_dataset(folder_config(root, "skip_bad_images=true"))
    assert splits.skipped == [bad] and len(splits.train) + len(splits.val) == 100


def test_empty_folder_and_single_class_are_rejected(tmp_path, cifar_jpgs):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VislabError, match="no class folders with images"):
        load_dataset(folder_config(tmp_path / "empty"))
    one = copy_classes(cifar_jpgs / "test", tmp_path / "one", per_class=5, classes=1)
    with pytest.raises(VislabError, match="only one class folder"):
        load_dataset(folder_config(one))


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(VislabError, match="dataset folder not found"):
        load_dataset(folder_config(tmp_path / "nowhere"))


def test_phone_photos_are_read_upright_on_every_path(cli, tmp_path, cifar_jpgs):
    """A camera stores a portrait photo turned, with an EXIF tag saying how to turn it back: training data
    (batched and PIL decoding), prediction and a segmentation pair's size check all see it upright."""
    source = Image.open(next((cifar_jpgs / "train" / "cat").iterdir())).convert("RGB").resize((64, 32))
    stored = source.transpose(Image.Transpose.ROTATE_90)  # 32 wide, 64 tall, as the sensor saw it
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to show"
    photo = tmp_path / "phone.jpg"
    stored.save(photo, exif=exif, quality=100)
    upright = torch.from_numpy(np.array(ImageOps.exif_transpose(Image.open(photo)))).permute(2, 0, 1)
    assert upright.shape == (3, 32, 64)  # wide again
    assert torch.equal(read_image(photo, 3), upright)
    assert torch.equal(decode_jpegs_as_is([photo], None)[0], upright)
    assert torch.equal(read_images([photo], 3, None, False)[0][0], upright)
    # A mask drawn on the upright picture (64 x 32) passes the pair check.
    root = tmp_path / "seg"
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(2):
            shutil.copy(photo, root / split / "images" / f"{i}.jpg")
            Image.fromarray(np.zeros((32, 64), np.uint8)).save(root / split / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("background\nthing\n")
    result = cli("train", f"data=segfolder:{root}", "epochs=1", f"runs_dir={tmp_path / 'runs'}", *QUIET)
    assert result.code == 0, result.err
