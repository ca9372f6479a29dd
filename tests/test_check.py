"""`vislab check` on real CIFAR-10 JPEGs with planted faults: 2,000 train and 500 val images, 50 val images
copied into train (re-encoded at another JPEG quality, 15 of them also resized or mirrored), 40 train
labels moved to a wrong class, 5 corrupt files. It must name every corrupt file, find at least 95% of
the leaks with at most 1% of clean images flagged, and rank at least 60% of the moved labels among its
top 100 suspects. Then --fix plans without touching anything, and --apply carries the plan out."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from conftest import copy_classes, small_copy

pytestmark = pytest.mark.slow


def plant_faults(source: Path, root: Path, seed: int = 0) -> dict:
    """A train/val ImageFolder from `source` (train/ and test/ class folders) with faults planted."""
    rng = random.Random(seed)
    shutil.copytree(source / "train", root / "train")
    shutil.copytree(source / "test", root / "val")
    classes = sorted(p.name for p in (root / "train").iterdir())
    leaks = []
    for n, original in enumerate(rng.sample(sorted((root / "val").rglob("*.jpg")), 50)):
        image = Image.open(original).convert("RGB")
        if n < 8:
            image = image.resize((40, 40), Image.BICUBIC)
        elif n < 15:
            image = ImageOps.mirror(image)
        copy = root / "train" / original.parent.name / f"copy_{original.stem}.jpg"
        image.save(copy, quality=rng.choice([60, 70, 80]))
        leaks.append({str(original), str(copy)})
    originals = sorted(p for p in (root / "train").rglob("*.jpg") if not p.name.startswith("copy_"))
    moved = []
    for path in rng.sample(originals, 40):
        wrong = rng.choice([c for c in classes if c != path.parent.name])
        moved.append(shutil.move(path, root / "train" / wrong / path.name))
    intact = [p for p in originals if p.exists() and p not in moved]
    corrupt = rng.sample(intact, 5)
    for kind, path in zip(("empty", "truncated", "text", "noise", "header"), corrupt):
        data = path.read_bytes()
        damaged = {
            "empty": b"",
            "truncated": data[: len(data) // 3],
            "text": b"not a jpeg\n",
            "noise": rng.randbytes(800),
            "header": data[:200],
        }[kind]
        path.write_bytes(damaged)
    return {"leaks": leaks, "moved": {str(p) for p in moved}, "corrupt": {str(p) for p in corrupt}}


def test_check_finds_planted_faults_in_real_images(cifar_jpgs, tmp_path, cli):
    truth = plant_faults(cifar_jpgs, tmp_path / "data")
    out = tmp_path / "check"
    result = cli("check", f"folder:{tmp_path / 'data'}", "--out", out)
    assert result.code == 0, result.err
    found = json.loads((out / "check.json").read_text())
    assert found["images"] >= 2000 + 500
    assert truth["corrupt"] <= {r["file"] for r in found["unreadable"]}

    pairs = [{r["first"], r["second"]} for r in found["leaks"]]
    recall = sum(leak in pairs for leak in truth["leaks"]) / len(truth["leaks"])
    planted = set().union(*truth["leaks"])
    flagged = {f for r in found["leaks"] + found["duplicates"] for f in (r["first"], r["second"])}
    false_rate = len(flagged - planted) / found["images"]
    top = {r["file"] for r in found["label_issues"][:100]}
    ranked = len(truth["moved"] & top) / len(truth["moved"])
    print(f"leak recall {recall:.3f}, clean flagged {false_rate:.4f}, moved labels in top 100 {ranked:.3f}")
    assert recall >= 0.95 and false_rate <= 0.01 and ranked >= 0.6
    assert found["label_issues"][0]["suggested"] != found["label_issues"][0]["given"]
    assert "Leaks across splits" in (out / "check.html").read_text()

    # --fix plans, and touches nothing.
    before = sorted((tmp_path / "data").rglob("*"))
    result = cli("check", f"folder:{tmp_path / 'data'}", "--out", out, "--no-labels", "--fix")
    assert result.code == 0 and "add --apply" in result.out
    assert sorted((tmp_path / "data").rglob("*")) == before
    plan = (out / "fixes.csv").read_text()
    assert all(path in plan for path in truth["corrupt"])


def test_apply_moves_leaks_and_bad_files_out_and_a_second_check_is_clean(tmp_path, cifar_jpgs, cli):
    data = tmp_path / "data"
    copy_classes(cifar_jpgs / "train", data / "train", 12, 3)
    copy_classes(cifar_jpgs / "test", data / "val", 6, 3)
    val_image = next((data / "val").rglob("*.jpg"))
    leak = data / "train" / val_image.parent.name / "leak.jpg"
    Image.open(val_image).save(leak, quality=70)
    broken = sorted(p for p in (data / "train").rglob("*.jpg") if p != leak)[0]
    broken.write_bytes(b"")
    out = tmp_path / "check"
    result = cli("check", f"folder:{data}", "--out", out, "--no-labels", "--apply")
    assert result.code == 0, result.err
    assert not leak.exists() and not broken.exists() and val_image.exists()
    assert (out / "removed" / leak.relative_to(leak.anchor)).is_file()
    again = cli("check", f"folder:{data}", "--out", tmp_path / "again", "--no-labels")
    assert "leaks across splits: 0" in again.out and "unreadable or wrongly named files: 0" in again.out


def test_check_refuses_what_it_cannot_audit(cli, tmp_path):
    result = cli("check", f"folder:{tmp_path / 'missing'}", "--no-labels")
    assert result.code == 2 and "dataset folder not found" in result.err


def test_tensor_datasets_are_audited_without_files(cli, tmp_path):
    result = cli("check", "digits", "--no-labels", "--out", tmp_path, "--fix")
    assert result.code == 0, result.err
    # 8x8 digits are too small for perceptual hashes: only exact copies are searched, and none are found.
    assert "tiny images (a side under 16 px; only exact copies searched): 1797" in result.out
    assert "leaks across splits: 0" in result.out and "0 fixes written" in result.out


def test_segmentation_folders_are_audited_for_bad_pairs_and_leaks(cli, tmp_path, camvid):
    data = small_copy(camvid, tmp_path / "seg", 6, 3)
    val_image = sorted((data / "val" / "images").iterdir())[0]
    shutil.copy(val_image, data / "train" / "images" / f"leak{val_image.suffix}")
    shutil.copy(data / "val" / "masks" / f"{val_image.stem}.png", data / "train" / "masks" / "leak.png")
    broken = sorted((data / "train" / "masks").iterdir())[0]
    broken.write_bytes(b"not a png")
    result = cli("check", f"segfolder:{data}", "segmentation.ignore_index=11", "--out", tmp_path / "out")
    assert result.code == 0, result.err
    found = json.loads((tmp_path / "out" / "check.json").read_text())
    assert [r["file"] for r in found["unreadable"]] == [str(broken)]
    leak = str(data / "train" / "images" / f"leak{val_image.suffix}")
    # The planted copy; CamVid's consecutive video frames may add near-identical pairs of their own.
    assert {leak, str(val_image)} in [{r["first"], r["second"]} for r in found["leaks"]]
    assert found["label_issues"] == []
    assert found["counts"]["images_per_split"] == {"train": 7, "val": 3}
