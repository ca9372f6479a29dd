"""CamVid at 128x96, 6 epochs: the plain U-Net script (`camvid_plain_unet.py`, the peer) against
`vislab train` with the default segmentation config for that size, side by side in one run on the same
machine. Both are timed from process start to the reported validation mIoU (vislab: `report=false`,
since the peer writes none). Run: python benchmarks/camvid_segmentation.py [--runs N]"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid.tar.gz"
PEER = Path(__file__).resolve().parent / "camvid_plain_unet.py"


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(tmp, filter="data")
        data = Path(tmp) / "camvid"
        (data / "dataset.yaml").write_text("ignore_index: 11\n")  # CamVid's void label, declared once
        machine = platform.processor() or platform.machine()
        print(f"{machine}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
        print("| run | plain script mIoU | plain script s | vislab mIoU | vislab s |")
        print("|---|---|---|---|---|")
        for run in range(args.runs):
            peer_s, out = timed([sys.executable, str(PEER), str(data), "--epochs", str(args.epochs)])
            peer_miou = float(re.search(r"RESULT miou=([0-9.]+)", out).group(1))
            name = f"camvid-{run}"
            command = [sys.executable, "-m", "vislab", "train", f"data=segfolder:{data}", "image_size=96",
                       f"epochs={args.epochs}", "report=false", "trainer.progress_bar=false",
                       f"runs_dir={tmp}/runs", f"name={name}"]  # fmt: skip
            ours_s, _ = timed(command)
            summary = json.loads((Path(tmp) / "runs" / name / "summary.json").read_text())
            ours = summary["final_val_miou"]
            print(f"| {run + 1} | {peer_miou:.3f} | {peer_s:.1f} | {ours:.3f} | {ours_s:.1f} |")


if __name__ == "__main__":
    main()
