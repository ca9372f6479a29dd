import json

import numpy as np
import pytest
import torch
from PIL import Image

from vislab.cli import main
from vislab.config import SegmentationConfig
from vislab.data.segmentation import read_mask
from vislab.models import create_model
from vislab.tasks.segmentation.losses import class_weights, dice_loss, focal_loss, segmentation_loss
from vislab.tasks.segmentation.module import segmentation_metrics

from conftest import QUIET, small_copy

CAMVID_IGNORE = 11


def train_on(data) -> list[str]:
    """The start of a `vislab train` command for a ResUNet on a CamVid-layout folder."""
    return [
        "train",
        "task=segmentation",
        f"data=segfolder:{data}",
        f"segmentation.ignore_index={CAMVID_IGNORE}",
        "model=resunet",
    ]


def test_miou_matches_a_hand_computed_value_with_ignore_pixels_excluded(camvid):
    truth = read_mask(sorted((camvid / "val" / "masks").iterdir())[0])[100:160, 200:280].astype(np.int64)
    predicted = np.roll(truth, 7, axis=1)  # a prediction off by 7 pixels: right in the middle, wrong at edges
    predicted[predicted == CAMVID_IGNORE] = 0
    assert (truth == CAMVID_IGNORE).any()
    valid = truth != CAMVID_IGNORE
    ious = []
    for c in range(11):
        inter = ((truth == c) & (predicted == c) & valid).sum()
        union = (((truth == c) | (predicted == c)) & valid).sum()
        if union:  # classes absent from both truth and prediction do not count
            ious.append(inter / union)
    metrics = segmentation_metrics(11, CAMVID_IGNORE)
    scores = metrics(torch.from_numpy(predicted)[None], torch.from_numpy(truth)[None])
    assert float(scores["miou"]) == pytest.approx(np.mean(ious), abs=1e-6)
    assert float(scores["pixel_acc"]) == pytest.approx((truth == predicted)[valid].mean(), abs=1e-6)


def test_losses_skip_the_ignore_index():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8)
    labels = torch.randint(0, 4, (2, 8, 8))
    labels[:, :2] = 255
    ce = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255)
    assert focal_loss(logits, labels, 255, gamma=0.0, alpha=None) == pytest.approx(ce.item(), rel=1e-5)
    assert focal_loss(logits, labels, 255, gamma=2.0, alpha=None) < ce  # easy pixels count less
    perfect = torch.nn.functional.one_hot(labels.clamp(0, 3), 4).permute(0, 3, 1, 2).float() * 50
    assert dice_loss(perfect, labels, 255) < 0.01
    both = segmentation_loss(logits, labels, SegmentationConfig(loss="ce_dice", ignore_index=255))
    assert both == pytest.approx(ce.item() + dice_loss(logits, labels, 255).item(), rel=1e-5)


def test_class_weights_balance_label_frequencies():
    masks = [torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1, 2, 9]])]
    weights = class_weights(masks, 3, ignore_index=9)
    assert weights.tolist() == pytest.approx([1 / 3, 1.0, 2.0])  # median frequency / frequency


