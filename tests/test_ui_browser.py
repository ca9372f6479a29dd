"""`vislab ui` end to end in a real headless Chromium (Debian's, driven by Playwright): set up the digits
default, train it with live progress, stop and resume it, open a confusion cell's images, predict a real
photo; then the same for a small CamVid segmentation run. Screenshots of every tab are kept in
test-artifacts/ui/ (or $VISLAB_TEST_ARTIFACTS)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from conftest import copy_classes, small_copy

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("VISLAB_TEST_ARTIFACTS", Path(__file__).parents[1] / "test-artifacts" / "ui"))
# Every wait below is for a condition; these deadlines only end a test that hangs, and stay far beyond what
# a slow machine (one core, a third of the development machines' speed) takes to get there.
PAGE_S = 300  # the page, or the server behind it, answering: a check, a prediction, a confusion cell
TRAINING_S = 900  # a training run or an audit from start to end

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
if not CHROMIUM.is_file():
    pytest.skip("Debian's chromium (/usr/bin/chromium) is not installed", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    runs = tmp_path_factory.mktemp("ui") / "runs"
    port = free_port()
    log = open(runs.parent / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "vislab", "ui", "--runs", str(runs), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + PAGE_S
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert process.poll() is None, (runs.parent / "server.log").read_text()
        time.sleep(0.5)
    yield url, runs
    process.terminate()
    try:
        process.wait(PAGE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=FLAGS, timeout=PAGE_S * 1000
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(PAGE_S * 1000)  # Playwright's own waits (clicks, loading, locators): 30 s
    sync_api.expect.set_options(timeout=PAGE_S * 1000)  # and its assertions' waits: 5 s
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(LOCAL) else None)
    page.goto(server[0])
    page.get_by_role("tab", name="Data & model").wait_for()
    # The page's load event has been answered (it fills the shell line): the form is live, and what a
    # test types is not lost to components still being set up.
    wait_for_text(page, "#command", r"vislab train")
    yield page
    assert not outside, f"the page asked the network for {outside[:5]}"
    page.close()


LOCAL = ("http://127.0.0.1", "data:", "blob:")


def text_of(page, selector: str) -> str:
    """What an element shows: its text and the values of its input fields."""
    return page.locator(selector).first.evaluate(
        "e => [e.innerText, ...[...e.querySelectorAll('input, textarea')].map(i => i.value)].join(' ')"
    )


def wait_for_text(page, selector: str, pattern: str, timeout_s: float = PAGE_S) -> str:
    """Waits until the element's text matches `pattern` (the page refreshes itself every second)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = text_of(page, selector)
        if re.search(pattern, text):
            return text
        time.sleep(0.3)
    shown = [f"#{m}-message" for m in ("config", "setup", "train", "results", "predict")]
    messages = [text_of(page, m) for m in shown if page.locator(m).count()]
    raise AssertionError(f"{selector} never matched {pattern!r}: {text_of(page, selector)!r}; {messages}")


def read_progress(run_dir: Path) -> dict:
    """The run's progress.json ({} before it is first written; it is replaced whole, never half-written)."""
    try:
        return json.loads((run_dir / "progress.json").read_text())
    except FileNotFoundError:
        return {}


