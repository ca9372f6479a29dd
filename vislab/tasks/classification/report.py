"""`vislab report RUN`: what a classifier learned, in runs/<name>/report/ (report.html, report.md, PNGs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from sklearn.manifold import TSNE
from sklearn.metrics import precision_recall_fscore_support
from torch import nn
from torchmetrics.classification import MulticlassCalibrationError

from vislab.checkpoint import Checkpoint
from vislab.errors import VislabError
from vislab.reports import plots
from vislab.reports.cam import grad_cam, overlay
from vislab.reports.document import ReportOptions, Section, Table, progress, write_html, write_markdown
from vislab.reports.plots import save
from vislab.runs import read_metrics
from vislab.tasks.classification.evaluate import EvalData, collect_outputs, load_eval_data


def split_images(data: EvalData, indices: list[int]) -> list[np.ndarray]:
    """Images of the split as HxWxC uint8 arrays, at the model's input size."""
    return list(data.images(indices).permute(0, 2, 3, 1).numpy())


def model_input(data: EvalData, images: list[np.ndarray]) -> torch.Tensor:
    return data.model_input(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2))


def build_report(checkpoint: Checkpoint, options: ReportOptions, out: Path) -> Path:
    """Writes the report of a finished run (the run of `checkpoint`) into the folder `out` and returns the
    path of report.html."""
    run_dir = checkpoint.run_dir
    if not (run_dir / "metrics.csv").is_file():
        raise VislabError(f"{run_dir} is not a finished vislab run (no metrics.csv)")
    data = load_eval_data(checkpoint, options.split)
    model = data.checkpoint.model()
    classes = data.meta.classes
    progress(f"scoring {len(data.split)} {options.split} images")
    outputs = collect_outputs(model, data, with_features=options.tsne)
    probs = outputs.logits.softmax(1).numpy()
    labels = outputs.labels.numpy()
    predicted = probs.argmax(1)

    sections = [summary_section(run_dir, data, labels, predicted)]
    sections.append(curves_section(run_dir, out))
    sections += metric_sections(probs, labels, predicted, classes, out)
    if options.tsne:
        sections.append(tsne_section(outputs.features.numpy(), labels, classes, options.tsne_points, out))
    if options.cam:
        sections.append(cam_section(model, data, labels, predicted, probs, options.gallery, out))
    sections.append(activation_section(model, data, out))
    sections.append(gallery_section(data, labels, predicted, probs, options.gallery, out))
    sections.append(confusion_cells_section(data, labels, predicted, probs, out))
    sections.append(highest_loss_section(data, labels, predicted, probs, options.gallery, out))

    title = f"vislab report: {run_dir.name} ({options.split})"
    write_html(out / "report.html", title, sections)
    write_markdown(out / "report.md", title, sections)
    return out / "report.html"


def summary_section(run_dir: Path, data: EvalData, labels: np.ndarray, predicted: np.ndarray) -> Section:
    summary = (
        json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    )
    rows = [
        ["model", data.meta.model],
        ["data", data.config.data],
        ["split", f"{data.split_name} ({len(labels)} images)"],
        [f"{data.split_name} top-1", float((labels == predicted).mean())],
    ]
    rows += [
        [key, summary[key]]
        for key in ("best_epoch", "best_val_top1", "epochs_run", "params", "wall_time_s")
        if key in summary
    ]
    return Section("summary", "Summary", tables=[Table(["", "value"], rows)])


def curves_section(run_dir: Path, out: Path) -> Section:
    rows = read_metrics(run_dir)
    best = max(rows, key=lambda r: r.get("val_top1", 0))["epoch"]
    return Section("curves", "Training curves", [save(plots.training_curves(rows, best), out / "curves.png")])


