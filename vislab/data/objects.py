"""`data=` a torch Dataset from Python: any map-style dataset of (image, label), or a (train, val) pair,
the images PIL images, arrays or tensors. It is read once into memory as uint8 tensors at the run's
`image_size` (read as files are: upright, resized and centre-cropped) and then trains like a folder,
with the same in-memory augmentation. Classes come from the dataset's `.classes`, else from its labels.

The dataset is registered for this process under `python:NAME`, the name a run's config.yaml records; a
later process has no such object, so a command that needs the data (`vislab eval`, `report`) says to pass
`data=` or to evaluate from Python."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch

from vislab.data.images import decode_any, fit
from vislab.data.registry import PHOTO_AUGMENT, DatasetEntry, LoadRequest
from vislab.data.splits import Split, Splits, stratified_split
from vislab.errors import VislabError
from vislab.memory import hold_in_memory

PYTHON_PREFIX = "python:"
DEFAULT_SIZE = 32  # images of a Python dataset are read at this side unless image_size says otherwise
_REGISTERED: dict[str, DatasetEntry] = {}
_numbers = itertools.count(1)


def is_dataset(value: Any) -> bool:
    """A map-style dataset (len and indexing), or a (train, val) pair of them; not text, not a list of
    config values."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return all(is_dataset(part) for part in value)
    return hasattr(value, "__getitem__") and hasattr(value, "__len__") and not isinstance(value, (str, dict))


def register_python_dataset(value: Any) -> str:
    """Registers a Dataset (or a (train, val) pair) for this process; returns its `data=` name."""
    train, val = value if isinstance(value, (tuple, list)) else (value, None)
    name = f"{PYTHON_PREFIX}{type(train).__name__}-{next(_numbers)}"
    _REGISTERED[name] = DatasetEntry(
        name,
        "classification",
        lambda request: load_python_dataset(train, val, request),
        lambda _: True,
        f"{type(train).__name__} from Python",
        PHOTO_AUGMENT,
    )
    return name


def python_dataset(name: str) -> DatasetEntry:
    if name not in _REGISTERED:
        raise VislabError(
            f"data={name} was a Dataset object in the Python process that trained on it; here pass data= "
            "(a folder, a CSV file, a dataset name), or evaluate from Python with Model.evaluate(data=...)"
        )
    return _REGISTERED[name]


def labelled(dataset: Sequence, what: str) -> list[tuple[Any, Any]]:
    """Every (image, label) item of a dataset, checked to be one."""
    items = []
    for index in range(len(dataset)):
        item = dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            sequence = isinstance(item, (tuple, list))
            shown = f"a {type(item).__name__} of {len(item)}" if sequence else f"a {type(item).__name__}"
            raise VislabError(f"{what}[{index}] is {shown}, not (image, label)")
        label = item[1].item() if isinstance(item[1], torch.Tensor) and item[1].numel() == 1 else item[1]
        if not isinstance(label, (int, str)) or isinstance(label, bool):
            raise VislabError(f"{what}[{index}] has the label {label!r}: give an int or a class name")
        items.append((item[0], label))
    if not items:
        raise VislabError(f"{what} is empty")
    return items


def class_names(dataset: Any, labels: list) -> list[str]:
    """The dataset's `.classes`, else its distinct labels (ints in order, as text)."""
    given = getattr(dataset, "classes", None)
    if given is not None:
        return [str(name) for name in given]
    if all(isinstance(label, int) for label in labels):
        return [str(i) for i in range(max(labels) + 1)]
    return sorted({str(label) for label in labels})


def to_split(items: list[tuple[Any, Any]], classes: list[str], size: int, what: str) -> Split:
    index = {name: i for i, name in enumerate(classes)}
    images, targets = [], []
    for position, (image, label) in enumerate(items):
        if isinstance(label, int):
            if not 0 <= label < len(classes):
                raise VislabError(f"{what}[{position}] has the label {label}, outside 0..{len(classes) - 1}")
            targets.append(label)
        elif label in index:
            targets.append(index[label])
        else:
            raise VislabError(f"{what}[{position}] has the label {label!r}, not one of its classes")
        try:
            images.append(fit(decode_any(image, 3), size))
        except VislabError as error:
            raise VislabError(f"{what}[{position}]: {error}") from None
    return Split(torch.tensor(targets), torch.stack(images), None)


def load_python_dataset(train: Sequence, val: Sequence | None, request: LoadRequest) -> Splits:
    name = type(train).__name__
    size = request.image_size or DEFAULT_SIZE
    train_items = labelled(train, name)
    val_items = labelled(val, f"{type(val).__name__} (val)") if val is not None else []
    hold_in_memory(True, len(train_items) + len(val_items), 3 * size * size, size, can_stream=False)
    classes = class_names(train, [label for _, label in train_items])
    if len(classes) < 2:
        raise VislabError(f"{name} has one class; a classifier needs at least two")
    training = to_split(train_items, classes, size, name)
    if val is None:
        training, validation = stratified_split(training, request.val_fraction)
    else:
        validation = to_split(val_items, classes, size, f"{type(val).__name__} (val)")
    return Splits(classes, 3, size, training, validation, None, [])
