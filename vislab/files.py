"""Writing files so that nothing is ever half-written: a reader, a resumed run or the next command sees the
old file or the new one. Everything vislab writes for a user goes through `replacing`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary name beside `path` to write a file or a folder to, renamed to `path` when the block
    ends and removed when it fails or is stopped (a stop signal raises where the program stands): readers
    see the old file or the new one, never half of one."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")  # the suffix kept: readers go by it
    remove(temporary)  # left by a process that was killed outright
    try:
        yield temporary
        if temporary.is_dir() and path.is_dir():  # a folder cannot be renamed over another
            old = path.with_name(f".{path.name}.old")
            remove(old)
            path.rename(old)
            temporary.rename(path)
            remove(old)
        else:
            temporary.replace(path)
    except BaseException:
        remove(temporary)
        raise


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write_atomically(path: Path, text: str) -> None:
    """Writes a temporary file and renames it into place: readers see the old file or the new, never half."""
    with replacing(path) as temporary:
        temporary.write_text(text)


def write_json(path: Path, data: dict) -> None:
    write_atomically(path, json.dumps(data, indent=2) + "\n")