def metric_sections(probs, labels, predicted, classes: list[str], out: Path) -> list[Section]:
    n = len(classes)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    off_diagonal = [(confusion[i, j], classes[i], classes[j]) for i in range(n) for j in range(n) if i != j]
    pairs = [[t, p, int(c)] for c, t, p in sorted(off_diagonal, reverse=True)[:10] if c > 0]
    confusion_section = Section(
        "confusion",
        "Confusion matrix",
        [save(plots.confusion_matrices(confusion, classes), out / "confusion.png")],
        [Table(["true class", "predicted as", "images"], pairs)],
        "The most frequent confusions:",
    )

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=range(n), zero_division=0
    )
    table = {"accuracy": recall, "precision": precision, "recall": recall, "f1": f1}
    order = np.argsort(f1)
    rows = [[classes[i], float(recall[i]), float(precision[i]), float(f1[i]), int(support[i])] for i in order]
    per_class = Section(
        "per-class",
        "Per-class metrics",
        [save(plots.per_class_bars(table, classes), out / "per_class.png")],
        [Table(["class", "accuracy (recall)", "precision", "F1", "images"], rows)],
        "Per-class accuracy is the recall of that class. Sorted by F1, worst first.",
    )

    roc_fig, aucs, macro_auc = plots.roc_curves(probs, labels, classes)
    pr_fig, aps, macro_ap = plots.pr_curves(probs, labels, classes)
    ranking = Table(
        ["class", "ROC AUC", "average precision"], [[c, a, p] for c, a, p in zip(classes, aucs, aps)]
    )
    roc = Section(
        "roc",
        "ROC and precision-recall",
        [save(roc_fig, out / "roc.png"), save(pr_fig, out / "pr.png")],
        [ranking],
        f"Macro ROC AUC {macro_auc:.4f}, macro average precision {macro_ap:.4f}.",
    )

    ece = float(
        MulticlassCalibrationError(n, n_bins=15, norm="l1")(torch.from_numpy(probs), torch.from_numpy(labels))
    )
    confidence, correct = probs.max(1), (predicted == labels).astype(float)
    calibration = Section(
        "calibration",
        "Calibration",
        [save(plots.reliability_diagram(confidence, correct, ece), out / "calibration.png")],
        note=f"Expected calibration error (15 bins): {ece:.4f}.",
    )
    return [confusion_section, per_class, roc, calibration]


def tsne_section(
    features: np.ndarray, labels: np.ndarray, classes: list[str], most: int, out: Path
) -> Section:
    chosen = np.random.default_rng(0).permutation(len(labels))[:most]
    progress(f"t-SNE of {len(chosen)} features of {features.shape[1]} dimensions")
    perplexity = min(30.0, (len(chosen) - 1) / 3)
    points = TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(features[chosen])
    fig = plots.tsne_scatter(points, labels[chosen], classes)
    return Section(
        "tsne",
        "t-SNE of features",
        [save(fig, out / "tsne.png")],
        note=f"{len(chosen)} validation images; features are the input of the final linear layer.",
    )


def most_confident(mask: np.ndarray, confidence: np.ndarray, count: int) -> list[int]:
    indices = np.flatnonzero(mask)
    return indices[np.argsort(-confidence[indices])][:count].tolist()


def cam_section(model: nn.Module, data: EvalData, labels, predicted, probs, count: int, out: Path) -> Section:
    classes = data.meta.classes
    confidence = probs.max(1)
    section = Section("gradcam", "Grad-CAM")
    for kind, mask in (("correct", labels == predicted), ("misclassified", labels != predicted)):
        chosen = most_confident(mask, confidence, count // 2)
        if not chosen:
            continue
        progress(f"Grad-CAM on {len(chosen)} {kind} images")
        images = split_images(data, chosen)
        heatmaps = grad_cam(model, model_input(data, images), [int(predicted[i]) for i in chosen])
        if heatmaps is None:
            section.note = (
                f"{data.meta.model} has no spatial feature maps, so there is no class activation map."
            )
            return section
        titles = [
            f"true {classes[labels[i]]}\npred {classes[predicted[i]]} ({confidence[i]:.2f})" for i in chosen
        ]
        grid = plots.image_grid(
            [overlay(im, h) for im, h in zip(images, heatmaps)],
            titles,
            f"Grad-CAM for the predicted class: {kind}",
        )
        section.images.append(save(grid, out / f"gradcam_{kind}.png"))
    section.note = "Where the model looked for the class it predicted (most confident images first)."
    return section


def activation_section(model: nn.Module, data: EvalData, out: Path, layers: int = 4) -> Section:
    image = split_images(data, [0])[0]
    captured: list[tuple[str, np.ndarray]] = []
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)][:layers]
    hooks = [
        m.register_forward_hook(lambda m, a, o, name=name: captured.append((name, o[0].detach().numpy())))
        for name, m in convs
    ]
    with torch.no_grad():
        model(model_input(data, [image]))
    for hook in hooks:
        hook.remove()
    if not captured:
        return Section("activations", "Activation maps", note="The model has no convolutional layers.")
    return Section(
        "activations",
        "Activation maps",
        [save(plots.activation_maps(captured), out / "activations.png")],
        note=f"The first layers' outputs for the first {data.split_name} image.",
    )


