"""The report's figures, each a matplotlib Figure with title, axis labels and legend."""

from __future__ import annotations

import functools
import importlib.util
import io
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib import font_manager
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

from vislab.files import replacing

MAX_CURVES = (
    10  # more one-vs-rest curves than this are unreadable: plot the macro curve and the worst classes
)
MAX_LABELLED_CLASSES = 40  # beyond this, confusion-matrix ticks are left unlabelled


# Class names come in any script (our users name class folders in Hangul). matplotlib's own font has
# Latin, Greek and Cyrillic; Noto Sans CJK, shipped by the mplfonts package (installed with vislab, so it
# works offline), has Hangul, kana and Han. Names found on the system are used where installed.
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK KR", "Noto Sans CJK JP", "NanumGothic", "Source Han Sans")
PACKAGED_CJK_FONT = "fonts/NotoSansCJKsc-Regular.otf"  # inside the mplfonts package


def packaged_cjk_font() -> Path | None:
    spec = importlib.util.find_spec("mplfonts")  # found, not imported: only its font file is wanted
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / PACKAGED_CJK_FONT).is_file():
            return (Path(folder) / PACKAGED_CJK_FONT).resolve()
    return None


@functools.cache
def cjk_fallback() -> str | None:
    """The CJK font's family name, its packaged file added to matplotlib's fonts once per process."""
    packaged = packaged_cjk_font()
    if packaged is not None:
        font_manager.fontManager.addfont(str(packaged))
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


def draw_every_script() -> str | None:
    """Before each figure: matplotlib falls back glyph by glyph from its font to a CJK font, appended to
    `font.family` (it changes nothing that the first font can draw; checked each time, as a style or an
    rc_context may have reset it). Returns the fallback's name."""
    fallback = cjk_fallback()
    families = list(matplotlib.rcParams["font.family"])
    if fallback is not None and fallback not in families:
        matplotlib.rcParams["font.family"] = [*families, fallback]
    return fallback


def figure_with_axes(rows: int = 1, columns: int = 1, figsize=None, **options):
    """A Figure and its axes, as pyplot.subplots gives them but without pyplot: no backend is chosen or
    needed (reports are files; a notebook keeps the backend it has) and no figure is kept alive."""
    draw_every_script()
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, columns, **options)


def informative(values: list) -> bool:
    """A score series worth a line: every epoch has it, and it is not 1.0 throughout (top-5 with five
    classes or fewer, or an easy dataset: a flat line at the top that squeezes the others)."""
    return all(v is not None for v in values) and not all(v >= 0.99995 for v in values)


def epoch_axis(axis, last: float) -> None:
    """Whole epochs on x, from the start: one point gets 0..1.5, not matplotlib's 0.96..1.04."""
    axis.set_xlim(0, max(last, 1) + 0.5)
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


CLASSIFICATION_SCORES = [("train_acc", "train top-1"), ("val_top1", "val top-1"), ("val_top5", "val top-5")]


def training_curves(
    rows: list[dict], best_epoch: int, scores: list[tuple[str, str]] = CLASSIFICATION_SCORES
) -> Figure:
    """Loss, the task's scores (`(column, label)` pairs) and the learning rate per epoch."""
    epochs = [r["epoch"] for r in rows]
    fig, (loss, acc, lr) = figure_with_axes(1, 3, figsize=(15, 4.2))
    for axis, keys, title, label in (
        (loss, [("train_loss", "train"), ("val_loss", "val")], "Loss", "loss"),
        (acc, scores, "Scores", "score"),
        (lr, [("lr", "learning rate")], "Learning rate", "learning rate"),
    ):
        for key, name in keys:
            values = [r.get(key) for r in rows]
            if all(v is not None for v in values) and (axis is not acc or informative(values)):
                axis.plot(epochs, values, marker="o", markersize=3, label=name)
        axis.axvline(
            best_epoch, color="gray", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})"
        )
        axis.set(title=title, xlabel="epoch", ylabel=label)
        epoch_axis(axis, max(epochs))
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    return fig


def live_curves(points: list[dict], rows: list[dict]) -> Figure:
    """A run while it trains: training loss and learning rate within epochs (`points` of progress.json),
    validation loss and scores at each epoch's end (metrics.csv `rows`, whose epochs count from 1); x
    counts epochs done (1.0 is the end of the first, where the row of epoch 1 is drawn)."""
    fig, (loss, scores, lr) = figure_with_axes(1, 3, figsize=(15, 3.6))
    ends = [r["epoch"] for r in rows]
    loss.plot([p["epoch"] for p in points], [p["train_loss"] for p in points], label="train")
    lr.plot([p["epoch"] for p in points], [p["lr"] for p in points], label="learning rate")
    if rows and "val_loss" in rows[0]:
        loss.plot(ends, [r["val_loss"] for r in rows], marker="o", markersize=3, label="val")
    for key in [
        k for k in (rows[0] if rows else {}) if k.startswith("val_") and k != "val_loss" or k == "train_acc"
    ]:
        if informative([r.get(key) for r in rows]):
            scores.plot(ends, [r.get(key) for r in rows], marker="o", markersize=3, label=key)
    last = max([*ends, *(p["epoch"] for p in points)], default=1)
    for axis, title in ((loss, "Loss"), (scores, "Scores"), (lr, "Learning rate")):
        axis.set(title=title, xlabel="epoch")
        epoch_axis(axis, last)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend()
    fig.tight_layout()
    return fig


