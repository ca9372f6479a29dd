import hashlib
import io
import zipfile

import pytest

from vislab.cli import main
from vislab.data import load_dataset, tiny_imagenet
from vislab.data.download import download
from vislab.errors import VislabError
from vislab.tasks import load_config

from conftest import QUIET, RangeServer, extract_archive


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """The real Tiny-ImageNet subset (100 train images per class, the full val set) as a data_dir."""
    return extract_archive("tiny-imagenet-200-subset.tar.gz", tmp_path_factory.mktemp("tiny"))


def test_val_labels_come_from_val_annotations(tiny_dir):
    splits = load_dataset(load_config(None, ["data=tiny_imagenet", f"data_dir={tiny_dir}"]))
    root = tiny_dir / "tiny-imagenet-200"
    wnids = (root / "wnids.txt").read_text().split()
    assert (len(splits.train), len(splits.val), len(splits.classes)) == (20000, 10000, 200)
    expected = {}
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines()[:50]:
        name, wnid = line.split("\t")[:2]
        expected[name] = wnids.index(wnid)
    found = {
        f.name: int(label) for f, label in zip(splits.val.files, splits.val.labels) if f.name in expected
    }
    assert found == expected
    assert splits.val.images.shape[1:] == (3, 64, 64)  # grayscale val images became RGB
    assert "goldfish" in splits.classes and all("\t" not in c for c in splits.classes)  # names from words.txt


def test_a_short_tiny_imagenet_run_reports_top1_and_top5(tiny_dir, tmp_path):
    args = [
        "train",
        "data=tiny_imagenet",
        f"data_dir={tiny_dir}",
        "model=resnet8",
        "epochs=1",
        "batch_size=128",
        "trainer.limit_train_batches=10",
        "trainer.limit_val_batches=10",
        "trainer.accumulate_grad_batches=2",
        "label_smoothing=0.1",
        "name=tiny",
        f"runs_dir={tmp_path}",
        *QUIET,
    ]
    assert main(args) == 0
    import json

    summary = json.loads((tmp_path / "tiny" / "summary.json").read_text())
    # Ten steps are too few to learn 200 classes; the run must still measure and report both accuracies.
    assert 0 <= summary["final_val_top1"] <= summary["final_val_top5"] <= 1 and summary["final_val_top5"] > 0
    rows = (tmp_path / "tiny" / "metrics.csv").read_text().splitlines()
    assert "val_top1" in rows[0] and "val_top5" in rows[0] and len(rows) == 2


def test_an_interrupted_download_resumes_and_is_checked(server, tmp_path):
    server += "/file.bin"
    RangeServer.body = bytes(range(256)) * 4096  # 1 MiB
    RangeServer.cut_first_at, RangeServer.seen_ranges = 300_000, []
    target = tmp_path / "file.bin"
    md5 = hashlib.md5(RangeServer.body).hexdigest()
    with pytest.raises(VislabError, match="run again to resume"):
        download(server, target, md5)
    assert (tmp_path / "file.bin.part").stat().st_size == 300_000
    download(server, target, md5)
    assert RangeServer.seen_ranges == [300_000] and target.read_bytes() == RangeServer.body
    with pytest.raises(VislabError, match="wrong MD5"):
        download(server, tmp_path / "other.bin", "0" * 32)
    assert not (tmp_path / "other.bin.part").exists()


def test_tiny_imagenet_downloads_and_extracts_itself(server, tmp_path, tiny_dir, monkeypatch):
    """A miniature archive in the official layout, served locally in place of the Stanford URL."""
    root = tiny_dir / "tiny-imagenet-200"
    wnids = (root / "wnids.txt").read_text().split()[:2]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("tiny-imagenet-200/wnids.txt", "\n".join(wnids) + "\n")
        for wnid in wnids:
            for image in sorted((root / "train" / wnid / "images").iterdir())[:10]:
                zipped.write(image, f"tiny-imagenet-200/train/{wnid}/images/{image.name}")
        lines = [
            line
            for line in (root / "val" / "val_annotations.txt").read_text().splitlines()
            if line.split("\t")[1] in wnids
        ]
        zipped.writestr("tiny-imagenet-200/val/val_annotations.txt", "\n".join(lines[:10]) + "\n")
        for line in lines[:10]:
            zipped.write(
                root / "val" / "images" / line.split("\t")[0],
                f"tiny-imagenet-200/val/images/{line.split()[0]}",
            )
    RangeServer.body, RangeServer.cut_first_at = buffer.getvalue(), None
    monkeypatch.setattr(tiny_imagenet, "URL", server + "/tiny-imagenet-200.zip")
    monkeypatch.setattr(tiny_imagenet, "MD5", hashlib.md5(RangeServer.body).hexdigest())
    splits = load_dataset(load_config(None, ["data=tiny_imagenet", f"data_dir={tmp_path}"]))
    assert (len(splits.train), len(splits.val), len(splits.classes)) == (20, 10, 2)
