import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

from vislab.checkpoint import load_checkpoint
from vislab.cli import main
from vislab.models import create_model
from vislab.reports.cam import cam_target, grad_cam

from conftest import QUIET

SECTIONS = [
    "summary",
    "curves",
    "confusion",
    "per-class",
    "roc",
    "calibration",
    "tsne",
    "gradcam",
    "activations",
    "misclassified",
    "confusion-cells",
    "highest-loss",
]


class ReportParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.images, self.headings = [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        elif tag == "img":
            self.images.append((self.sections[-1], attrs["src"], attrs.get("alt")))


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory, cifar_jpgs):
    runs = tmp_path_factory.mktemp("runs")
    args = [
        "train",
        f"data=folder:{cifar_jpgs}",
        "model=resnet8",
        "epochs=3",
        "batch_size=64",
        f"runs_dir={runs}",
        "name=cifar",
        "trainer.progress_bar=false",
    ]
    assert main(args) == 0  # report=true is the default: training ends by writing the report
    return runs / "cifar"


def test_training_writes_a_self_contained_report_with_every_section(cifar_run):
    html = (cifar_run / "report" / "report.html").read_text()
    parser = ReportParser()
    parser.feed(html)
    assert parser.sections == SECTIONS
    assert {section for section, _, _ in parser.images} == set(SECTIONS) - {"summary"}
    for _, source, alt in parser.images:
        assert source.startswith("data:image/png;base64,") and alt  # embedded, so the file opens offline
        image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        image.load()
        assert image.width > 300 and image.height > 200
    assert "airplane" in html and "Macro ROC AUC" in html
    # The drill-down names real files: the highest-loss table lists images of the val split by file name.
    assert "Highest-loss val images" in html and re.search(r"<td>\d+\.jpg</td>", html)
    markdown = (cifar_run / "report" / "report.md").read_text()
    assert "## Confusion matrix" in markdown and "(confusion.png)" in markdown


def test_report_command_can_skip_the_slow_steps(cli, cifar_run):
    result = cli("report", cifar_run, "--split", "test", "--no-tsne", "--no-cam")
    assert result.code == 0, result.err
    parser = ReportParser()
    parser.feed((cifar_run / "report" / "report.html").read_text())
    assert (
        "tsne" not in parser.sections and "gradcam" not in parser.sections and "confusion" in parser.sections
    )


def test_report_of_a_folder_without_a_run_is_a_clear_error(cli, tmp_path):
    result = cli("report", tmp_path)
    assert result.code == 2 and "no checkpoints in" in result.err and result.err.count("\n") == 1


def paste(
    canvas_size: int, image: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, int]]:
    """The image on a plain grey canvas at a random place; returns the canvas and the top-left corner."""
    canvas = np.full((canvas_size, canvas_size, 3), 128, dtype=np.uint8)
    top, left = rng.integers(0, canvas_size - image.shape[0] + 1, size=2)
    canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
    return canvas, (int(top), int(left))


def test_grad_cam_falls_on_the_object_a_model_learned_to_recognise(tmp_path, cifar_jpgs):
    classes, size, rng = ["automobile", "frog", "ship"], 64, np.random.default_rng(0)
    for name in classes:
        (tmp_path / "data" / name).mkdir(parents=True)
        for index, path in enumerate(sorted((cifar_jpgs / "train" / name).iterdir())):
            canvas, _ = paste(size, np.asarray(Image.open(path).convert("RGB")), rng)
            Image.fromarray(canvas).save(tmp_path / "data" / name / f"{index}.png")
    args = [
        "train",
        f"data=folder:{tmp_path / 'data'}",
        "model=resnet8",
        "epochs=8",
        "batch_size=32",
        "augment.crop_padding=0",
        f"runs_dir={tmp_path}",
        "name=cam",
        *QUIET,
    ]
    assert main(args) == 0
    checkpoint = load_checkpoint(tmp_path / "cam")
    model, meta = checkpoint.model(), checkpoint.meta

    canvases, boxes, labels = [], [], []
    for label, name in enumerate(classes):  # held-out test images, pasted at known places
        for path in sorted((cifar_jpgs / "test" / name).iterdir())[:20]:
            canvas, corner = paste(size, np.asarray(Image.open(path).convert("RGB")), rng)
            canvases.append(canvas), boxes.append(corner), labels.append(label)
    images = torch.from_numpy(np.stack(canvases)).permute(0, 3, 1, 2).float() / 255
    inputs = (images - torch.tensor(meta.mean).view(1, 3, 1, 1)) / torch.tensor(meta.std).view(1, 3, 1, 1)
    heatmaps = grad_cam(model, inputs, labels)
    inside = [h[y : y + 32, x : x + 32].sum() / max(h.sum(), 1e-8) for h, (y, x) in zip(heatmaps, boxes)]
    # The object covers a quarter of the canvas; most of the activation mass must fall on it.
    assert np.median(inside) > 0.6, np.median(inside)