def wait_for_progress(run_dir: Path, condition, what: str, timeout_s: float = TRAINING_S) -> dict:
    """Polls the run's progress.json, much faster than the page refreshes, until `condition` holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        progress = read_progress(run_dir)
        if progress and condition(progress):
            return progress
        assert progress.get("state") != "finishing", f"{run_dir.name} ended before {what}"
        assert time.monotonic() < deadline, f"{run_dir.name} never reached {what}: {progress}"
        time.sleep(0.02)


@contextmanager
def held(pid: int):
    """Holds a training run (its process group: the UI starts each in a session of its own) still."""
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


def fill(page, elem_id: str, value) -> None:
    field = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    field.fill(str(value))
    field.press("Tab")


def choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=True).click()
    page.keyboard.press("Escape")


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def train_from_setup(page, settings: dict[str, object], run_name: str) -> None:
    """Fills the form's fields ({config key: value}; each field's id is its key) one after the other, as a
    person does, each seen in the command (no answer of the page writes a field the user fills: a field
    that was refilled when data or model changed once lost an edit typed meanwhile), and checks the
    data."""
    for key, value in [*settings.items(), ("name", run_name)]:
        fill(page, "run-name" if key == "name" else key.replace("_", "-"), value)
        wait_for_text(page, "#command", rf"\b{key}={value}\b")
    page.locator("#check-data").click()
    wait_for_text(page, "#data-summary", r"classes")


def look_at_results(page, run_name: str, cell: tuple[int, int]) -> None:
    open_tab(page, "Results")
    page.get_by_role("button", name="Refresh the list").click()
    choose(page, "results-runs", run_name)
    wait_for_text(page, "#headline", run_name)
    row, column = cell
    page.locator(f'#confusion [data-testid="cell-{row}-{column}"]').click()
    wait_for_text(page, "#cell-caption", r"[1-9]\d* images shown")
    page.locator("#cell-images img").first.wait_for()
    # Cells are coloured by their share of the row, and the chosen one is outlined.
    chosen = page.locator(f'#confusion [data-testid="cell-{row}-{column}"]')
    sync_api.expect(chosen).to_have_css("outline-style", "solid")
    # Its count stays readable on its own shade (Gradio whitens a chosen cell's text box; the page not).
    text_box = chosen.locator("span.text")
    sync_api.expect(text_box).to_have_css("background-color", "rgba(0, 0, 0, 0)")
    assert re.fullmatch(r"\d+(\.\d+%)?", text_box.inner_text().strip()), text_box.inner_text()
    colours = page.locator('#confusion [data-testid^="cell-"]').evaluate_all(
        "cells => cells.map(c => getComputedStyle(c).backgroundColor)"
    )
    assert len(set(colours)) >= 3, colours  # the names' column, and several shades of blue


def predict_photo(page, run_name: str, photo: Path) -> None:
    open_tab(page, "Predict")
    page.get_by_role("button", name="Refresh the list").last.click()
    choose(page, "predict-model", run_name)
    page.locator("#predict-files input[type=file]").set_input_files(str(photo))
    page.locator("#predict").click()
    wait_for_text(page, "#predict-message", r"1 images through")


def test_classification_end_to_end(page, server, tmp_path):
    url, runs = server
    shoot(page, "1-data-and-model-empty")
    train_from_setup(page, {"epochs": 3, "batch_size": 4}, "ui-digits")
    assert "data=digits" in text_of(page, "#command")
    page.locator("#samples img").nth(9).wait_for()  # samples of every digit
    shoot(page, "1-data-and-model")

    open_tab(page, "Train")
    wait_for_text(page, "#train-command", r"Start runs: vislab train data=digits .*name=ui-digits")
    page.locator("#start").click()
    # The run is held still (SIGSTOP) while the page must show it mid-training, so that however fast the
    # machine, it cannot end before the test has looked; it goes on between the holds.
    run_dir = runs / "ui-digits"
    started = wait_for_progress(run_dir, lambda p: p["state"] in ("training", "validating"), "training")
    plot = page.locator("#curves")
    with held(started["pid"]):
        first = wait_for_text(page, "#train-status", r"ui-digits: training")
        before, points = plot.screenshot(), len(read_progress(run_dir)["curve"])
    # The trainer adds a point every 2 s and at each epoch's end: the next comes by the end of the first
    # epoch at the latest, two epochs before the run could end, and the test holds the run still again.
    wait_for_progress(run_dir, lambda p: len(p["curve"]) > points, "a new point on the curves")
    with held(started["pid"]):
        wait_for_text(page, "#train-status", r"ui-digits: training .*images/s")
        deadline = time.monotonic() + PAGE_S  # the page redraws within 1 s
        while plot.screenshot() == before:
            assert time.monotonic() < deadline, "the curves did not change during training"
            time.sleep(0.5)
        shoot(page, "2-train-running")
        page.locator("#stop").click()  # SIGTERM: the run handles it when it goes on
        wait_for_text(page, "#train-message", r"asked to stop")
    stopped = wait_for_text(page, "#train-status", r"stopped")
    assert (runs / "ui-digits" / "checkpoints" / "last.ckpt").is_file(), first
    assert "SIGTERM: saving a checkpoint" in text_of(page, "#log")
    page.locator("#resume").click()
    wait_for_text(page, "#train-status", r"finished", timeout_s=TRAINING_S)
    shoot(page, "2-train-finished")
    assert "epoch 3/3" in text_of(page, "#train-status"), stopped

    look_at_results(page, "ui-digits", (1, 2))  # the images of digit 1 predicted as 1
    shoot(page, "3-results")

    photo = flower_photo(tmp_path)
    predict_photo(page, "ui-digits", photo)
    top = text_of(page, "#topk")
    assert re.search(r"\b\d\b", top), top  # a digit class with its probability bar
    sync_api.expect(page.locator("#predict-pictures img")).to_have_count(2)  # the image and its Grad-CAM
    shoot(page, "4-predict")


def flower_photos(folder: Path, per_class: int) -> Path:
    """Real photos: `per_class` of each of the shared 5 flower classes (128 px) in class folders, or a
    test skip where absent."""
    archive = Path(__file__).resolve().parents[2] / "shared" / "data" / "flowers5-128.tar.gz"
    if not archive.is_file():
        pytest.skip(f"real test data {archive} is not present")
    taken: dict[str, int] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            kind = Path(member.name).parent.name
            if member.isfile() and member.name.endswith(".jpg") and taken.get(kind, 0) < per_class:
                taken[kind] = taken.get(kind, 0) + 1
                tar.extract(member, folder, filter="data")
    return folder / "flowers5_128"


def flower_photo(folder: Path) -> Path:
    """One real photo (a flower), or a test skip where absent."""
    return next(flower_photos(folder, 1).rglob("*.jpg"))


def test_segmentation_end_to_end(page, server, camvid, tmp_path):
    url, runs = server
    data = small_copy(camvid, tmp_path / "camvid", 16, 4)
    page.locator("#source").get_by_text("folder").click()
    fill(page, "folder", data)
    wait_for_text(page, "#command", "data=segfolder:")  # the change is in: its emptying cannot come later
    page.locator("#check-data").click()  # CamVid marks void pixels 11: the CLI's own line says so
    wait_for_text(
        page,
        "#setup-message",
        r"vislab: error: mask .* holds \[11\]: no class \(0\.\.10\).*"
        r"put segmentation\.ignore_index=11 in 'more keys'",
    )
    fill(page, "extra", "segmentation.ignore_index=11")
    train_from_setup(page, {"epochs": 2, "batch_size": 4, "image_size": 64}, "ui-camvid")
    command = text_of(page, "#command")
    assert "data=segfolder:" in command and "optim.lr" not in command  # the task's own learning rate
    shoot(page, "1-data-and-model-segmentation")
    open_tab(page, "Train")
    page.locator("#start").click()
    wait_for_text(page, "#train-status", r"ui-camvid: finished", timeout_s=TRAINING_S)
    shoot(page, "2-train-segmentation")
    look_at_results(page, "ui-camvid", (0, 1))  # sky pixels predicted as sky... or whatever is first
    shoot(page, "3-results-segmentation")
    # The evaluation line scores best.ckpt as the run's validation did: the summary's best mIoU, exactly.
    best = json.loads((runs / "ui-camvid" / "summary.json").read_text())["best_val_miou"]
    assert f"mIoU {best:.4f}" in text_of(page, "#headline"), (best, text_of(page, "#headline"))
    sync_api.expect(page.locator("#cell-images img").first).to_be_visible()
    assert "colours" in text_of(page, "#cell-images")  # the legend: which colour marks the cell's pixels
    photo = next((data / "val" / "images").iterdir())
    copy = tmp_path / photo.name
    shutil.copy(photo, copy)
    predict_photo(page, "ui-camvid", copy)
    sync_api.expect(page.locator("#predict-pictures img")).to_have_count(3)  # overlay, mask and legend
    shoot(page, "4-predict-segmentation")


def test_bad_upload_gets_the_cli_line(page, server, tmp_path):
    url, runs = server
    fake = tmp_path / "photo.jpg"
    fake.write_text("not an image")
    open_tab(page, "Predict")
    page.locator("#predict-files input[type=file]").set_input_files(str(fake))
    page.locator("#predict").click()
    wait_for_text(page, "#predict-message", r"vislab: error: ")


def test_the_data_tab_audits_a_folder_and_applies_its_fixes_once_confirmed(page, server, cifar_jpgs):
    url, runs = server
    data = runs / ".ui" / "uploads" / "small"  # where an upload is unpacked: data the page owns
    copy_classes(cifar_jpgs / "train", data / "train", 12, 3)
    copy_classes(cifar_jpgs / "test", data / "val", 6, 3)
    original = next((data / "val").rglob("*.jpg"))
    leak = data / "train" / original.parent.name / "leak.jpg"
    Image.open(original).save(leak, quality=70)
    page.locator("#source").get_by_text("folder").click()
    fill(page, "folder", data)
    wait_for_text(page, "#command", "data=folder:")
    page.locator("#audit").click()
    summary = wait_for_text(page, "#audit-summary", r"leaks across splits: 1 image pairs", TRAINING_S)
    assert "label issues:" in summary and "remove leak.jpg" in summary
    page.locator("#audit-pictures img").first.wait_for()
    shoot(page, "1-data-audit")
    page.locator("#apply-fixes").click()  # not confirmed: nothing moves
    wait_for_text(page, "#setup-message", r"tick 'yes, move the files' first: nothing was moved")
    assert leak.is_file()
    page.locator("#apply-confirm input").check()
    page.locator("#apply-fixes").click()
    wait_for_text(page, "#setup-message", r"moved [1-9]\d* files")
    assert not leak.exists() and list((runs / "check" / "small" / "removed").rglob("leak.jpg"))
    sync_api.expect(page.locator("#apply-confirm input")).not_to_be_checked()


def test_a_photo_folder_defaults_to_pretrained_weights_with_a_switch(page, server, tmp_path):
    data = flower_photos(tmp_path, 4)
    archive = shutil.make_archive(str(tmp_path / "flowers"), "zip", data)  # as a user uploads a folder
    page.locator("#zip input[type=file]").set_input_files(archive)
    wait_for_text(page, "#zip", r"flowers\.zip: unpacked into uploads/flowers")  # said on the zip box
    wait_for_text(page, "#command", r"data=folder:.*uploads")
    resolved = wait_for_text(page, "#resolved", r"model: timm:tf_efficientnet_lite0")
    assert re.search(r"^pretrained: true$", resolved, re.M) and re.search(r"^epochs: 5$", resolved, re.M)
    assert "model=" not in text_of(page, "#command")  # a default, not typed
    wait_for_text(page, "#parameters", r"the default for this data, timm:tf_efficientnet_lite0: [\d,]+ param")
    for field, shown in (("epochs", "5"), ("batch-size", "32"), ("lr", "0.001"), ("image-size", "128")):
        placeholder = page.locator(f"#{field} input, #{field} textarea").first
        sync_api.expect(placeholder).to_have_attribute("placeholder", shown)
    shoot(page, "1-data-and-model-photos")
    page.locator("#pretrained").get_by_text("no", exact=True).click()  # the switch: from scratch
    wait_for_text(page, "#command", r"pretrained=false")
    wait_for_text(page, "#resolved", r"(?m)^pretrained: false$")
    page.locator("#check-data").click()  # the estimate is the pretrained model's, before Start
    wait_for_text(page, "#data-summary", r"5 classes")
    wait_for_text(page, "#data-summary", r"an epoch on this machine, .* for 5 epochs")


def test_the_data_panels_show_the_current_data_only(page, server, tmp_path, cifar_jpgs):
    data = tmp_path / "pets"
    copy_classes(cifar_jpgs / "train", data, 6, 2)
    page.locator("#source").get_by_text("folder").click()
    fill(page, "folder", tmp_path / "no-such-folder")
    wait_for_text(page, "#config-message", r"dataset folder not found")
    assert "data=" not in text_of(page, "#command")  # no shell line for a form that stands for no run
    page.locator("#check-data").click()
    wait_for_text(page, "#setup-message", r"vislab: error: dataset folder not found")
    fill(page, "folder", data)  # corrected: the error goes with its cause
    wait_for_text(page, "#command", "data=folder:")
    wait_for_text(page, "#setup-message", r"^\s*$")
    page.locator("#check-data").click()
    wait_for_text(page, "#data-summary", r"2 classes")
    wait_for_text(page, "#data-summary", r"an epoch on this machine")  # the time estimate, before Start
    page.locator("#source").get_by_text("built-in").click()  # other data: the folder's counts go
    wait_for_text(page, "#data-summary", r"^\s*$")
    sync_api.expect(page.locator("#samples img")).to_have_count(0)
    # A model typed as FILE.py:NAME runs no code the server was not started with (an upload may hold it).
    marker, planted = tmp_path / "payload-ran", tmp_path / "uploaded" / "evil.py"
    planted.parent.mkdir()
    planted.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    field = page.locator("#model input").first
    field.fill(f"{planted}:net")
    field.press("Enter")
    wait_for_text(page, "#config-message", r"this page imports no code of its own accord")
    assert not marker.exists()


def test_a_grid_started_from_the_form_is_one_group_in_results(page, server):
    url, runs = server
    fill(page, "epochs", 1)
    wait_for_text(page, "#command", r"\bepochs=1\b")
    fill(page, "run-name", "ui-grid")
    wait_for_text(page, "#command", r"\bname=ui-grid\b")
    page.get_by_text("Sweep: train a grid of runs").click()
    field = page.locator("#grid-models input").first
    for model in ("mlp", "small_cnn"):  # typed, and taken with Enter, as in any multi-choice field
        field.fill(model)
        field.press("Enter")
    page.keyboard.press("Escape")
    fill(page, "grid-lrs", "0.05, 0.1")
    page.locator("#grid-start").click()
    queued = wait_for_text(page, "#setup-message", r"queued: vislab sweep")
    assert "model=grid(mlp,small_cnn)" in queued and "optim.lr=grid(0.05,0.1)" in queued
    assert "--study ui-grid" in queued and "epochs=1" in queued
    shoot(page, "5-grid-queued")
    table = runs / "ui-grid" / "sweep.json"
    deadline = time.monotonic() + TRAINING_S
    while not (table.is_file() and json.loads(table.read_text())["done"] == 4):
        assert time.monotonic() < deadline, "the grid's four trials did not finish"
        time.sleep(0.5)

    open_tab(page, "Results")
    page.get_by_role("button", name="Refresh the list").click()
    choose(page, "results-sweep", "ui-grid")
    wait_for_text(page, "#sweep-line", r"ui-grid.*4 of 4 trials done.*best: trial \d")
    wait_for_text(page, "#headline", r"ui-grid/trial-\d")  # the best trial, opened like any run
    page.locator('#sweep-table [data-testid="cell-2-0"]').click()  # the third trial's row
    wait_for_text(page, "#headline", r"ui-grid/trial-2")
    shoot(page, "5-results-sweep")


def test_class_names_in_hangul_are_drawn_on_the_page(page, server, tmp_path, cifar_jpgs):
    """A folder whose classes are named in Korean: the counts table shows the names, and the page draws
    them with a font that has Hangul (the packaged Noto Sans CJK, served by vislab, where the browser's
    machine has none, as on a fresh Linux)."""
    data = tmp_path / "hangul"
    for english, korean in (("airplane", "비행기"), ("automobile", "자동차")):
        (data / korean).mkdir(parents=True)
        for image in sorted((cifar_jpgs / "train" / english).iterdir())[:6]:
            (data / korean / image.name).write_bytes(image.read_bytes())
    page.locator("#source").get_by_text("folder").click()
    fill(page, "folder", data)
    wait_for_text(page, "#command", "data=folder:")
    page.locator("#check-data").click()
    wait_for_text(page, "#counts", "비행기")
    page.locator("#samples img").nth(7).wait_for()
    fonts = page.evaluate(
        """async () => {
            await document.fonts.ready;  // the packaged font is fetched once the page has opened
            const families = new Set();
            const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
            while (walker.nextNode())
                if (/[\\uac00-\\ud7af]/.test(walker.currentNode.textContent))
                    families.add(getComputedStyle(walker.currentNode.parentElement).fontFamily);
            return {families: [...families], faces: [...document.fonts].map(f => [f.family, f.status])};
        }"""
    )
    # Every element with Hangul (the table's cells, the samples' captions) names the packaged font before
    # a generic family (Chromium draws boxes rather than fall back from one), and the font was loaded
    # from this server when the page opened.
    for family in fonts["families"]:
        names = [name.strip() for name in family.split(",")]
        generic = min(names.index(g) for g in ("sans-serif", "serif", "monospace") if g in names)
        assert "vislab-cjk" in names[:generic], fonts
    assert ["vislab-cjk", "loaded"] in fonts["faces"], fonts
    shoot(page, "1-data-hangul")
