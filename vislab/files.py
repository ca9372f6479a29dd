"""Writing files so that nothing is ever half-written: a reader, a resumed run or the next command sees the
old file or the new one. Everything vislab writes for a user goes through `replacing`."""

from __future__ import annotations

import glob
import json
import os
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
    # A name of this process's own (two processes may write one file: the web UI's jobs, a sweep's
    # workers), the suffix kept: readers go by it.
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    for stale in path.parent.glob(f".{glob.escape(path.stem)}.*.tmp{glob.escape(path.suffix)}"):
        if not process_alive(stale.name.removeprefix(f".{path.stem}.").split(".")[0]):
            remove(stale)  # left by a process that was killed outright
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


def process_alive(pid: int | str) -> bool:
    """Whether a process of this id runs on this machine (one of another user's counts as running)."""
    if not str(pid).isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def boot_id() -> str:
    """This machine's boot: a process id recorded before a restart may belong to another process since."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_identity(pid: int | str) -> str | None:
    """A process beyond its id: the boot and its start time (clock ticks since boot), so that an id that
    another process took after a kill or a restart never passes for the first. None where the process is
    gone, or where the system has no /proc."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    return f"{boot_id()}:{stat.rsplit(')', 1)[1].split()[19]}"  # field 22, after the command's name


def same_process(pid: int | str | None, identity: str | None) -> bool:
    """Whether `pid` is alive and is still the process recorded as `identity` (where none could be
    recorded: alive)."""
    if not pid or not process_alive(pid):
        return False
    return identity is None or process_identity(pid) in (identity, None)


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
