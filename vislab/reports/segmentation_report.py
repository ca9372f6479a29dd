"""The report of a segmentation run: curves, per-class IoU, confusion matrix and image / ground truth /
prediction overlays in the dataset's palette, as report.html (self-contained) and report.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vislab.config import build_config
from vislab.data import data_dir_of
from vislab.data.images import open_image, to_tensor
from vislab.data.segmentation import colour_mask, load_segmentation, overlay, read_mask
from vislab.reports import plots
from vislab.reports.document import Section, Table, write_html, write_markdown
from vislab.reports.report import progress, read_metrics, save
from vislab.segment import evaluate_segmentation, load_segmenter, predict_labels

SEGMENTATION_SCORES = [
    ("val_miou", "val mIoU"),
    ("val_pixel_acc", "val pixel accuracy"),
    ("val_mean_acc", "val mean class accuracy"),
]


def build_segmentation_report(run_dir: Path, split: str = "val", examples: int = 4) -> Path:
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    progress(f"evaluating the {split} split on whole images")
    result = evaluate_segmentation(run_dir, split)
    classes = result["classes"]
    rows = [
        ["model", result["model"]],
        ["data", result["data"]],
        ["split", f"{split} ({result['images']} images)"],
        ["mIoU", result["miou"]],
        ["pixel accuracy", result["pixel_acc"]],
        ["mean class accuracy", result["mean_acc"]],
    ]
    sections = [Section("summary", "Summary", tables=[Table(["", "value"], rows)])]

    history = read_metrics(run_dir)
    best = max(history, key=lambda r: r.get("val_miou", 0))["epoch"]
    sections.append(
        Section(
            "curves",
            "Training curves",
            [save(plots.training_curves(history, best, SEGMENTATION_SCORES), out / "curves.png")],
        )
    )
    ious = [result["per_class_iou"][c] for c in classes]
    sections.append(
        Section(
            "per-class",
            "IoU per class",
            [save(plots.per_class_iou(ious, classes), out / "iou.png")],
            [Table(["class", "IoU"], [[c, v] for c, v in zip(classes, ious)])],
        )
    )
    confusion = np.asarray(result["confusion_matrix"])
    sections.append(
        Section(
            "confusion",
            "Confusion matrix (pixels)",
            [save(plots.confusion_matrices(confusion, classes), out / "confusion.png")],
        )
    )
    sections.append(overlay_section(run_dir, split, examples, out))
    title = f"vislab report: {run_dir.name} ({split})"
    write_html(out / "report.html", title, sections)
    write_markdown(out / "report.md", title, sections)
    progress(f"wrote {out / 'report.html'}")
    return out / "report.html"


def overlay_section(run_dir: Path, split: str, examples: int, out: Path) -> Section:
    model, meta, _ = load_segmenter(run_dir)
    config = build_config(meta["config"])
    data = getattr(load_segmentation(config.data, data_dir_of(config), meta["ignore_index"]), split)
    images, titles = [], []
    step = max(1, len(data) // examples)  # spread over the split: neighbouring video frames look alike
    for image_path, mask_path in list(zip(data.images, data.masks))[::step][:examples]:
        image = to_tensor(open_image(image_path, 3))
        predicted = colour_mask(predict_labels(model, meta, image), meta["palette"])
        truth = colour_mask(read_mask(mask_path), meta["palette"], meta["ignore_index"])
        picture = image.permute(1, 2, 0).numpy()
        images += [picture, overlay(picture, truth), overlay(picture, predicted)]
        titles += [image_path.name, "ground truth", "prediction"]
    grid = plots.image_grid(
        images, titles, "Images, ground truth and predictions (ignored pixels white)", columns=3
    )
    return Section("overlays", "Predictions", [save(grid, out / "overlays.png")])
