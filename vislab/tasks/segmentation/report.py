"""The report of a segmentation run: curves, per-class IoU, confusion matrix and image / ground truth /
prediction overlays in the dataset's palette, as report.html (self-contained) and report.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vislab.checkpoint import Checkpoint, ModelMeta
from vislab.data.images import open_image, to_tensor
from vislab.data.segmentation import SegSplit, colour_mask, overlay, read_mask
from vislab.errors import VislabError
from vislab.reports import plots
from vislab.reports.document import ReportOptions, Section, Table, progress, write_html, write_markdown
from vislab.reports.plots import save
from vislab.runs import read_metrics, write_eval
from vislab.tasks.segmentation.predict import load_eval_split, predict_labels, score_split

SEGMENTATION_SCORES = [
    ("val_miou", "val mIoU"),
    ("val_pixel_acc", "val pixel accuracy"),
    ("val_mean_acc", "val mean class accuracy"),
]


def build_report(checkpoint: Checkpoint, options: ReportOptions, out: Path, examples: int = 4) -> Path:
    """Writes the report of a finished segmentation run into the folder `out` and returns the path of
    report.html."""
    run_dir, split = checkpoint.run_dir, options.split
    if not (run_dir / "metrics.csv").is_file():
        raise VislabError(f"{run_dir} is not a finished vislab run (no metrics.csv)")
    progress(f"evaluating the {split} split on whole images")
    config, data = load_eval_split(checkpoint, split)
    model = checkpoint.model()
    (result,) = score_split(checkpoint, [model], config.data, data, split)
    write_eval(run_dir, split, result)
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
    sections.append(overlay_section(model, checkpoint.meta, data, examples, out))
    title = f"vislab report: {run_dir.name} ({split})"
    write_html(out / "report.html", title, sections)
    write_markdown(out / "report.md", title, sections)
    return out / "report.html"


def overlay_section(model, meta: ModelMeta, data: SegSplit, examples: int, out: Path) -> Section:
    images, titles = [], []
    step = max(1, len(data) // examples)  # spread over the split: neighbouring video frames look alike
    for image_path, mask_path in list(zip(data.image_files, data.mask_files))[::step][:examples]:
        image = to_tensor(open_image(image_path, 3))
        predicted = colour_mask(predict_labels(model, meta, image), meta.palette)
        truth = colour_mask(read_mask(mask_path), meta.palette, meta.ignore_index)
        picture = image.permute(1, 2, 0).numpy()
        images += [picture, overlay(picture, truth), overlay(picture, predicted)]
        titles += [image_path.name, "ground truth", "prediction"]
    grid = plots.image_grid(
        images, titles, "Images, ground truth and predictions (ignored pixels white)", columns=3
    )
    return Section("overlays", "Predictions", [save(grid, out / "overlays.png")])
