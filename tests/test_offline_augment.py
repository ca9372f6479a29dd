"""`vislab augment` writes an image folder with augmented copies of the training images, through the
training augmentation code, and an interrupted run resumes to exactly the files of an uninterrupted one."""

import pytest

from vislab.cli import main
from vislab.data import offline

from conftest import QUIET, copy_classes


@pytest.fixture(scope="module")
def photos(tmp_path_factory, cifar_jpgs):
    """Real CIFAR-10 JPEGs: train/ with 30 of each of 3 classes, test/ with 10 of each."""
    root = tmp_path_factory.mktemp("photos")
    copy_classes(cifar_jpgs / "train", root / "train", per_class=30, classes=3)
    copy_classes(cifar_jpgs / "test", root / "test", per_class=10, classes=3)
    return root


ARGS = ["--copies", "2", "augment.rotation=10", "augment.hue=0.05", "val_fraction=0.2"]


def files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_augment_writes_originals_copies_and_untouched_val_and_test(cli, tmp_path, photos):
    result = cli("augment", f"folder:{photos}", tmp_path / "out", *ARGS)
    assert result.code == 0, result.err
    assert "train 72 images + 144 augmented copies, val/test 48 images untouched" in result.out
    written = files(tmp_path / "out")
    train = [p for p in written if p.parts[0] == "train"]
    assert len(train) == 72 * 3 and sum(p.stem.endswith(("_aug1", "_aug2")) for p in train) == 144
    for split, source, count in (("val", "train", 18), ("test", "test", 30)):
        copied = [p for p in written if p.parts[0] == split]  # val: held out from train
        assert len(copied) == count
        assert all(written[p] == (photos / source / p.relative_to(split)).read_bytes() for p in copied)
    original = next(p for p in train if p.suffix == ".jpg")
    copy = original.with_name(original.stem + "_aug1.png")
    assert written[original] == (photos / "train" / original.relative_to("train")).read_bytes()
    assert copy in written and written[copy] != written[original]
    # The written folder trains like any other.
    assert main(["train", f"data=folder:{tmp_path / 'out'}", "epochs=1", f"runs_dir={tmp_path}", *QUIET]) == 0


def test_an_interrupted_augment_resumes_to_the_same_files(cli, tmp_path, photos, monkeypatch):
    assert cli("augment", f"folder:{photos}", tmp_path / "whole", *ARGS).code == 0
    saved, real_save = [], offline.save_png

    def failing_save(image, path):
        if len(saved) == 100:
            raise OSError(28, "No space left on device")
        saved.append(path)
        real_save(image, path)

    monkeypatch.setattr(offline, "save_png", failing_save)
    cut = cli("augment", f"folder:{photos}", tmp_path / "cut", *ARGS)
    assert cut.code == 1 and cut.err == "vislab: error: No space left on device\n"  # the machine's fault
    assert not list((tmp_path / "cut").rglob(".*.tmp*"))  # nothing half-written
    monkeypatch.setattr(offline, "save_png", real_save)
    assert cli("augment", f"folder:{photos}", tmp_path / "cut", *ARGS).code == 0
    assert files(tmp_path / "cut") == files(tmp_path / "whole")


def test_augment_refuses_what_an_image_folder_cannot_hold(cli, tmp_path, photos):
    result = cli("augment", f"folder:{photos}", tmp_path / "out", "augment.mixup=0.2")
    assert result.code == 2 and "mix labels" in result.err
    result = cli("augment", f"folder:{photos}", tmp_path / "out", "augment.hflip=alternate")
    assert result.code == 2 and "hflip=true" in result.err
    result = cli("augment", f"folder:{photos}", tmp_path / "out", "--copies", "0")
    assert result.code == 2 and "at least 1" in result.err
