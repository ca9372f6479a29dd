"""Semantic segmentation: one label per pixel."""

from vislab.tasks.base import Task
from vislab.tasks.segmentation.display import confusion_images, prefetch_cells, preview, show
from vislab.tasks.segmentation.module import prepare_segmentation
from vislab.tasks.segmentation.predict import describe_eval, evaluate, export_inputs
from vislab.tasks.segmentation.report import build_report

ONLY_CLASSIFICATION = "it applies to classification only"

SEGMENTATION = Task(
    name="segmentation",
    default_model="deep_unet",
    default_model_args={"width": 16, "levels": 4},
    photo_defaults={},
    # Small pixel datasets (CamVid: 367 images) need many small steps, and Adam-type optimizers
    # train U-Nets from scratch far faster than SGD (measured: docs/benchmarks.md).
    defaults={"batch_size": 8, "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001}},
    monitor="val_miou",
    metric_columns=[
        "epoch",
        "train_loss",
        "val_loss",
        "val_miou",
        "val_pixel_acc",
        "val_mean_acc",
        "lr",
        "epoch_time_s",
    ],
    scores=[
        ("best mIoU", "best_val_miou"),
        ("final mIoU", "final_val_miou"),
        ("final pixel acc", "final_val_pixel_acc"),
        ("final mean acc", "final_val_mean_acc"),
    ],
    foreign_keys={
        "augment.crop_padding": "segmentation crops with segmentation.crop_size and scale_range",
        "augment.crop_padding_mode": "segmentation crops with segmentation.crop_size and scale_range",
        "augment.crop_scale": "segmentation crops with segmentation.crop_size and scale_range",
        "augment.hflip=alternate": "segmentation flips images and masks at random (true)",
        "augment.rotation": ONLY_CLASSIFICATION,
        "augment.hue": ONLY_CLASSIFICATION,
        "augment.randaugment_n": ONLY_CLASSIFICATION,
        "augment.cutout": ONLY_CLASSIFICATION,
        "augment.mixup": ONLY_CLASSIFICATION,
        "augment.cutmix": ONLY_CLASSIFICATION,
        "class_weights": "segmentation weighs its pixel classes with segmentation.class_weights",
        "sampler": ONLY_CLASSIFICATION,
        "finetune.head_hidden": "segmentation models have no classifier head",
        "finetune.head_dropout": "segmentation models have no classifier head",
        "val_fraction": "segmentation datasets bring their own val split",
        "skip_bad_images": "every segmentation image needs its mask: a bad pair stops the run",
    },
    prepare=prepare_segmentation,
    evaluate=evaluate,
    describe_eval=describe_eval,
    report=build_report,
    export_inputs=export_inputs,
    any_input_size=True,
    preview=preview,
    show=show,
    confusion_images=confusion_images,
    prefetch_cells=prefetch_cells,
)
