"""`vislab ui`: the web app. Four tabs (data & model, train, results, predict) over the same functions as
the CLI; it binds 127.0.0.1 unless asked otherwise, serves files only from the runs folder, and loads
nothing from the network (system fonts, Gradio's bundled scripts, no analytics)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import quote

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402 (after the analytics switch, which Gradio reads on import)

from vislab import plugins  # noqa: E402
from vislab.reports.plots import packaged_cjk_font  # noqa: E402
from vislab.ui import predict_tab, results_tab, setup_tab, train_tab  # noqa: E402
from vislab.ui.common import Context  # noqa: E402
from vislab.ui.jobs import JobQueue  # noqa: E402

MAX_UPLOAD = "500mb"  # per file; zips are also capped on the bytes they unpack to
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_app(runs_dir: Path) -> gr.Blocks:
    context = Context(runs_dir.resolve(), JobQueue(runs_dir.resolve()))
    with gr.Blocks(title="vislab", analytics_enabled=False) as app:
        gr.Markdown(f"## vislab · runs in `{context.runs_dir}`")
        with gr.Tabs():
            with gr.Tab("Data & model", id="setup"):
                setup = setup_tab.build(context)
            with gr.Tab("Train", id="train"):
                train_tab.build(context, setup)
            with gr.Tab("Results", id="results"):
                results_tab.build(context)
            with gr.Tab("Predict", id="predict"):
                predict_tab.build(context)
        app.load(setup.resolve_defaults, None, setup.shown)
    return app


CJK_FAMILY = "vislab-cjk"
# Hangul (jamo, compatibility jamo, syllables), CJK punctuation, kana, Han and full-width forms.
CJK_RANGES = (
    "U+1100-11FF, U+2E80-2FDF, U+3000-4DBF, U+4E00-9FFF, U+A960-A97F, U+AC00-D7FF, U+F900-FAFF, U+FF00-FFEF"
)


def theme() -> gr.themes.Theme:
    """Gradio's default look with the system's fonts (its own theme would fetch fonts from Google), then
    the packaged CJK font for characters the system's fonts lack: before the generic family, which
    Chromium does not fall back from (it draws boxes)."""
    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", CJK_FAMILY, "sans-serif"],
        font_mono=["ui-monospace", CJK_FAMILY, "monospace"],
    )


def cjk_font_face() -> tuple[str, list[str]]:
    """A script for the page's head that gives the browser the Noto Sans CJK of vislab's figures, for class
    names in Hangul, kana or Han where the browser's machine has no font for them (a fresh Linux). It is
    loaded as the page opens, before anything it shows can need it: Chromium does not redraw text laid out
    while a font was still loading (fetched when a name first needed it, names stayed boxes). Only the
    characters of CJK_RANGES use it."""
    font = packaged_cjk_font()
    if font is None:
        return "", []
    source = 'url("/gradio_api/file=' + quote(font.as_posix()) + '")'  # any path: spaces, brackets
    script = (
        f"<script>const vislabCjk = new FontFace({json.dumps(CJK_FAMILY)}, {json.dumps(source)}, "
        f"{{unicodeRange: {json.dumps(CJK_RANGES)}}});"
        "document.fonts.add(vislabCjk); vislabCjk.load();</script>"
    )
    return script, [str(font)]


# Gradio lays a white box over a chosen cell's text; the confusion matrix's counts are drawn in white on
# their dark shades, so a clicked cell went blank: its own colour stays.
CSS = "#confusion .cell-selected span.text { background: transparent !important; }"


def serve(runs_dir: Path, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> gr.Blocks:
    if host not in LOOPBACK:
        print(
            f"vislab: warning: serving on {host}: anyone who can reach this machine on port {port} can "
            "train, read runs and upload files (prefer an SSH tunnel: docs/ui.md)",
            file=sys.stderr,
        )
    runs_dir.mkdir(parents=True, exist_ok=True)
    plugins.lock(
        "this page imports no code of its own accord; to train a model of yours here, start the page with "
        "vislab ui --import FILE.py (or a module)"
    )
    app = build_app(runs_dir)
    app.queue(default_concurrency_limit=4)
    font_script, font_file = cjk_font_face()
    app.launch(
        server_name=host,
        server_port=port,
        allowed_paths=[str(runs_dir.resolve()), *font_file],
        head=font_script,
        css=CSS,
        max_file_size=MAX_UPLOAD,
        prevent_thread_lock=not block,
        quiet=False,
        theme=theme(),
        footer_links=["settings"],
    )
    return app
