"""The peer of the CamVid benchmark: the plain U-Net script our users write (no vislab). CamVid resized
to 128x96 and held in memory as tensors, a width-16 four-level U-Net, random horizontal flips, AdamW 3e-3,
batch 8; validation mIoU (classes absent from truth and prediction do not count) after every epoch.
Run: python benchmarks/camvid_plain_unet.py CAMVID_DIR [--epochs 6]"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

start = time.perf_counter()
parser = argparse.ArgumentParser()
parser.add_argument("root", type=Path)
parser.add_argument("--epochs", type=int, default=6)
args = parser.parse_args()
torch.manual_seed(0)
CLASSES, IGNORE, SIZE = 11, 11, (128, 96)


def load(split):
    files = sorted((args.root / split / "images").glob("*.jpg"))
    images = [np.asarray(Image.open(f).convert("RGB").resize(SIZE, Image.BILINEAR)) for f in files]
    masks = [
        np.asarray(Image.open(args.root / split / "masks" / f"{f.stem}.png").resize(SIZE, Image.NEAREST))
        for f in files
    ]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255, torch.from_numpy(
        np.stack(masks)
    ).long()


def block(i, o):
    return nn.Sequential(
        nn.Conv2d(i, o, 3, padding=1),
        nn.BatchNorm2d(o),
        nn.ReLU(),
        nn.Conv2d(o, o, 3, padding=1),
        nn.BatchNorm2d(o),
        nn.ReLU(),
    )


class UNet(nn.Module):
    def __init__(self, w=16):
        super().__init__()
        self.down = nn.ModuleList([block(3, w), block(w, 2 * w), block(2 * w, 4 * w), block(4 * w, 8 * w)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(2 * c, c, 2, stride=2) for c in (4 * w, 2 * w, w)])
        self.dec = nn.ModuleList([block(4 * c, 2 * c) for c in (2 * w, w)] + [block(2 * w, w)])
        self.out = nn.Conv2d(w, CLASSES, 1)

    def forward(self, x):
        skips = []
        for i, level in enumerate(self.down):
            x = level(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips[:-1])):
            x = dec(torch.cat([skip, up(x)], 1))
        return self.out(x)


(train_x, train_y), (val_x, val_y) = load("train"), load("val")
mean, std = train_x.mean((0, 2, 3), keepdim=True), train_x.std((0, 2, 3), keepdim=True)
model = UNet()
optimizer = torch.optim.AdamW(model.parameters(), 3e-3)
for epoch in range(args.epochs):
    model.train()
    for batch in torch.randperm(len(train_x)).split(8):
        x, y = train_x[batch], train_y[batch]
        flip = torch.rand(len(batch)) < 0.5
        x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
        loss = F.cross_entropy(model((x - mean) / std), y, ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    confusion = torch.zeros(CLASSES, CLASSES, dtype=torch.long)
    with torch.no_grad():
        for batch in torch.arange(len(val_x)).split(16):
            predicted, truth = model((val_x[batch] - mean) / std).argmax(1), val_y[batch]
            valid = truth != IGNORE
            confusion += torch.bincount(truth[valid] * CLASSES + predicted[valid], minlength=CLASSES**2).view(
                CLASSES, CLASSES
            )
    union = confusion.sum(0) + confusion.sum(1) - confusion.diag()
    miou = (confusion.diag()[union > 0] / union[union > 0]).mean().item()
    print(
        f"epoch {epoch}: loss {loss.item():.3f} val mIoU {miou:.4f} ({time.perf_counter() - start:.1f}s)",
        flush=True,
    )
print(f"RESULT miou={miou:.4f} seconds={time.perf_counter() - start:.1f}")
