"""How quick `vislab ui` feels, measured in Debian's headless Chromium through Playwright:

- page load: from navigation to the app's tabs being usable;
- predict round trip: upload one 224 px photo, press Predict, until the top-k and Grad-CAM are on the
  page (a timm ResNet-18 on the CPU);
- both again while a training run uses the CPU (a `vislab train` process started beside the server).

    python benchmarks/ui_latency.py --photos ../shared/data/flowers5-128.tar.gz [--repeats 5]

Prints a Markdown table (median and range of the repeats) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def vislab(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vislab", *args], **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


def prepare(work: Path, archive: Path) -> tuple[Path, Path]:
    """A 5-class photo folder (8 per class) and a ResNet-18 run trained on it for two steps: the
    round trip does not depend on how well the model was trained. Returns (runs folder, a 224 px photo)."""
    with tarfile.open(archive) as tar:
        taken: dict[str, int] = {}
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) >= 2 and taken.get(parts[-2], 0) < 8:
                taken[parts[-2]] = taken.get(parts[-2], 0) + 1
                tar.extract(member, work / "src", filter="data")
    data = next(p.parent.parent for p in (work / "src").rglob("*.jpg"))
    runs = work / "runs"
    train = vislab(
        "train",
        f"data=folder:{data}",
        "model=timm:resnet18",
        "image_size=224",
        "epochs=1",
        "batch_size=8",
        "trainer.limit_train_batches=2",
        "report=false",
        f"runs_dir={runs}",
        "name=resnet18",
        "trainer.progress_bar=false",
    )
    if train.wait() != 0:
        raise RuntimeError("training the benchmark model failed")
    photo = work / "photo.jpg"
    first = next(data.rglob("*.jpg"))
    Image.open(first).convert("RGB").resize((224, 224)).save(photo, quality=95)
    return runs, photo


def page_load(browser, url: str) -> float:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    started = time.perf_counter()
    page.goto(url)
    page.get_by_role("tab", name="Predict").wait_for()
    page.locator("#resolved").get_by_text("task:").first.wait_for()  # the first server round trip done
    elapsed = time.perf_counter() - started
    page.close()
    return elapsed


def predict_round_trips(browser, url: str, photo: Path, repeats: int) -> list[float]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="Predict").click()
    page.locator("#predict-model input").first.click()
    page.get_by_role("option", name="resnet18", exact=True).click()
    page.locator("#predict-files input[type=file]").set_input_files(str(photo))
    page.wait_for_timeout(2000)  # the upload itself is not part of the round trip
    times, previous = [], ""
    for _ in range(repeats + 1):  # the first loads the model: reported apart
        started = time.perf_counter()
        page.locator("#predict").click()
        while True:
            text = page.locator("#predict-message").inner_text()
            if text != previous and "images through" in text:
                break
            time.sleep(0.01)
        page.locator("#predict-pictures img").nth(1).wait_for()
        times.append(time.perf_counter() - started)
        previous = text
    page.close()
    return times


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path("../shared/data/flowers5-128.tar.gz"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vislab-ui-bench-"))
    runs, photo = prepare(work, args.photos)
    port = free_port()
    server = vislab(
        "ui", "--runs", str(runs), "--port", str(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    results: dict[str, dict[str, str]] = {}
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}/"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            for situation in ("idle", "while training"):
                trainer = None
                if situation == "while training":
                    trainer = vislab(
                        "train",
                        "model=resnet20",
                        "epochs=200",
                        "batch_size=32",
                        f"runs_dir={work / 'load'}",
                        "report=false",
                        "trainer.progress_bar=false",
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    time.sleep(15)  # past start-up: training has the CPU
                try:
                    loads = [page_load(browser, url) for _ in range(args.repeats)]
                    trips = predict_round_trips(browser, url, photo, args.repeats)
                finally:
                    if trainer is not None:
                        trainer.terminate()
                        trainer.wait()
                results[situation] = {
                    "page load": summary(loads),
                    "first predict (loads the model)": f"{trips[0]:.2f} s",
                    "predict round trip": summary(trips[1:]),
                }
            browser.close()
    finally:
        server.terminate()
        server.wait()
    import gradio
    import torch

    print(
        f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores; "
        f"torch {torch.__version__}, gradio {gradio.__version__}; {time.strftime('%Y-%m-%d')}; "
        f"{args.repeats} repeats, median (range)\n"
    )
    print("| | idle | while a training run uses the CPU |\n|---|---|---|")
    for key in results["idle"]:
        print(f"| {key} | {results['idle'][key]} | {results['while training'][key]} |")


if __name__ == "__main__":
    main()
