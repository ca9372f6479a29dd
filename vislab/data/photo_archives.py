"""Photo datasets published as one archive of class folders: the TensorFlow flower photos and PyTorch's
ants-and-bees transfer-learning set. Downloaded (resumable, with progress), unpacked into place only once
whole, and then read like any `folder:` dataset (a `train/` + `val/` layout keeps its split)."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from vislab.data.download import download, extract
from vislab.data.folder import class_folders, load_folder
from vislab.data.registry import PHOTO_AUGMENT, DatasetEntry, LoadRequest, register_dataset
from vislab.data.splits import Splits


@dataclass
class PhotoArchive:
    name: str
    url: str
    folder: str  # what the archive unpacks to
    images: dict[str, int]  # split folder ("" for none) -> images the publisher ships
    description: str

    def root(self, data_dir: Path) -> Path:
        return data_dir / self.folder

    def present(self, data_dir: Path) -> bool:
        return self.root(data_dir).is_dir()

    def ensure(self, data_dir: Path) -> Path:
        """The unpacked folder, downloaded and unpacked first if missing. Neither host publishes a
        checksum: the archive's own CRC-32s (zip members, the gzip stream) are checked while unpacking, a
        damaged archive is deleted and named, and the image counts are compared with the published ones."""
        root = self.root(data_dir)
        if root.is_dir():
            return root
        archive = download(self.url, data_dir / self.url.rsplit("/", 1)[-1])
        unpacking = data_dir / f".{self.folder}.unpacking"
        shutil.rmtree(unpacking, ignore_errors=True)
        extract(archive, unpacking, delete_if_damaged=True)
        (unpacking / self.folder).replace(root)  # in place only once whole
        shutil.rmtree(unpacking, ignore_errors=True)
        self.compare_counts(root)
        return root

    def compare_counts(self, root: Path) -> None:
        for split, expected in self.images.items():
            found = sum(len(files) for files in class_folders(root / split).values())
            if found != expected:
                warning = f"vislab: warning: {root / split} holds {found} images, {expected} expected"
                print(warning, file=sys.stderr)

    def load(self, request: LoadRequest) -> Splits:
        return load_folder(replace(request, path=self.ensure(request.data_dir)))


FLOWERS = PhotoArchive(
    "flowers",
    "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
    "flower_photos",
    {"": 3670},
    "flower photos, 5 classes, 3,670 images (downloads 218 MB)",
)
HYMENOPTERA = PhotoArchive(
    "hymenoptera",
    "https://download.pytorch.org/tutorial/hymenoptera_data.zip",
    "hymenoptera_data",
    {"train": 244, "val": 153},
    "ants vs bees photos, 397 images, train/val (downloads 45 MB)",
)

for photos in (FLOWERS, HYMENOPTERA):
    register_dataset(
        DatasetEntry(
            photos.name, "classification", photos.load, photos.present, photos.description, PHOTO_AUGMENT
        )
    )