def gallery_section(data: EvalData, labels, predicted, probs, count: int, out: Path) -> Section:
    classes = data.meta.classes
    confidence = probs.max(1)
    chosen = most_confident(labels != predicted, confidence, count)
    if not chosen:
        return Section("misclassified", "Most confidently misclassified", note="No image was misclassified.")
    images = split_images(data, chosen)
    images = [im[..., 0] if im.shape[2] == 1 else im for im in images]
    titles = [
        f"true {classes[labels[i]]}\npred {classes[predicted[i]]} ({confidence[i]:.2f})" for i in chosen
    ]
    grid = plots.image_grid(images, titles, "Most confidently misclassified images")
    return Section("misclassified", "Most confidently misclassified", [save(grid, out / "misclassified.png")])


def image_name(data: EvalData, index: int) -> str:
    files = data.split.files
    return Path(files[index]).name if files else f"{data.split_name} #{index}"


def confusion_cells_section(data: EvalData, labels, predicted, probs, out: Path, pairs: int = 3) -> Section:
    """The images behind the most frequent confusions, most confident first."""
    classes = data.meta.classes
    wrong = labels != predicted
    cells = sorted(
        {(int(t), int(p)) for t, p in zip(labels[wrong], predicted[wrong])},
        key=lambda c: -int(((labels == c[0]) & (predicted == c[1])).sum()),
    )[:pairs]
    section = Section("confusion-cells", "Behind the most frequent confusions")
    for true, guess in cells:
        chosen = most_confident((labels == true) & (predicted == guess), probs.max(1), 12)
        images = [im[..., 0] if im.shape[2] == 1 else im for im in split_images(data, chosen)]
        titles = [f"{image_name(data, i)}\n{probs[i, guess]:.2f}" for i in chosen]
        grid = plots.image_grid(images, titles, f"true {classes[true]}, predicted {classes[guess]}")
        section.images.append(save(grid, out / f"confusion_{true}_{guess}.png"))
    section.note = (
        "No image was misclassified."
        if not cells
        else "File names, and the probability given to the wrong class."
    )
    return section


def highest_loss_section(data: EvalData, labels, predicted, probs, count: int, out: Path) -> Section:
    """The images the model finds hardest: highest cross-entropy on their given label (mislabelled
    images often lead this list)."""
    classes = data.meta.classes
    loss = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))
    chosen = np.argsort(-loss)[:count].tolist()
    images = [im[..., 0] if im.shape[2] == 1 else im for im in split_images(data, chosen)]
    titles = [f"{image_name(data, i)}\ngiven {classes[labels[i]]}" for i in chosen]
    rows = [[image_name(data, i), classes[labels[i]], classes[predicted[i]], float(loss[i])] for i in chosen]
    return Section(
        "highest-loss",
        f"Highest-loss {data.split_name} images",
        [save(plots.image_grid(images, titles, "Highest loss first"), out / "highest_loss.png")],
        [Table(["file", "given", "predicted", "loss"], rows)],
        "Worth a look before trusting the labels: cross-entropy of the given label, highest first.",
    )