def confusion_matrices(confusion: np.ndarray, classes: list[str]) -> Figure:
    """Raw counts and row-normalised (recall per true class) side by side."""
    n = len(classes)
    size = min(7 + n * 0.12, 24)
    fig, axes = figure_with_axes(1, 2, figsize=(2 * size, size * 0.85))
    normalised = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    for axis, matrix, title, fmt in (
        (axes[0], confusion, "Confusion matrix (counts)", "d"),
        (axes[1], normalised, "Confusion matrix (row-normalised)", ".2f"),
    ):
        image = axis.imshow(matrix, cmap="Blues")
        fig.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
        axis.set(title=title, xlabel="predicted class", ylabel="true class")
        if n <= MAX_LABELLED_CLASSES:
            axis.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=max(5, 10 - n // 8))
            axis.set_yticks(range(n), classes, fontsize=max(5, 10 - n // 8))
        if n <= 15:
            threshold = matrix.max() / 2
            for i in range(n):
                for j in range(n):
                    color = "white" if matrix[i, j] > threshold else "black"
                    axis.text(
                        j, i, format(matrix[i, j], fmt), ha="center", va="center", color=color, fontsize=8
                    )
    fig.tight_layout()
    return fig


def per_class_bars(table: dict[str, np.ndarray], classes: list[str], most: int = 30) -> Figure:
    """Accuracy, precision, recall and F1 per class, sorted by F1; with many classes the best and worst."""
    order = np.argsort(table["f1"])
    if len(order) > most:
        order = np.concatenate([order[: most // 2], order[-most // 2 :]])
    fig, axis = figure_with_axes(figsize=(9, 1.5 + 0.35 * len(order)))
    height = 0.2
    for offset, key in enumerate(("accuracy", "precision", "recall", "f1")):
        axis.barh(np.arange(len(order)) + (offset - 1.5) * height, table[key][order], height, label=key)
    axis.set_yticks(range(len(order)), [classes[i] for i in order])
    suffix = f" (worst and best {most // 2})" if len(classes) > most else ""
    axis.set(title=f"Per-class metrics, sorted by F1{suffix}", xlabel="score", ylabel="class", xlim=(0, 1.05))
    axis.legend(loc="lower right")
    axis.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def curve_classes(scores: list[float]) -> list[int]:
    """Which classes get their own curve: all of them, or the worst ones when there are many."""
    return list(range(len(scores))) if len(scores) <= MAX_CURVES else list(np.argsort(scores)[:5])


def roc_curves(
    probs: np.ndarray, labels: np.ndarray, classes: list[str]
) -> tuple[Figure, list[float], float]:
    """One-vs-rest ROC curves. Returns the figure, AUC per class and the macro AUC."""
    grid = np.linspace(0, 1, 201)
    curves, aucs = [], []
    for c in range(len(classes)):
        fpr, tpr, _ = roc_curve(labels == c, probs[:, c]) if (labels == c).any() else ([0, 1], [0, 1], None)
        curves.append(np.interp(grid, fpr, tpr))
        aucs.append(float(auc(fpr, tpr)))
    macro = float(np.mean(aucs))
    fig, axis = figure_with_axes(figsize=(7, 6))
    for c in curve_classes(aucs):
        axis.plot(grid, curves[c], linewidth=1.2, label=f"{classes[c]} (AUC {aucs[c]:.3f})")
    axis.plot(
        grid, np.mean(curves, 0), color="black", linewidth=2.5, label=f"macro average (AUC {macro:.3f})"
    )
    axis.plot([0, 1], [0, 1], color="gray", linestyle=":", label="chance")
    title = "ROC, one-vs-rest" + (" (5 lowest-AUC classes)" if len(classes) > MAX_CURVES else "")
    axis.set(title=title, xlabel="false positive rate", ylabel="true positive rate")
    axis.legend(fontsize=8, loc="lower right")
    axis.grid(alpha=0.3)
    fig.tight_layout()
    return fig, aucs, macro


def pr_curves(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> tuple[Figure, list[float], float]:
    """One-vs-rest precision-recall curves. Returns the figure, AP per class and the macro AP."""
    grid = np.linspace(0, 1, 201)
    curves, aps = [], []
    for c in range(len(classes)):
        positives = labels == c
        precision, recall, _ = precision_recall_curve(positives, probs[:, c])
        curves.append(np.interp(grid, recall[::-1], precision[::-1]))
        aps.append(float(average_precision_score(positives, probs[:, c])) if positives.any() else 0.0)
    macro = float(np.mean(aps))
    fig, axis = figure_with_axes(figsize=(7, 6))
    for c in curve_classes(aps):
        axis.plot(grid, curves[c], linewidth=1.2, label=f"{classes[c]} (AP {aps[c]:.3f})")
    axis.plot(grid, np.mean(curves, 0), color="black", linewidth=2.5, label=f"macro average (AP {macro:.3f})")
    title = "Precision-recall, one-vs-rest" + (" (5 lowest-AP classes)" if len(classes) > MAX_CURVES else "")
    axis.set(title=title, xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.05))
    axis.legend(fontsize=8, loc="lower left")
    axis.grid(alpha=0.3)
    fig.tight_layout()
    return fig, aps, macro


def reliability_diagram(confidence: np.ndarray, correct: np.ndarray, ece: float, bins: int = 15) -> Figure:
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    accuracy = np.bincount(which, weights=correct, minlength=bins) / np.maximum(counts, 1)
    centres = (edges[:-1] + edges[1:]) / 2
    fig, (top, bottom) = figure_with_axes(2, 1, figsize=(6.5, 7), height_ratios=[3, 1], sharex=True)
    top.bar(
        centres[counts > 0], accuracy[counts > 0], width=1 / bins, edgecolor="black", label="accuracy in bin"
    )
    top.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
    top.set(title=f"Reliability diagram (ECE {ece:.4f})", ylabel="accuracy", ylim=(0, 1))
    top.legend(loc="upper left")
    bottom.bar(centres, counts, width=1 / bins, color="tab:orange", edgecolor="black", label="images")
    bottom.set(xlabel="confidence (top-1 probability)", ylabel="images")
    bottom.legend(loc="upper left")
    fig.tight_layout()
    return fig


def tsne_scatter(points: np.ndarray, labels: np.ndarray, classes: list[str]) -> Figure:
    fig, axis = figure_with_axes(figsize=(8.5, 7))
    colours = matplotlib.colormaps[
        "tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "turbo"
    ]
    for c, name in enumerate(classes):
        chosen = labels == c
        colour = colours(c if len(classes) <= 20 else c / max(len(classes) - 1, 1))
        axis.scatter(
            points[chosen, 0],
            points[chosen, 1],
            s=8,
            color=colour,
            label=name if len(classes) <= 20 else None,
        )
    axis.set(title="t-SNE of penultimate-layer features (validation)", xlabel="t-SNE 1", ylabel="t-SNE 2")
    if len(classes) <= 20:
        axis.legend(markerscale=2, fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5), title="class")
    fig.tight_layout()
    return fig


def image_grid(images: list[np.ndarray], titles: list[str], title: str, columns: int = 6) -> Figure:
    """A grid of HxWx3 uint8 (or float 0..1) images with a caption under each."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = figure_with_axes(rows, columns, figsize=(2.3 * columns, 2.6 * rows + 0.6), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, caption in zip(axes.flat, images, titles):
        axis.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        axis.set_title(caption, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def activation_maps(maps: list[tuple[str, np.ndarray]], channels: int = 8) -> Figure:
    """The first `channels` feature maps of each of the first layers, for one image."""
    fig, axes = figure_with_axes(
        len(maps), channels, figsize=(1.6 * channels, 1.8 * len(maps) + 0.6), squeeze=False
    )
    for row, (name, activation) in enumerate(maps):
        for col in range(channels):
            axis = axes[row, col]
            axis.axis("off")
            if col < len(activation):
                axis.imshow(activation[col], cmap="viridis", interpolation="nearest")
            if col == 0:
                axis.set_title(name, fontsize=8, loc="left")
    fig.suptitle("Activation maps of the first layers (first channels)")
    fig.tight_layout()
    return fig


def per_class_iou(ious: list[float], classes: list[str]) -> Figure:
    order = np.argsort(ious)
    fig, axis = figure_with_axes(figsize=(8, 1.5 + 0.35 * len(classes)))
    axis.barh(range(len(order)), np.asarray(ious)[order], color="tab:blue")
    axis.set_yticks(range(len(order)), [classes[i] for i in order])
    axis.set(
        title=f"IoU per class (mean {np.mean(ious):.3f})",
        xlabel="intersection over union",
        ylabel="class",
        xlim=(0, 1),
    )
    axis.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def class_legend(classes: list[str], palette: list, ignored: bool = False) -> np.ndarray:
    """The mask colours with their class names, as an RGB picture: the legend shown beside masks in the
    web UI (white: pixels left out, where `ignored`)."""
    from matplotlib.patches import Patch

    entries = [*zip(classes, palette), *([("left out (void)", (255, 255, 255))] if ignored else [])]
    columns = min(2, len(entries))  # near square: readable as a gallery thumbnail
    fig, axis = figure_with_axes(figsize=(2.6 * columns, 0.32 * -(-len(entries) // columns) + 0.2))
    axis.axis("off")
    handles = [Patch(facecolor=np.asarray(c) / 255, edgecolor="gray", label=n) for n, c in entries]
    axis.legend(handles=handles, loc="center", ncol=columns, frameon=False, handlelength=1.4)
    drawn = io.BytesIO()
    fig.savefig(drawn, format="png", dpi=100, bbox_inches="tight", pad_inches=0.08)  # long names whole
    return np.asarray(Image.open(drawn).convert("RGB"))


def save(fig: Figure, path: Path) -> Path:
    with replacing(path) as written:
        fig.savefig(written, dpi=110)
    return path
