"""`vislab check DATA`: what is wrong with a classification dataset before training on it. Unreadable,
truncated, zero-byte and wrongly named files; sizes, modes and tiny images; exact and near duplicates,
leaks across splits first; class counts and imbalance; label issues (cleanlab on out-of-fold
probabilities). Writes check.json and check.html (with thumbnails), and a plan of fixes."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import ImageOps

from vislab.check.duplicates import find_duplicates
from vislab.check.inventory import TINY, Item, collect, fingerprint_all
from vislab.check.labels import label_issues
from vislab.config import Config
from vislab.data.images import opened
from vislab.files import write_json
from vislab.reports import plots
from vislab.reports.document import Section, Table, progress, write_html
from vislab.reports.plots import save

MIN_PER_CLASS = 10  # fewer images than this in a class of a split is called out
SHOWN = 24  # thumbnails per gallery


def check_dataset(config: Config, out: Path, with_labels: bool = True) -> dict:
    """Audits the configured dataset, writes out/check.json and out/check.html, returns the findings."""
    started = time.perf_counter()
    classes, items, unopenable = collect(config)
    progress(f"decoding and fingerprinting {len(items)} images")
    items = fingerprint_all(items)
    bad = [{"file": str(p), "problem": why} for p, why in unopenable]
    bad += [{"file": item.name, "problem": item.problem} for item in items if item.problem]
    progress("looking for duplicates")
    duplicates = find_duplicates(items)
    suspects = []
    segmentation = all(item.label < 0 for item in items)
    if with_labels and not segmentation:  # a mask has no one label to doubt
        progress(f"label issues: out-of-fold probabilities from frozen {len(items)}-image features")
        suspects = label_issues(items, len(classes))
    findings = {
        "data": config.data,
        "images": len(items),
        "classes": classes,
        "unreadable": bad,
        "sizes": size_summary(items),
        "counts": class_counts(items, classes),
        "leaks": [pair_record(items, d) for d in duplicates if d.leak],
        "duplicates": [pair_record(items, d) for d in duplicates if not d.leak],
        "label_issues": [
            {
                "file": items[s["item"]].name,
                "split": items[s["item"]].split,
                "given": classes[s["given"]],
                "suggested": classes[s["suggested"]],
                "given_probability": s["given_probability"],
                "suggested_probability": s["suggested_probability"],
            }
            for s in suspects
        ],
        "seconds": 0.0,
    }
    findings["seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "check.json", findings)
    write_page(out, findings, items, duplicates, suspects)
    return findings


def pair_record(items: list[Item], duplicate) -> dict:
    first, second = items[duplicate.first], items[duplicate.second]
    return {
        "kind": duplicate.kind,
        "first": first.name,
        "first_split": first.split,
        "second": second.name,
        "second_split": second.split,
    }


def size_summary(items: list[Item]) -> dict:
    sizes = Counter(f"{item.size[0]}x{item.size[1]}" for item in items if item.size)
    modes = Counter(item.mode for item in items if item.mode)
    tiny = [item.name for item in items if item.size and min(item.size) < TINY]
    return {
        "sizes": dict(sizes.most_common(10)),
        "distinct_sizes": len(sizes),
        "modes": dict(modes),
        "tiny": tiny,
    }


def class_counts(items: list[Item], classes: list[str]) -> dict:
    splits = sorted({item.split for item in items}, key=["train", "val", "test"].index)
    if all(item.label < 0 for item in items):  # segmentation: images per split
        per_split = {s: sum(item.split == s for item in items) for s in splits}
        return {"images_per_split": per_split, "imbalance_ratio": None, "too_few": [], "per_split": {}}
    counts = {
        s: np.bincount([i.label for i in items if i.split == s], minlength=len(classes)) for s in splits
    }
    train = counts["train"]
    return {
        "per_split": {s: dict(zip(classes, map(int, c))) for s, c in counts.items()},
        "imbalance_ratio": round(float(train.max() / max(train.min(), 1)), 2),
        "too_few": [
            f"{classes[c]} ({s}: {int(n)})"
            for s, v in counts.items()
            for c, n in enumerate(v)
            if n < MIN_PER_CLASS
        ],
    }


def summary_lines(findings: dict) -> list[str]:
    counts = findings["counts"]
    return [
        f"{findings['images']} images, {len(findings['classes'])} classes, checked in "
        f"{findings['seconds']} s",
        f"leaks across splits: {len(findings['leaks'])} image pairs",
        f"duplicates within a split: {len(findings['duplicates'])} pairs",
        f"unreadable or wrongly named files: {len(findings['unreadable'])}",
        f"tiny images (a side under {TINY} px; only exact copies searched): {len(findings['sizes']['tiny'])}",
        f"imbalance (largest/smallest train class): {counts['imbalance_ratio']}"
        + (f"; too few images: {', '.join(counts['too_few'][:5])}" if counts["too_few"] else ""),
        f"label issues: {len(findings['label_issues'])} suspects",
    ]


def thumbnail(item: Item) -> np.ndarray:
    if item.path is None:
        return item.image.squeeze(2) if item.image.shape[2] == 1 else item.image
    with opened(item.path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def write_page(out: Path, findings: dict, items: list[Item], duplicates, suspects) -> None:
    classes = findings["classes"]
    sections = [Section("summary", "Summary", note=" · ".join(summary_lines(findings)))]
    leaks = [d for d in duplicates if d.leak][: SHOWN // 2]
    if leaks:
        pictures = [thumbnail(items[i]) for d in leaks for i in (d.first, d.second)]
        titles = [
            f"{items[i].split}: {Path(items[i].name).name}\n{d.kind}"
            for d in leaks
            for i in (d.first, d.second)
        ]
        grid = plots.image_grid(pictures, titles, "Leaks: the same image in two splits", columns=6)
        sections.append(
            Section(
                "leaks",
                "Leaks across splits",
                [save(grid, out / "leaks.png")],
                [
                    Table(
                        ["kind", "file", "split", "copy", "split"],
                        [
                            [r["kind"], r["first"], r["first_split"], r["second"], r["second_split"]]
                            for r in findings["leaks"]
                        ],
                    )
                ],
            )
        )
    if findings["duplicates"]:
        sections.append(
            Section(
                "duplicates",
                "Duplicates within a split",
                tables=[
                    Table(
                        ["kind", "file", "copy"],
                        [[r["kind"], r["first"], r["second"]] for r in findings["duplicates"]],
                    )
                ],
            )
        )
    if findings["unreadable"]:
        sections.append(
            Section(
                "unreadable",
                "Unreadable or wrongly named files",
                tables=[
                    Table(["file", "problem"], [[r["file"], r["problem"]] for r in findings["unreadable"]])
                ],
            )
        )
    per_split = findings["counts"]["per_split"]
    if per_split:  # classification
        sections.append(
            Section(
                "counts",
                "Images per class",
                tables=[
                    Table(
                        ["class", *per_split], [[c, *(per_split[s][c] for s in per_split)] for c in classes]
                    )
                ],
                note=f"Imbalance ratio (train) {findings['counts']['imbalance_ratio']}.",
            )
        )
    if suspects:
        shown = suspects[:SHOWN]
        grid = plots.image_grid(
            [thumbnail(items[s["item"]]) for s in shown],
            [f"given {classes[s['given']]}\nlooks like {classes[s['suggested']]}" for s in shown],
            "Label issues, most suspicious first",
        )
        sections.append(
            Section(
                "labels",
                "Label issues",
                [save(grid, out / "label_issues.png")],
                [
                    Table(
                        ["file", "given", "suggested", "p(given)"],
                        [
                            [r["file"], r["given"], r["suggested"], r["given_probability"]]
                            for r in findings["label_issues"][:200]
                        ],
                    )
                ],
                "Ranked by cleanlab (self-confidence of out-of-fold probabilities).",
            )
        )
    write_html(out / "check.html", f"vislab check: {findings['data']}", sections)
