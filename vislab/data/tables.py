"""`csv:FILE`: a dataset listed in a CSV file, the form Kaggle-style datasets come in. Classification:
columns `path,label`; segmentation: `image,mask` (class names in classes.txt beside the file, as for
`segfolder:`). An optional `split` column says train, val or test; without it (or without val rows) the
validation images are held out of train, stratified. Paths are relative to the CSV file. Read like any
image folder: into memory when it fits, with the same augmentation."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

from vislab.data.folder import files_split, native_size
from vislab.data.registry import PHOTO_AUGMENT, DatasetEntry, LoadRequest, register_dataset
from vislab.data.segmentation import SEGMENTATION_AUGMENT, SegSplit, SegSplits, finish, folder_classes
from vislab.data.splits import Splits, stratified_split
from vislab.errors import VislabError
from vislab.memory import hold_in_memory

SPLITS = ("train", "val", "test")
COLUMNS = {"classification": ("path", "label"), "segmentation": ("image", "mask")}


def table_task(path: Path) -> str:
    """classification or segmentation, from the CSV file's header."""
    header = read_table(path)[0]
    return "segmentation" if set(COLUMNS["segmentation"]) <= set(header) else "classification"


def read_table(path: Path) -> tuple[list[str], list[dict]]:
    """The header and the rows of a CSV file, each row numbered by its line (`_line`)."""
    if not path.is_file():
        raise VislabError(f"CSV file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            header = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = header
            rows = [row | {"_line": number} for number, row in enumerate(reader, start=2)]
    except (UnicodeDecodeError, csv.Error) as error:
        raise VislabError(f"cannot read CSV file {path}: {error}") from None
    return header, rows


def checked_rows(path: Path, task: str) -> dict[str, list[dict]]:
    """The rows by split, each with its columns present and non-empty and its files on disk."""
    header, rows = read_table(path)
    needed = COLUMNS[task]
    missing = [name for name in needed if name not in header]
    if missing:
        raise VislabError(
            f"{path} has no {' or '.join(missing)} column (its columns: {', '.join(header) or 'none'}; "
            f"a {task} CSV needs {','.join(needed)}, and may have split)"
        )
    by_split: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for row in rows:
        where = f"{path}, line {row['_line']}"
        for name in needed:
            if not (row.get(name) or "").strip():
                raise VislabError(f"{where}: empty {name}")
        split = (row.get("split") or "train").strip()
        if split not in by_split:
            raise VislabError(f"{where}: split {split!r} is none of {', '.join(SPLITS)}")
        for name in needed[:1] if task == "classification" else needed:
            file = path.parent / row[name].strip()
            if not file.is_file():
                raise VislabError(f"{where}: {name} {file} not found")
            row[name] = file
        by_split[split].append(row)
    if not by_split["train"]:
        raise VislabError(f"{path} lists no training images")
    return by_split


def load_classification_table(request: LoadRequest) -> Splits:
    by_split = checked_rows(request.path, "classification")
    names = sorted({row["label"].strip() for rows in by_split.values() for row in rows})
    if all(name.lstrip("-").isdigit() for name in names):
        names.sort(key=int)  # numeric labels keep their numeric order: 2 before 10
    if len(names) < 2:
        raise VislabError(f"{request.path} has only one label ({names[0]}); a classifier needs at least two")
    index = {name: i for i, name in enumerate(names)}

    def files_and_labels(rows: list[dict]) -> tuple[list[Path], list[int]]:
        return [row["path"] for row in rows], [index[row["label"].strip()] for row in rows]

    files, labels = files_and_labels(by_split["train"])
    size = request.image_size or native_size(files, request.skip_bad_images)
    count = sum(len(rows) for rows in by_split.values())
    in_memory = hold_in_memory(request.in_memory, count, 3 * size * size, size)
    skipped: list[Path] = []

    def make_split(rows: list[dict]):
        return files_split(*files_and_labels(rows), size, in_memory, request.skip_bad_images, skipped)

    train = make_split(by_split["train"])
    if by_split["val"]:
        val = make_split(by_split["val"])
    else:
        train, val = stratified_split(train, request.val_fraction)
    test = make_split(by_split["test"]) if by_split["test"] else None
    return Splits(names, 3, size, train, val, test, skipped)


def load_segmentation_table(request: LoadRequest) -> SegSplits:
    """Image/mask pairs listed in the CSV, with classes.txt (and dataset.yaml) beside it, as `segfolder:`."""
    by_split = checked_rows(request.path, "segmentation")
    if not by_split["val"]:
        raise VislabError(f"{request.path} lists no val pairs: a segmentation CSV needs split=val rows")
    described = folder_classes(request.path.parent, request.ignore_index)

    def pairs(rows: list[dict]) -> SegSplit:
        return SegSplit([row["image"] for row in rows], [row["mask"] for row in rows])

    splits = replace(described, train=pairs(by_split["train"]), val=pairs(by_split["val"]))
    return finish(splits, request)


register_dataset(
    DatasetEntry(
        "csv",
        "classification",
        load_classification_table,
        lambda _: True,
        "a CSV file of path,label (optional split): csv:FILE",
        PHOTO_AUGMENT,
    )
)
register_dataset(
    DatasetEntry(
        "segcsv",
        "segmentation",
        load_segmentation_table,
        lambda _: True,
        "a CSV file of image,mask (optional split), classes.txt beside it: csv:FILE",
        SEGMENTATION_AUGMENT,
    )
)
