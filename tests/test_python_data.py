"""`data=` a torch Dataset from Python: a map-style dataset of (image, label) over real CIFAR-10 JPEGs,
or a (train, val) pair, trains like the same images in a folder; a dataset that yields anything else is
one line."""

import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

import vislab
from vislab.errors import VislabError

from conftest import copy_classes

FAST = {"report": False, "trainer": {"progress_bar": False}, "epochs": 1}


class Photos(Dataset):
    """What a student writes: files and labels, images handed out as PIL images, arrays or tensors."""

    def __init__(self, root, form="pil"):
        self.classes = sorted(p.name for p in root.iterdir())
        self.items = [(f, i) for i, c in enumerate(self.classes) for f in sorted((root / c).iterdir())]
        self.form = form

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        file, label = self.items[index]
        image = Image.open(file).convert("RGB")
        if self.form == "array":
            return np.asarray(image), label
        if self.form == "tensor":
            return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255, torch.tensor(
                label
            )
        return image, label


@pytest.fixture(scope="module")
def photos(tmp_path_factory, cifar_jpgs):
    root = tmp_path_factory.mktemp("photos")
    copy_classes(cifar_jpgs / "train", root / "train", per_class=12, classes=3)
    copy_classes(cifar_jpgs / "test", root / "val", per_class=4, classes=3)
    return root


@pytest.mark.parametrize("form", ["pil", "array", "tensor"])
def test_a_dataset_pair_trains_like_the_same_images_in_a_folder(tmp_path, photos, form):
    pair = (Photos(photos / "train", form), Photos(photos / "val", form))
    from_python = vislab.train(data=pair, runs_dir=tmp_path, name="python", **FAST)
    from_folder = vislab.train(data=f"folder:{photos}", runs_dir=tmp_path, name="folder", **FAST)
    assert (
        from_python.summary["classes"] == from_folder.summary["classes"] == ["airplane", "automobile", "bird"]
    )
    assert (from_python.summary["train_size"], from_python.summary["val_size"]) == (36, 12)
    # The same pixels, the same seed: the same run.
    assert from_python.metrics["val_top1"].tolist() == from_folder.metrics["val_top1"].tolist()
    assert from_python.config.data.startswith("python:Photos-")
    # Evaluated on a Dataset from Python, by the model that trained on it.
    metrics = from_python.load().evaluate(data=Photos(photos / "val", form))
    assert metrics["top1"] == pytest.approx(from_python.summary["final_val_top1"], abs=1e-6)


def test_one_dataset_is_split_stratified(tmp_path, photos):
    run = vislab.train(data=Photos(photos / "train"), val_fraction=0.25, runs_dir=tmp_path, **FAST)
    assert (run.summary["train_size"], run.summary["val_size"]) == (27, 9)


class Broken(Dataset):
    def __init__(self, item):
        self.item = item

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return self.item


@pytest.mark.parametrize(
    "item, expected",
    [
        ({"image": 1}, "Broken[0] is a dict, not (image, label)"),
        ((np.zeros((8, 8), np.uint8), 0, 1), "Broken[0] is a tuple of 3, not (image, label)"),
        ((np.zeros((8, 8), np.uint8), 0.5), "Broken[0] has the label 0.5: give an int or a class name"),
        (("not an image", 1), "Broken[0]: image not found: not an image"),  # text is a path
    ],
)
def test_a_dataset_of_anything_but_image_label_pairs_is_one_line(tmp_path, item, expected):
    with pytest.raises(VislabError, match="^" + re.escape(expected)):
        vislab.train(data=Broken(item), runs_dir=tmp_path, **FAST)
    assert not any(tmp_path.iterdir())


def test_a_run_on_python_data_says_what_to_pass_in_another_process(cli, tmp_path, photos):
    run = vislab.train(data=(Photos(photos / "train"), Photos(photos / "val")), runs_dir=tmp_path, **FAST)
    from vislab.data import objects

    objects._REGISTERED.clear()  # as in a new process
    result = cli("eval", run.path)
    assert result.code == 2 and "was a Dataset object in the Python process that trained on it" in result.err
    assert cli("eval", run.path, f"data=folder:{photos}").code == 0