def test_a_short_camvid_run_beats_the_constant_class_baseline(camvid, tmp_path):
    data = small_copy(camvid, tmp_path / "camvid", train=120, val=30)
    args = [
        *train_on(data),
        "model_args={width: 16, levels: 4}",
        "image_size=64",
        "segmentation.crop_size=64",
        "epochs=3",
        "batch_size=8",
        "num_workers=2",
        "optim.name=adamw",
        "optim.lr=0.003",
        "optim.weight_decay=0.0001",
        "segmentation.loss=ce_dice",
        "name=camvid",
        f"runs_dir={tmp_path / 'runs'}",
        *QUIET,
    ]
    assert main(args) == 0
    summary = json.loads((tmp_path / "runs" / "camvid" / "summary.json").read_text())
    # Predicting the most frequent class everywhere scores its IoU (its pixel share) over the classes present.
    masks = np.stack([read_mask(p) for p in sorted((data / "val" / "masks").iterdir())])
    counts = np.bincount(masks[masks != CAMVID_IGNORE], minlength=11)
    constant_miou = counts.max() / counts.sum() / (counts > 0).sum()
    assert summary["best_val_miou"] > 2 * constant_miou, (summary["best_val_miou"], constant_miou)
    assert summary["best_val_pixel_acc"] > counts.max() / counts.sum()
    header = (tmp_path / "runs" / "camvid" / "metrics.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,val_loss,val_miou,val_pixel_acc,val_mean_acc,lr,epoch_time_s"


def encoder_state(path):
    state = torch.load(path, weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("model.encoder.")}, state


def test_two_stage_training_freezes_the_encoder_after_the_switch(camvid, tmp_path):
    data = small_copy(camvid, tmp_path / "camvid", train=16, val=4)
    torch.manual_seed(0)
    model = create_model("resunet", 11, 3, 64, width=8, levels=3)
    torch.save(model.state_dict(), tmp_path / "init.pt")
    initial = {f"model.{k}": v for k, v in model.state_dict().items()}
    args = [
        *train_on(data),
        "model_args={width: 8, levels: 3}",
        f"weights={tmp_path / 'init.pt'}",
        "image_size=64",
        "segmentation.crop_size=64",
        "batch_size=4",
        "num_workers=0",
        "segmentation.freeze_encoder_after=4",
        "epochs=1",
        "name=two",
        f"runs_dir={tmp_path}",
        *QUIET,
    ]
    assert main(args) == 0  # 4 steps: the encoder trains, then the switch
    last = tmp_path / "two" / "checkpoints" / "last.ckpt"
    encoder_at_switch, at_switch = encoder_state(last)
    assert any(not torch.equal(v, initial[k]) for k, v in encoder_at_switch.items())
    assert main(["train", "--resume", str(tmp_path / "two"), "epochs=3"]) == 0
    encoder_after, after = encoder_state(last)
    assert all(torch.equal(v, encoder_at_switch[k]) for k, v in encoder_after.items())  # incl. BN statistics
    decoder = [k for k in after if k.startswith("model.decoder.") and k.endswith("weight")]
    assert any(not torch.equal(after[k], at_switch[k]) for k in decoder)


def test_a_mask_that_does_not_match_its_image_stops_training_with_its_name(cli, camvid, tmp_path):
    data = small_copy(camvid, tmp_path / "camvid", train=4, val=2)
    mask = sorted((data / "train" / "masks").iterdir())[1]
    Image.open(mask).resize((50, 40), Image.NEAREST).save(mask)
    result = cli(
        *train_on(data),
        f"runs_dir={tmp_path / 'r'}",
    )
    assert result.code == 2 and str(mask) in result.err and result.err.count("\n") == 1
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def camvid_run(camvid, tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    data = small_copy(camvid, root / "camvid", train=24, val=6)
    args = [
        *train_on(data),
        "model_args={width: 8, levels: 3}",
        "image_size=64",
        "segmentation.crop_size=64",
        "epochs=1",
        "batch_size=8",
        "num_workers=0",
        "name=run",
        f"runs_dir={root / 'runs'}",
        "trainer.progress_bar=false",
    ]
    assert main(args) == 0  # with the report, the default
    return root / "runs" / "run", data


def test_a_segmentation_run_reports_iou_confusion_and_overlays(camvid_run):
    from test_reports import ReportParser

    run, _ = camvid_run
    parser = ReportParser()
    parser.feed((run / "report" / "report.html").read_text())
    assert parser.sections == ["summary", "curves", "per-class", "confusion", "overlays"]
    assert len(parser.images) == 4 and all(
        src.startswith("data:image/png;base64,") for _, src, _ in parser.images
    )
    result = json.loads((run / "eval_val.json").read_text())
    assert set(result["per_class_iou"]) == set((camvid_run[1] / "classes.txt").read_text().split())
    assert 0 <= result["miou"] <= result["pixel_acc"] <= 1


def test_predict_writes_label_colour_and_overlay_masks_at_the_image_size(cli, camvid_run, tmp_path):
    run, data = camvid_run
    image = sorted((data / "val" / "images").iterdir())[0]
    result = cli("predict", run, image, "--out", tmp_path / "masks")
    assert result.code == 0, result.err
    labels = np.array(Image.open(tmp_path / "masks" / f"{image.stem}_labels.png"))
    assert labels.shape == (360, 480) and labels.max() < 11
    colour = Image.open(tmp_path / "masks" / f"{image.stem}_colour.png")
    assert colour.mode == "RGB" and colour.size == (480, 360)
    assert (tmp_path / "masks" / f"{image.stem}_overlay.png").is_file()


def test_eval_of_a_segmentation_run_prints_miou(cli, camvid_run):
    result = cli("eval", camvid_run[0])
    assert result.code == 0 and "mIoU" in result.out and "(6 images)" in result.out


def test_eval_tta_of_a_segmentation_run_scores_with_and_without_it(cli, camvid_run):
    run = camvid_run[0]
    assert cli("eval", run).code == 0
    without = json.loads((run / "eval_val.json").read_text())["miou"]
    result = cli("eval", run, "--tta")
    assert result.code == 0 and "test-time augmentation: miou" in result.out, result.err
    saved = json.loads((run / "eval_val.json").read_text())
    assert saved["tta"] == {
        "score": "miou",
        "with": saved["miou"],
        "without": without,
        "gain": round(saved["miou"] - without, 6),
    }


def test_validation_predictions_are_logged_to_tensorboard_as_images(camvid_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(camvid_run[0] / "tensorboard"))
    events.Reload()
    assert "val/image_truth_prediction" in events.Tags()["images"]
    image = events.Images("val/image_truth_prediction")[-1]
    # Four whole validation images (shorter side 64: 64x85), each beside its ground truth and prediction.
    assert (image.width, image.height) == (3 * 85, 4 * 64)


def test_segmentation_runs_compare_on_miou(cli, camvid_run):
    run = camvid_run[0]
    result = cli("compare", run, run)
    assert result.code == 0, result.err
    assert "| best mIoU | final mIoU |" in result.out.splitlines()[0]
