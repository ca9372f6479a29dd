"""Class imbalance on real images: CIFAR-10 JPEGs (300 train images per class, 100 val) with three classes
cut to 5% of their train images, trained at the same budget with no balancing, `class_weights=auto`,
`class_weights=effective` and `sampler=balanced`; prints the minority classes' recall and macro F1.

    python benchmarks/imbalance.py --cifar ../shared/data/cifar10-jpg.tar.gz [--epochs 15]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

MINORITY = ["bird", "cat", "deer"]
SETTINGS = {
    "none": [],
    "class_weights=auto": ["class_weights=auto"],
    "class_weights=effective": ["class_weights=effective"],
    "sampler=balanced": ["sampler=balanced"],
}


def build(archive: Path, root: Path, per_class: int = 300, val: int = 100, kept: float = 0.05) -> Path:
    limits = {"train": per_class, "test": val}
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or parts[0] not in limits:
                continue
            limit = limits[parts[0]]
            if parts[0] == "train" and parts[1] in MINORITY:
                limit = int(per_class * kept)
            key = (parts[0], parts[1])
            if taken.get(key, 0) < limit:
                taken[key] = taken.get(key, 0) + 1
                tar.extract(member, root, filter="data")
    (root / "test").rename(root / "val")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", type=Path, default=Path("../shared/data/cifar10-jpg.tar.gz"))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument(
        "--transfer",
        action="store_true",
        help="a linear head on frozen ImageNet TF EfficientNet-Lite0 features at 96 px instead of ResNet-8",
    )
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vislab-imbalance-"))
    data = build(args.cifar, work / "data")
    rows = []
    model = ["model=resnet8", "batch_size=64"]
    if args.transfer:
        model = [
            "model=timm:tf_efficientnet_lite0",
            "pretrained=true",
            "finetune.mode=linear",
            "image_size=96",
        ]
        model.append("batch_size=64")
    for label in args.settings:
        extra = SETTINGS[label]
        name = label.replace("=", "-")
        started = time.perf_counter()
        common = [f"data=folder:{data}", *model, f"epochs={args.epochs}"]
        command = [sys.executable, "-m", "vislab", "train", *common, *extra, f"runs_dir={work / 'runs'}"]
        subprocess.run([*command, f"name={name}", "report=false", "trainer.progress_bar=false"], check=True)
        subprocess.run([sys.executable, "-m", "vislab", "eval", str(work / "runs" / name)], check=True)
        result = json.loads((work / "runs" / name / "eval_val.json").read_text())
        recall = result["per_class_accuracy"]
        minority = sum(recall[c] for c in MINORITY) / len(MINORITY)
        majority = sum(v for c, v in recall.items() if c not in MINORITY) / (len(recall) - len(MINORITY))
        rows.append(
            (label, minority, majority, result["top1"], result["macro_f1"], time.perf_counter() - started)
        )
    print(
        f"\n{platform.machine()}, {time.strftime('%Y-%m-%d')}, {' '.join(model)}, {args.epochs} epochs; "
        f"train 300 per class, {', '.join(MINORITY)} cut to 15; val 100 per class\n"
    )
    print(
        "| setting | minority recall | majority recall | top-1 | macro F1 | time |\n|---|---|---|---|---|---|"
    )
    for label, minority, majority, top1, f1, seconds in rows:
        print(f"| {label} | {minority:.3f} | {majority:.3f} | {top1:.3f} | {f1:.3f} | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
