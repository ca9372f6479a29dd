"""Image classification: one label per image."""

from vislab.tasks.base import Task
from vislab.tasks.classification.display import confusion_images, preview, show
from vislab.tasks.classification.evaluate import describe_eval, evaluate, export_inputs
from vislab.tasks.classification.module import prepare_classification
from vislab.tasks.classification.report import build_report

CLASSIFICATION = Task(
    name="classification",
    default_model="small_cnn",
    default_model_args={},
    # Fine-tuning ImageNet weights, the same online and offline (the hub's and the packaged ones are one
    # TF port), with AdamW at 1e-3 in batches of 32: robust on a few hundred photos as on thousands, where
    # SGD at the task's 0.05 wrecks the features of a small set (docs/recipes.md).
    photo_defaults={
        "model": "timm:tf_efficientnet_lite0",
        "pretrained": True,
        "epochs": 5,
        "batch_size": 32,
        "optim": {"name": "adamw", "lr": 0.001, "weight_decay": 0.01},
    },
    defaults={},
    monitor="val_top1",
    metric_columns=[
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_top1",
        "val_top5",
        "lr",
        "epoch_time_s",
    ],
    scores=[
        ("best top-1", "best_val_top1"),
        ("best top-5", "best_val_top5"),
        ("final top-1", "final_val_top1"),
        ("final top-5", "final_val_top5"),
    ],
    foreign_keys={"segmentation": "it configures segmentation"},
    prepare=prepare_classification,
    evaluate=evaluate,
    describe_eval=describe_eval,
    report=build_report,
    export_inputs=export_inputs,
    any_input_size=False,
    preview=preview,
    show=show,
    confusion_images=confusion_images,
    prefetch_cells=None,  # scoring a split once is quick
)