def test_grad_cam_works_for_vision_transformers():
    model = create_model("timm:vit_tiny_patch16_224", 3, img_size=64).eval()
    layer, reshape = cam_target(model, torch.randn(1, 3, 64, 64))
    assert layer is model.features.blocks[-1].norm1 and reshape is not None  # tokens, laid out as a grid
    heatmaps = grad_cam(model, torch.randn(2, 3, 64, 64), [0, 2])
    assert heatmaps.shape == (2, 64, 64) and np.isfinite(heatmaps).all()


def test_a_model_without_spatial_features_has_no_cam_target():
    assert cam_target(create_model("mlp", 10, 3, 32), torch.randn(1, 3, 32, 32)) is None


def test_figures_stay_usable_with_many_classes():
    from vislab.reports import plots

    rng = np.random.default_rng(0)
    classes = [f"class_{i}" for i in range(120)]
    labels = rng.integers(0, 120, 2000)
    probs = rng.dirichlet(np.ones(120), 2000)
    probs[np.arange(2000), labels] += 1
    probs /= probs.sum(1, keepdims=True)
    confusion = np.zeros((120, 120), dtype=int)
    np.add.at(confusion, (labels, probs.argmax(1)), 1)
    _, aucs, macro = plots.roc_curves(probs, labels, classes)
    assert len(aucs) == 120 and 0.5 < macro <= 1
    roc_fig = plots.roc_curves(probs, labels, classes)[0]
    assert len(roc_fig.axes[0].get_lines()) == 5 + 2  # the 5 worst classes, the macro curve, chance
    table = {key: rng.random(120) for key in ("accuracy", "precision", "recall", "f1")}
    assert len(plots.per_class_bars(table, classes).axes[0].get_yticklabels()) == 30
    matrix = plots.confusion_matrices(confusion, classes)
    ticks = [t.get_text() for t in matrix.axes[0].get_xticklabels()]
    assert ticks and not any(t.startswith("class_") for t in ticks)  # class indices, not 120 crowded names


def test_an_mlp_run_writes_its_report_and_says_why_it_has_no_cam(cli, tmp_path):
    """The first rung of the CIFAR ladder: no spatial feature maps, no convolutions, and still a report."""
    result = cli(
        "train", "model=mlp", "epochs=1", f"runs_dir={tmp_path}", "name=mlp", "trainer.progress_bar=false"
    )
    assert result.code == 0, result.err
    report = (tmp_path / "mlp" / "report" / "report.md").read_text()
    assert "mlp has no spatial feature maps, so there is no class activation map" in report
    assert "The model has no convolutional layers" in report


HANGUL_FLOWERS = {
    "daisy": "데이지",
    "dandelion": "민들레",
    "rose": "장미",
    "sunflower": "해바라기",
    "tulip": "튤립",
}


def test_class_names_in_hangul_are_drawn_in_every_figure(cli, tmp_path_factory, monkeypatch):
    """Real flower photos in folders named in Korean (as our users name them): the report's figures draw
    every label (once, each was a row of empty boxes: matplotlib's own font has no Hangul)."""
    import matplotlib._text_helpers

    from conftest import extract_archive

    root = extract_archive("flowers5-128.tar.gz", tmp_path_factory.mktemp("flowers")) / "flowers5_128"
    photos = tmp_path_factory.mktemp("hangul")
    for english, korean in HANGUL_FLOWERS.items():
        (photos / korean).mkdir()
        for image in sorted((root / english).iterdir())[:12]:
            (photos / korean / image.name).write_bytes(image.read_bytes())
    runs = tmp_path_factory.mktemp("runs")
    args = [f"data=folder:{photos}", "model=small_cnn", "image_size=32", "epochs=1", "report=false", *QUIET]
    assert cli("train", *args, f"runs_dir={runs}", "name=hangul").code == 0
    missing = []  # where matplotlib finds no glyph in any of its fonts, and draws a box
    monkeypatch.setattr(matplotlib._text_helpers, "warn_on_missing_glyph", lambda *a, **k: missing.append(a))
    assert cli("report", runs / "hangul").code == 0
    assert not missing, [chr(codepoint) for codepoint, *_ in missing[:10]]
    assert "해바라기" in (runs / "hangul" / "report" / "report.html").read_text()


def test_curves_leave_out_a_saturated_score_and_show_one_epoch_readably():
    from vislab.reports.plots import live_curves, training_curves

    rows = [
        {"epoch": 1, "train_loss": 1.2, "val_loss": 1.0, "train_acc": 0.4, "val_top1": 0.5, "val_top5": 1.0}
    ]
    rows[0] |= {"lr": 0.1}
    figure = training_curves(rows, best_epoch=1)
    scores = figure.axes[1]
    assert [line.get_label() for line in scores.lines if not line.get_label().startswith("best")] == [
        "train top-1",
        "val top-1",
    ]  # top-5 of five classes is 1.0 whatever the model: a flat line at the top
    assert scores.get_xlim() == (0, 1.5)  # not matplotlib's 0.96..1.04 around one point
    live = live_curves([{"epoch": 0.5, "train_loss": 1.3, "lr": 0.1}], rows)
    assert "val_top5" not in [line.get_label() for line in live.axes[1].lines]
