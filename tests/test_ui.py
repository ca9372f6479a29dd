"""The web UI's pieces without a browser: zip uploads unpacked safely, folders recognised, the page's
form turned into the same `vislab train` words as the CLI, progress.json written during training, and
what the tabs show computed by the tasks themselves."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vislab.checkpoint import load_checkpoint
from vislab.errors import VislabError
from vislab.export import load_predictor
from vislab.tasks import get_task, load_config
from vislab.tasks.segmentation import display
from vislab.ui.predict_tab import show_each
from vislab.ui.setup_tab import DEFAULT_MODEL, config_of, folder_classes, models_for, train_args
from vislab.ui.uploads import data_spec, unpack_zip

from conftest import QUIET, small_copy


def jpeg_bytes(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(out, "JPEG")
    return out.getvalue()


def make_zip(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zipped.writestr(info, "/etc/passwd")
    return path


def test_zip_of_class_folders_unpacks_to_its_dataset_root(tmp_path):
    archive = make_zip(
        tmp_path / "pets.zip",
        {f"pets/{c}/{i}.jpg": jpeg_bytes((i * 40, 0, 0)) for c in ("cat", "dog") for i in range(3)},
    )
    root = unpack_zip(archive, tmp_path / "out")
    assert root == tmp_path / "out" / "pets"
    assert sorted(p.name for p in root.iterdir()) == ["cat", "dog"]
    assert data_spec(root) == f"folder:{root}"
    assert folder_classes(str(root)) == 2 and folder_classes("") is None  # the parameter count's head
    config = load_config(None, [f"data={data_spec(root)}", "val_fraction=0.34"])
    preview = get_task(config.task).preview(config)
    assert [row[0] for row in preview.rows] == ["cat", "dog"]
    assert sum(row[1] + row[2] for row in preview.rows) == 6


@pytest.mark.parametrize(
    ("members", "symlink", "says"),
    [
        ({"../evil.jpg": b"x"}, None, "outside its folder"),
        ({"/etc/evil.jpg": b"x"}, None, "outside its folder"),
        ({"a/b.jpg": b"x"}, "a/link", "symbolic link"),
        ({"bomb.bin": b"\0" * (8 << 20)}, None, "zip bomb"),
    ],
)
def test_unsafe_zips_are_refused_and_nothing_is_written(tmp_path, members, symlink, says):
    archive = make_zip(tmp_path / "upload.zip", members, symlink)
    with pytest.raises(VislabError, match=says):
        unpack_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil.jpg").exists()


def test_a_zip_larger_than_the_cap_is_refused_even_when_its_headers_lie(tmp_path):
    archive = make_zip(tmp_path / "big.zip", {f"c/{i}.jpg": jpeg_bytes((i, i, i)) for i in range(4)})
    with pytest.raises(VislabError, match="unpacks to more than"):
        unpack_zip(archive, tmp_path / "out", max_bytes=1000)
    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(VislabError, match="fake.zip is not a readable zip file"):
        unpack_zip(not_zip, tmp_path / "out2")


def test_typed_folders_are_checked_and_segmentation_folders_recognised(tmp_path, camvid):
    with pytest.raises(VislabError, match="dataset folder not found"):
        data_spec(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(VislabError, match="not a folder"):
        data_spec(tmp_path / "file.txt")
    assert data_spec(camvid).startswith("segfolder:")


def test_the_form_means_the_same_words_as_the_cli():
    form = ["", "built-in", "digits", "", DEFAULT_MODEL, "", None, None, None, None, "", ""]
    assert train_args(*form) == ["data=digits"]  # empty fields: what the data resolves to
    form[6], form[10], form[11] = 3, "label_smoothing=0.1", "mine"
    assert train_args(*form) == ["data=digits", "label_smoothing=0.1", "epochs=3", "name=mine"]
    form[6] = 30  # typed, so used, even where it is also the default
    assert "epochs=30" in train_args(*form)
    form[5] = "false"  # the pretrained switch, where set
    assert "pretrained=false" in train_args(*form)
    recipe = ["cifar10_resnet20", "built-in", "cifar10", "", "resnet20", "", None, None, None, None, "", ""]
    assert train_args(*recipe) == ["--config", "cifar10_resnet20", "data=cifar10", "model=resnet20"]
    # Values the config refuses are refused in its words, never replaced by a default.
    for field, value, says in ((6, 0, "epochs"), (8, -1, "optim.lr"), (9, 0, "image_size"), (7, 0, "batch")):
        bad = list(form)
        bad[field] = value
        with pytest.raises(VislabError, match=says):
            config_of(train_args(*bad))
    # The page writes only inside its runs folder: run names are names, the folders are the server's.
    for extra, says in (
        ("runs_dir=/tmp", "runs_dir is the server's"),
        ("data_dir=/", "data_dir is the server's"),
    ):
        with pytest.raises(VislabError, match=says):
            train_args(*form[:10], extra, "")
    with pytest.raises(VislabError, match="a run name is a folder name"):
        config_of(train_args(*form[:11], "../escape"))
    form[6], form[10] = None, "epochs=zero"
    with pytest.raises(VislabError, match="epochs"):
        config_of(train_args(*form))


def test_training_writes_progress_for_the_page(cli, tmp_path):
    result = cli("train", f"runs_dir={tmp_path}", "name=run", "epochs=2", "batch_size=64", *QUIET)
    assert result.code == 0, result.err
    assert f"run folder {tmp_path / 'run'}" in result.err
    progress = json.loads((tmp_path / "run" / "progress.json").read_text())
    assert progress["state"] == "finishing" and progress["epoch"] == 2 and progress["epochs"] == 2
    assert progress["step"] == progress["batches"] * 2 and progress["eta_s"] == 0
    epochs = [point["epoch"] for point in progress["curve"]]
    assert epochs == sorted(epochs) and epochs[-1] == 2.0 and 1.0 in epochs
    assert all(p["train_loss"] > 0 and p["images_per_s"] > 0 for p in progress["curve"])


def test_what_the_tabs_show_comes_from_the_task(cli, tmp_path):
    assert cli("train", f"runs_dir={tmp_path}", "name=run", "epochs=2", *QUIET).code == 0
    run = tmp_path / "run"
    checkpoint_task = get_task("classification")
    checkpoint = load_checkpoint(run)
    assert cli("eval", run).code == 0
    confusion = json.loads((run / "eval_val.json").read_text())["confusion_matrix"]
    pictures = checkpoint_task.confusion_images(checkpoint, "val", 3, 3)
    assert len(pictures) == min(24, confusion[3][3])
    assert all(p.shape == (8, 8, 3) and p.dtype == np.uint8 for p, _ in pictures)
    image = tmp_path / "digit.png"
    Image.fromarray(pictures[0][0]).save(image)
    shown = checkpoint_task.show(load_predictor(run), [image], 3)[0]
    assert list(shown.top) == [shown.row["class1"], shown.row["class2"], shown.row["class3"]]
    # The picture of a "3" that the model called 3, fed back as a file, is called 3 again.
    assert shown.row["class1"] == "3" and list(shown.top.values()) == sorted(shown.top.values(), reverse=True)
    assert len(shown.pictures) == 2  # the image and its Grad-CAM
    # In a batch with bad files, the good images are shown and each bad one is named in one line.
    upload = tmp_path / ("0f" * 32)  # as Gradio keeps uploads: under a long temporary folder
    upload.mkdir()
    (upload / "notes.jpg").write_text("not an image")
    (upload / "empty.png").write_bytes(b"")
    files = [upload / "notes.jpg", image, upload / "empty.png"]
    shown, refused = show_each(checkpoint_task, load_predictor(run), files, 3)
    assert [item.row["file"] for item in shown] == ["digit.png"] and len(refused) == 2
    assert refused[0].startswith("cannot read image notes.jpg: ") and "empty.png" in refused[1]
    assert not any("0f0f" in line for line in refused)


def test_segmentation_shows_masks_and_the_pixels_behind_a_cell(cli, tmp_path, camvid, monkeypatch):
    data = small_copy(camvid, tmp_path / "data", 8, 3)
    args = [
        f"data=segfolder:{data}",
        "segmentation.ignore_index=11",
        "epochs=1",
        "image_size=64",
        "batch_size=4",
    ]
    assert cli("train", f"runs_dir={tmp_path}", "name=seg", *args, *QUIET).code == 0
    checkpoint = load_checkpoint(tmp_path / "seg")
    task = get_task("segmentation")
    config = load_config(None, args[:2])
    preview = task.preview(config)
    assert preview.rows == [["train", 8], ["val", 3]] and len(preview.samples) == 1 + 8
    assert preview.samples[0][1] == "colours" and preview.samples[0][0].shape[2] == 3  # the legend first
    files = sorted((data / "val" / "images").iterdir())[:2]
    first, second = task.show(load_predictor(tmp_path / "seg"), files, 5)
    assert first.top is None and [caption for _, caption in first.pictures][1:] == [
        f"{files[0].name}: mask",
        "colours",  # the legend, once for the batch
    ]
    assert len(second.pictures) == 2
    # The page's path, with a bad file among them: the good images shown, the legend still once.
    (tmp_path / "bad.png").write_text("not an image")
    each, refused = show_each(task, load_predictor(tmp_path / "seg"), [*files, tmp_path / "bad.png"], 5)
    assert len(each) == 2 and len(refused) == 1
    assert sum(caption == "colours" for item in each for _, caption in item.pictures) == 1
    shown = first
    assert abs(sum(v for k, v in shown.row.items() if k != "file") - 1) < 1e-3
    task.prefetch_cells(checkpoint, "val")  # what the page starts as the run is shown
    pictures = task.confusion_images(checkpoint, "val", 0, 0)  # sky pixels predicted as sky
    assert pictures[0][1] == "colours"  # the legend: which colour marks the cell's pixels
    assert 0 < len(pictures) - 1 <= 3 and pictures[1][0].ndim == 3
    # The masks predicted once for the split are what the pictures show; past the budget for keeping
    # them, each cell predicts its images again, to the same pictures.
    key = (str(checkpoint.path), checkpoint.path.stat().st_mtime, "val")
    kept = display.pixel_confusions(*key)
    assert len(kept[2]) == 3 and all(labels is not None for labels in kept[2])
    monkeypatch.setattr(display, "KEPT_PIXELS", 0)
    display.PASSES.clear()
    again = task.confusion_images(checkpoint, "val", 0, 0)
    assert all(labels is None for labels in display.pixel_confusions(*key)[2])
    assert [c for _, c in again] == [c for _, c in pictures]
    assert all((a == b).all() for (a, _), (b, _) in zip(again[1:], pictures[1:]))


def test_the_model_list_follows_the_datas_task(tmp_path, camvid):
    scenes = small_copy(camvid, tmp_path / "scenes", 2, 1)
    for_digits = models_for("built-in", "digits", "")
    for_scenes = models_for("folder", "digits", str(scenes))
    assert "small_cnn" in for_digits and "deep_unet" not in for_digits
    assert "deep_unet" in for_scenes and "small_cnn" not in for_scenes
    assert for_digits[0] == for_scenes[0] == DEFAULT_MODEL


def test_the_time_a_run_takes_is_estimated_before_start_and_a_long_one_warned(tmp_path, camvid):
    from vislab.estimate import run_time_lines, seconds_per_image

    digits = load_config(None, ["data=digits", "epochs=3"])
    shown = get_task("classification").preview(digits).summary
    assert "an epoch on this machine" in shown and "for 3 epochs" in shown and "warning" not in shown
    # The estimate follows the model: a ResNet-18 image costs far more than small_cnn's 8x8 digit.
    small = seconds_per_image(digits, 10, 1, 8)
    large = seconds_per_image(load_config(None, ["data=digits", "model=cifar_resnet18"]), 10, 3, 32)
    assert 0 < small * 5 < large
    long_run = load_config(None, ["data=digits", "epochs=1000000"])
    _, warning = run_time_lines(long_run, 10, 1, 8, 1616)
    assert warning.startswith("vislab: warning: 1000000 epochs of small_cnn on 1,616 images at 8 px take")
    assert warning.endswith("lower epochs or image_size, or choose a smaller model")
    scenes = small_copy(camvid, tmp_path / "scenes", 2, 1)
    segmentation = load_config(None, [f"data=segfolder:{scenes}", "segmentation.ignore_index=11"])
    assert "an epoch on this machine" in get_task("segmentation").preview(segmentation).summary


def test_the_page_applies_fixes_only_to_data_inside_its_runs_folder(tmp_path):
    from vislab.ui.audit import apply_audit, fixes_text, page_owns

    runs = tmp_path / "runs"
    inside, outside = runs / ".ui" / "uploads" / "pets", tmp_path / "elsewhere" / "pets"
    for folder in (inside, outside):
        for kind in ("cat", "dog"):
            (folder / kind).mkdir(parents=True)
            (folder / kind / "a.jpg").write_bytes(jpeg_bytes((200, 0, 0)))
    owned, foreign = (load_config(None, [f"data=folder:{f}"]) for f in (inside, outside))
    assert page_owns(runs, owned) and not page_owns(runs, foreign)
    assert not page_owns(runs, load_config(None, ["data=digits"]))
    plan = [{"action": "remove", "file": str(outside / "cat" / "a.jpg"), "target": "", "reason": "a leak"}]
    assert fixes_text(plan, foreign, False).endswith(f"run: `vislab check folder:{outside} --apply`")
    # The last audit of a folder of the same name elsewhere: its plan names files outside the upload.
    stale = {"leaks": [], "duplicates": [], "label_issues": []}
    stale["unreadable"] = [{"file": str(outside / "cat" / "a.jpg"), "problem": "cannot be decoded"}]
    (runs / "check" / "pets").mkdir(parents=True)
    (runs / "check" / "pets" / "check.json").write_text(json.dumps(stale))
    with pytest.raises(VislabError, match="the page changes only data inside its runs folder"):
        apply_audit(runs, foreign, confirmed=True)
    with pytest.raises(VislabError, match="tick 'yes, move the files' first"):
        apply_audit(runs, owned, confirmed=False)
    with pytest.raises(VislabError, match=f"the last audit's fixes name files outside {inside}"):
        apply_audit(runs, owned, confirmed=True)
    assert (outside / "cat" / "a.jpg").is_file()  # nothing moved
