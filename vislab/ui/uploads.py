"""Files that come from the browser: a zip of class folders unpacked safely, and typed paths checked.
An upload is untrusted: nothing in it runs, no member may land outside its folder, and its declared and
real sizes are capped (a zip bomb stops at the cap, however its headers lie)."""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from vislab.errors import VislabError

MAX_UNPACKED_BYTES = 2 * 2**30
MAX_MEMBERS = 200_000
MAX_RATIO = 200  # images compress little; a member that expands more than this is refused


def unpack_zip(archive: Path, target: Path, max_bytes: int = MAX_UNPACKED_BYTES) -> Path:
    """Unpacks `archive` into the new folder `target` and returns the dataset root inside it."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.is_dir()]
            check_members(archive, members, max_bytes)
            target.mkdir(parents=True)
            try:
                written = 0
                for member in members:
                    path = target.joinpath(*PurePosixPath(member.filename).parts)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with zipped.open(member) as source, open(path, "wb") as out:
                        while chunk := source.read(1 << 20):
                            written += len(chunk)
                            if written > max_bytes:
                                raise VislabError(f"{archive.name} unpacks to more than {max_bytes:,} bytes")
                            out.write(chunk)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
    except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as error:
        raise VislabError(f"{archive.name} is not a readable zip file: {error}") from None
    return dataset_root(target)


def check_members(archive: Path, members: list[zipfile.ZipInfo], max_bytes: int) -> None:
    if len(members) > MAX_MEMBERS:
        raise VislabError(f"{archive.name} has {len(members):,} files; at most {MAX_MEMBERS:,} are accepted")
    if sum(m.file_size for m in members) > max_bytes:
        raise VislabError(f"{archive.name} unpacks to more than {max_bytes:,} bytes")
    for member in members:
        name = PurePosixPath(member.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or ":" in member.filename:
            raise VislabError(f"{archive.name} holds a path outside its folder: {member.filename!r}")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise VislabError(f"{archive.name} holds a symbolic link: {member.filename!r}")
        ratio = member.file_size // max(member.compress_size, 1)
        if ratio > MAX_RATIO and member.file_size > 1 << 20:
            raise VislabError(f"{archive.name}: {member.filename!r} expands {ratio}-fold (a zip bomb?)")


def dataset_root(folder: Path) -> Path:
    """The folder holding the data: descends through single wrapper folders (my_data.zip/my_data/...)."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(entries) == 1 and entries[0].is_dir() and not is_dataset_folder(folder):
            folder = entries[0]
            continue
        return folder


def is_dataset_folder(folder: Path) -> bool:
    return (folder / "train").is_dir() or (folder / "classes.txt").is_file()


def data_spec(path: str | Path) -> str:
    """The `data=` value for a folder: `segfolder:` when it holds images with masks and classes.txt,
    else `folder:` (class folders); a path that is not a folder is an error naming it."""
    if not str(path or "").strip():
        raise VislabError("type the dataset folder's path")
    folder = Path(path).expanduser()
    if not folder.exists():
        raise VislabError(f"dataset folder not found: {folder}")
    if not folder.is_dir():
        raise VislabError(f"dataset path is not a folder: {folder}")
    folder = folder.resolve()
    segmentation = (folder / "classes.txt").is_file() or (folder / "train" / "masks").is_dir()
    return f"{'segfolder' if segmentation else 'folder'}:{folder}"


def uploads_folder(runs_dir: Path) -> Path:
    """Where the page unpacks uploaded zips: the only data it may change."""
    return runs_dir / ".ui" / "uploads"


def inside(path: str | Path, root: Path) -> bool:
    return Path(path).expanduser().resolve().is_relative_to(root.resolve())
