"""Training throughput of vislab against a plain PyTorch loop and against the no-data-pipeline limit.

ResNet-20 on CIFAR-10 JPEGs with the seed recipe's augmentation (random crop + flip + RandAugment(2, 9) +
Cutout(16)), batch 128, SGD:
  vislab  `vislab train` on `folder:` data: decoded once to a uint8 tensor, augmented in batches on the device
  plain   torchvision ImageFolder + per-sample transforms v2 + DataLoader workers, a hand-written loop
  limit   the same model and optimizer stepping on one synthetic batch that is already on the device,
          in the channels-last layout (vislab's default for convolutional models)
Images/s are measured after a warm-up epoch (vislab: the mean of epochs after the first, validation
excluded; plain: batches after the first `warmup`). Run: python benchmarks/train_throughput.py [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from vislab.cli import main as vislab_main
from vislab.models import create_model

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"
CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


def extract(archive: Path, out: Path, per_class: int) -> Path:
    counts: dict[str, int] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and parts[0] == "train" and counts.get(parts[1], 0) < per_class:
                counts[parts[1]] = counts.get(parts[1], 0) + 1
                tar.extract(member, out, filter="data")
    return out / "train"


def step(model, optimizer, images, labels) -> None:
    loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def limit_images_per_s(device: str, batch: int, steps: int) -> float:
    # Channels-last, the faster layout for convolutions and what vislab trains in by default.
    model = create_model("resnet20", 10).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    images, labels = (
        torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last),
        torch.randint(0, 10, (batch,), device=device),
    )
    for _ in range(5):
        step(model, optimizer, images, labels)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(model, optimizer, images, labels)
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def plain_images_per_s(
    root: Path, device: str, batch: int, workers: int, warmup: int, seed_aug: bool
) -> float:
    transform = T.Compose(
        [
            T.ToImage(),
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            *([T.RandAugment(2, 9)] if seed_aug else []),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(CIFAR_MEAN, CIFAR_STD),
            # Cutout(16) on 32x32
            *([T.RandomErasing(p=1.0, scale=(0.25, 0.25), ratio=(1, 1), value=0)] if seed_aug else []),
        ]
    )
    loader = DataLoader(
        ImageFolder(root, transform),
        batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
        pin_memory=device.startswith("cuda"),
    )
    model = create_model("resnet20", 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    seen, start = 0, 0.0
    for index, (images, labels) in enumerate(loader):
        if index == warmup:
            sync(device)
            start, seen = time.perf_counter(), 0
        step(model, optimizer, images.to(device, non_blocking=True), labels.to(device, non_blocking=True))
        seen += len(labels)
    sync(device)
    return seen / (time.perf_counter() - start)


def vislab_images_per_s(
    root: Path, device: str, batch: int, epochs: int, runs: Path, seed_aug: bool
) -> float:
    augment = ["augment.randaugment_n=2", "augment.randaugment_m=9", "augment.cutout=16"] if seed_aug else []
    code = vislab_main(
        [
            "train",
            f"data=folder:{root}",
            "model=resnet20",
            f"epochs={epochs}",
            f"batch_size={batch}",
            f"runs_dir={runs}",
            "name=bench",
            "val_fraction=0.02",
            *augment,
            "trainer.progress_bar=false",
            "trainer.precision=32-true",
            f"trainer.accelerator={'gpu' if device.startswith('cuda') else 'cpu'}",
            "trainer.devices=1",
        ]
    )
    assert code == 0, "vislab train failed"
    rows = torch.load(runs / "bench" / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    history = next(state["rows"] for key, state in rows.items() if key.startswith("EpochLog"))[1:]
    return sum(r["train_images"] for r in history) / sum(r["train_time_s"] for r in history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--per-class", type=int, default=500, help="train images per class (5000 = all)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain loop")
    parser.add_argument(
        "--augment",
        choices=["seed", "default"],
        default="seed",
        help="seed: the seed recipe's crop+flip+RandAugment(2,9)+Cutout(16); default: vislab's crop+flip",
    )
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = extract(ARCHIVE, Path(tmp), args.per_class)
        steps = (args.epochs - 1) * 10 * args.per_class // args.batch  # as many as vislab's timed epochs
        # The limit is measured before and after the others and averaged, to cancel drift in machine speed.
        before = limit_images_per_s(args.device, args.batch, steps)
        seed_aug = args.augment == "seed"
        plain = plain_images_per_s(root, args.device, args.batch, args.workers, 5, seed_aug)
        ours = vislab_images_per_s(root, args.device, args.batch, args.epochs, Path(tmp) / "runs", seed_aug)
        limit = (before + limit_images_per_s(args.device, args.batch, steps)) / 2
    device = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"CPU, {torch.get_num_threads()} threads"
    )
    results = {
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "train_images": 10 * args.per_class,
        "batch": args.batch,
        "augment": args.augment,
        "images_per_s": {"limit": round(limit), "vislab": round(ours), "plain": round(plain)},
        "vislab_vs_limit": round(ours / limit, 3),
        "vislab_vs_plain": round(ours / plain, 2),
    }
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
