"""`data=csv:FILE`: datasets listed in a CSV file (path,label or image,mask, with an optional split),
trained, evaluated and refused in one line when the file is wrong, on real CIFAR-10 and CamVid images."""

import csv
import json

import pytest

from conftest import QUIET, copy_classes, small_copy


def write_csv(path, header, rows):
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def photos_csv(tmp_path, cifar_jpgs):
    """12 train and 4 val images of 3 classes, listed with paths relative to the CSV, in mixed order."""
    root = copy_classes(cifar_jpgs / "train", tmp_path / "data" / "images", per_class=16, classes=3)
    rows = []
    for class_dir in sorted(root.iterdir()):
        for i, image in enumerate(sorted(class_dir.iterdir())):
            rows.append(
                [f"images/{class_dir.name}/{image.name}", class_dir.name, "val" if i < 4 else "train"]
            )
    return write_csv(tmp_path / "data" / "labels.csv", ["path", "label", "split"], rows[::-1])


def test_a_csv_dataset_trains_with_its_own_splits_and_evaluates(cli, tmp_path, photos_csv):
    runs = tmp_path / "runs"
    result = cli("train", f"data=csv:{photos_csv}", "epochs=1", f"runs_dir={runs}", "name=csv", *QUIET)
    assert result.code == 0, result.err
    summary = json.loads((runs / "csv" / "summary.json").read_text())
    assert summary["classes"] == ["airplane", "automobile", "bird"]
    assert (summary["train_size"], summary["val_size"]) == (36, 12)
    evaluated = cli("eval", runs / "csv")
    assert evaluated.code == 0, evaluated.err
    result = json.loads((runs / "csv" / "eval_val.json").read_text())
    assert sum(map(sum, result["confusion_matrix"])) == 12


def test_a_csv_without_a_split_column_holds_out_val_stratified(cli, tmp_path, photos_csv):
    rows = list(csv.reader(photos_csv.open()))[1:]
    plain = write_csv(photos_csv.with_name("plain.csv"), ["path", "label"], [r[:2] for r in rows])
    runs = tmp_path / "runs"
    args = [f"data=csv:{plain}", "epochs=1", "val_fraction=0.25", f"runs_dir={runs}", "name=plain", *QUIET]
    assert cli("train", *args).code == 0
    summary = json.loads((runs / "plain" / "summary.json").read_text())
    assert (summary["train_size"], summary["val_size"]) == (36, 12)


def test_a_segmentation_csv_trains(cli, tmp_path, camvid):
    data = small_copy(camvid, tmp_path / "camvid", train=6, val=2)
    rows = [
        [f"{split}/images/{p.name}", f"{split}/masks/{p.stem}.png", split]
        for split in ("train", "val")
        for p in sorted((data / split / "images").iterdir())
    ]
    table = write_csv(data / "pairs.csv", ["image", "mask", "split"], rows)
    runs = tmp_path / "runs"
    args = [f"data=csv:{table}", "segmentation.ignore_index=11", "image_size=64", "epochs=1", "batch_size=2"]
    result = cli("train", *args, f"runs_dir={runs}", "name=seg", *QUIET)
    assert result.code == 0, result.err
    assert json.loads((runs / "seg" / "summary.json").read_text())["task"] == "segmentation"


@pytest.mark.parametrize(
    "fault, expected",
    [
        (
            "no label column",
            "has no label column (its columns: path, split; a classification CSV needs path,label",
        ),
        ("unknown split", "line 2: split 'holdout' is none of train, val, test"),
        ("missing image", "line 2: path {root}/images/nowhere.jpg not found"),
        ("empty label", "line 2: empty label"),
        ("no file", "CSV file not found: {root}/none.csv"),
    ],
)
def test_a_wrong_csv_is_one_line(cli, tmp_path, photos_csv, fault, expected):
    root = photos_csv.parent
    header, *rows = list(csv.reader(photos_csv.open()))
    target = photos_csv
    if fault == "no label column":
        write_csv(photos_csv, ["path", "split"], [[r[0], r[2]] for r in rows])
    elif fault == "unknown split":
        write_csv(photos_csv, header, [[*rows[0][:2], "holdout"], *rows[1:]])
    elif fault == "missing image":
        write_csv(photos_csv, header, [["images/nowhere.jpg", *rows[0][1:]], *rows[1:]])
    elif fault == "empty label":
        write_csv(photos_csv, header, [[rows[0][0], "", rows[0][2]], *rows[1:]])
    else:
        target = root / "none.csv"
    runs = tmp_path / "runs"
    result = cli("train", f"data=csv:{target}", "epochs=1", f"runs_dir={runs}", *QUIET)
    assert result.code == 2 and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert expected.format(root=root) in result.err
    assert not runs.exists() or not any(runs.iterdir())
