"""How quick `vislab ui` feels, measured in Debian's headless Chromium through Playwright:

- page load: from navigation to the app's tabs being usable;
- predict round trip: upload one 224 px photo, press Predict, until the top-k and Grad-CAM are on the
  page (a timm ResNet-18 on the CPU);
- Results: a run opened (its first evaluation, then cached), a confusion-matrix cell clicked until its
  images are shown, a second run picked until the compare table is shown; with `--camvid`, a cell of a
  segmentation run too;
- all again while a training run uses the CPU (a `vislab train` process started beside the server).

    python benchmarks/ui_latency.py --photos ../shared/data/flowers5-128.tar.gz \
        [--camvid ../shared/data/camvid.tar.gz] [--repeats 5]

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


def train_quickly(data: str, model: str, name: str, runs: Path, *options: str) -> None:
    """A run trained for two steps: the latencies do not depend on how well the model learnt."""
    words = ["epochs=1", "trainer.limit_train_batches=2", "report=false", "trainer.progress_bar=false"]
    train = vislab(
        "train", f"data={data}", f"model={model}", *options, *words, f"runs_dir={runs}", f"name={name}"
    )
    if train.wait() != 0:
        raise RuntimeError(f"training the benchmark's {name} failed")


def extract(archive: Path, target: Path, per_folder: int) -> Path:
    """The first `per_folder` files of every folder of the archive, extracted under `target`."""
    with tarfile.open(archive) as tar:
        taken: dict[str, int] = {}
        for member in tar:
            folder = str(Path(member.name).parent)
            if member.isfile() and taken.get(folder, 0) < per_folder:
                taken[folder] = taken.get(folder, 0) + 1
                tar.extract(member, target, filter="data")
    return target


def prepare(work: Path, archive: Path, camvid: Path | None) -> tuple[Path, Path]:
    """A 5-class photo folder (8 per class) with a ResNet-18 and a small_cnn run trained on it, and with
    `camvid` a segmentation run on it. Returns (runs folder, a 224 px photo)."""
    data = next(p.parent.parent for p in extract(archive, work / "src", 8).rglob("*.jpg"))
    runs = work / "runs"
    train_quickly(f"folder:{data}", "timm:resnet18", "resnet18", runs, "image_size=224", "batch_size=8")
    train_quickly(f"folder:{data}", "small_cnn", "small_cnn", runs, "image_size=64", "batch_size=8")
    if camvid:
        root = next(p.parent for p in extract(camvid, work / "camvid", 10**6).rglob("classes.txt"))
        options = ["image_size=128", "batch_size=4", "segmentation.ignore_index=11"]
        train_quickly(f"segfolder:{root}", "deep_unet", "camvid", runs, *options)
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


def text_change(page, selector: str, before: str, pattern: str, started: float) -> float:
    """Seconds from `started` until the element's text differs from `before` and holds `pattern`."""
    while True:
        text = page.locator(selector).inner_text()
        if text != before and pattern in text:
            return time.perf_counter() - started
        time.sleep(0.01)


def results_round_trips(browser, url: str, run: str, other: str | None, repeats: int) -> dict[str, list]:
    """A run opened in Results, then `repeats` confusion cells clicked (each until its images are shown),
    then, with `other`, that run added to the pick until the compare table is shown; on a fresh page."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="Results").click()
    page.get_by_role("button", name="Refresh the list").click()
    started = time.perf_counter()
    page.locator("#results-runs input").first.click()
    page.get_by_role("option", name=run, exact=True).click()
    page.keyboard.press("Escape")
    times: dict[str, list] = {"open": [text_change(page, "#headline", "", run, started)]}
    page.locator('#confusion [data-testid="cell-0-1"]').wait_for()
    cells = page.locator('#confusion [data-testid^="cell-"]').evaluate_all(
        "cells => cells.map(c => [c.dataset.testid, c.innerText.trim()])"
    )  # cells with images (a count or share above 0), past the class names' column
    full = [i for i, text in cells if not i.endswith("-0") and text.rstrip("%") not in ("0", "0.0")]
    times["cell"], caption = [], ""
    for index in range(repeats):  # each click another cell, where there are several
        started = time.perf_counter()
        page.locator(f'#confusion [data-testid="{full[index % len(full)]}"]').click()
        times["cell"].append(text_change(page, "#cell-caption", caption, "shown", started))
        page.locator("#cell-images img").first.wait_for()
        times["cell"][-1] = time.perf_counter() - started
        caption = page.locator("#cell-caption").inner_text()
    if other:
        started = time.perf_counter()
        page.locator("#results-runs input").first.click()
        page.get_by_role("option", name=other, exact=True).click()
        page.keyboard.press("Escape")
        times["compare"] = [text_change(page, "#compare-table", "", "|", started)]
    page.close()
    return times


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path("../shared/data/flowers5-128.tar.gz"))
    parser.add_argument("--camvid", type=Path, help="also a segmentation run's cells (camvid.tar.gz)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vislab-ui-bench-"))
    runs, photo = prepare(work, args.photos, args.camvid)
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
                    shown = [results_round_trips(browser, url, "resnet18", "small_cnn", args.repeats)]
                    shown += [results_round_trips(browser, url, "resnet18", "small_cnn", args.repeats)]
                    if args.camvid:
                        segmentation = results_round_trips(browser, url, "camvid", None, args.repeats)
                finally:
                    if trainer is not None:
                        trainer.terminate()
                        trainer.wait()
                first, again = shown
                results[situation] = {
                    "page load": summary(loads),
                    "first predict (loads the model)": f"{trips[0]:.2f} s",
                    "predict round trip": summary(trips[1:]),
                    "Results: a run opened the first time (evaluates it)": f"{first['open'][0]:.2f} s",
                    "Results: the run opened again (cached)": f"{again['open'][0]:.2f} s",
                    "confusion cell clicked until its images show": summary(first["cell"] + again["cell"]),
                    "a second run picked until the compare table shows": summary(
                        first["compare"] + again["compare"]
                    ),
                }
                if args.camvid:
                    results[situation] |= {
                        "segmentation run opened (evaluates it)": f"{segmentation['open'][0]:.2f} s",
                        "segmentation: the first cell clicked at once (waits for the per-image pass)": (
                            f"{segmentation['cell'][0]:.2f} s"
                        ),
                        "segmentation: the next cells clicked": summary(segmentation["cell"][1:]),
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
