"""The photo datasets known by name (flowers, hymenoptera) download themselves: served here from a local
HTTP server in their publishers' layouts, made of real flower photos."""

import io
import tarfile
import zipfile

import pytest

from vislab.cli import main
from vislab.data import load_dataset
from vislab.data.photo_archives import FLOWERS, HYMENOPTERA
from vislab.errors import VislabError
from vislab.recipes import recipe_path
from vislab.tasks import load_config

from conftest import QUIET, RangeServer, extract_archive


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The flowers5 photos (128x128, real), 4 of each class."""
    root = extract_archive("flowers5-128.tar.gz", tmp_path_factory.mktemp("flowers")) / "flowers5_128"
    return {d.name: sorted(d.iterdir())[:4] for d in sorted(root.iterdir())}


def flowers_tgz(photos) -> bytes:
    """flower_photos.tgz as TensorFlow publishes it: flower_photos/<class>/*.jpg and a LICENSE file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.addfile(tarfile.TarInfo("flower_photos/LICENSE.txt"), io.BytesIO(b""))
        for name, files in zip(["daisy", "dandelion", "roses", "sunflowers", "tulips"], photos.values()):
            for file in files:
                tar.add(file, f"flower_photos/{name}/{file.name}")
    return buffer.getvalue()


def test_flowers_download_resumes_unpacks_and_loads(server, tmp_path, monkeypatch, capsys, photos):
    RangeServer.body, RangeServer.seen_ranges = flowers_tgz(photos), []
    RangeServer.cut_first_at = len(RangeServer.body) // 2
    monkeypatch.setattr(FLOWERS, "url", server + "/flower_photos.tgz")
    config = load_config(None, ["data=flowers", f"data_dir={tmp_path}", "val_fraction=0.25"])
    with pytest.raises(VislabError, match="run again to resume"):
        load_dataset(config)
    assert not (tmp_path / "flower_photos").exists()  # nothing half-unpacked in place
    splits = load_dataset(config)
    assert RangeServer.seen_ranges == [len(RangeServer.body) // 2]
    assert splits.classes == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert (len(splits.train), len(splits.val), splits.image_size) == (15, 5, 128)
    assert "holds 20 images, 3670 expected" in capsys.readouterr().err
    assert FLOWERS.present(tmp_path) and not list(tmp_path.glob(".*unpacking"))


def test_a_damaged_archive_is_named_deleted_and_fetched_again(server, tmp_path, monkeypatch, photos):
    body = bytearray(flowers_tgz(photos))
    body[len(body) // 2 : len(body) // 2 + 64] = bytes(64)  # same length, broken gzip stream
    RangeServer.body, RangeServer.cut_first_at = bytes(body), None
    monkeypatch.setattr(FLOWERS, "url", server + "/flower_photos.tgz")
    code = main(["train", "data=flowers", f"data_dir={tmp_path}", "epochs=1", *QUIET])
    assert code == 2
    assert not (tmp_path / "flower_photos.tgz").exists() and not (tmp_path / "flower_photos").exists()
    RangeServer.body = flowers_tgz(photos)
    assert len(load_dataset(load_config(None, ["data=flowers", f"data_dir={tmp_path}"])).classes) == 5


def test_hymenoptera_keeps_its_train_and_val_folders(server, tmp_path, monkeypatch, photos):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for split, count in (("train", 3), ("val", 1)):
            for name, files in zip(["ants", "bees"], list(photos.values())[:2]):
                for file in files[:count] if split == "train" else files[3:]:
                    zipped.write(file, f"hymenoptera_data/{split}/{name}/{file.name}")
    RangeServer.body, RangeServer.cut_first_at = buffer.getvalue(), None
    monkeypatch.setattr(HYMENOPTERA, "url", server + "/hymenoptera_data.zip")
    splits = load_dataset(load_config(None, ["data=hymenoptera", f"data_dir={tmp_path}"]))
    assert splits.classes == ["ants", "bees"] and (len(splits.train), len(splits.val)) == (6, 2)


def test_the_flowers_and_hymenoptera_recipes_name_their_datasets():
    for recipe in ("flowers_resnet18", "flowers_efficientnet_lite0", "hymenoptera_resnet50"):
        config = load_config(recipe_path(recipe))
        assert config.data in ("flowers", "hymenoptera")
