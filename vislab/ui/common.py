"""What the tabs share: the runs folder and job queue, and one way to turn bad input into the one-line
message the CLI would print, shown on the page instead of a traceback."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from vislab.errors import RunStopped, VislabError, describe_os_error
from vislab.ui.jobs import JobQueue


@dataclass
class Context:
    runs_dir: Path
    jobs: JobQueue


def page_words(text: str) -> str:
    """A message or log as the page shows it: where it tells a shell user what to type, what to do on
    the page instead (the button to press, the field to put a key in)."""
    text = re.sub(r"continue with: vislab train --resume [^;\n]+", "press Resume to continue", text)
    text = text.replace("see 'vislab models'", "see the model list").replace(
        "see 'vislab datasets'", "see the built-in datasets"
    )
    return re.sub(r"\bset ([\w.]+=[^\s,;()]+)", r"put \1 in 'more keys'", text)


def failure(text: str) -> str:
    return f"vislab: error: {page_words(text)}"


def guarded(others: int, cleared: bool = False):
    """For an event whose first output is a message box: the handler's outputs as they are, or, when it
    raises on bad input, the error line in the message box and the other `others` outputs untouched (or,
    with `cleared`, emptied: what they showed belonged to the input that is no longer there)."""

    def wrap(handler):
        @functools.wraps(handler)
        def run(*args, **kwargs):
            try:
                return handler(*args, **kwargs)
            except (VislabError, RunStopped) as error:
                text = failure(str(error))
            except OSError as error:
                text = failure(describe_os_error(error))
            return (text, *[gr.update(value=None) if cleared else gr.update()] * others) if others else text

        return run

    return wrap


def run_folders(runs_dir: Path) -> list[Path]:
    """The run folders under runs_dir (those with a config.yaml), newest first."""
    if not runs_dir.is_dir():
        return []
    runs = [p for p in runs_dir.iterdir() if (p / "config.yaml").is_file()]
    return sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)
