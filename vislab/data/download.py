"""Downloads for datasets that torchvision does not fetch: resumable (HTTP Range), with a progress bar
and an MD5 check, then extracted safely (no paths outside the target folder)."""

from __future__ import annotations

import gzip
import hashlib
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from vislab.errors import VislabError

CHUNK = 1 << 20


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, target: Path, md5: str | None = None, timeout: float = 30.0) -> Path:
    """Downloads `url` to `target`. An interrupted download leaves `target.part`, which the next call
    continues from where it stopped; the finished file must match `md5`."""
    if target.is_file() and (md5 is None or md5_of(target) == md5):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = response.status == 206
            mode = "ab" if resumed else "wb"  # a server that ignores Range sends the whole file again
            total = int(response.headers.get("Content-Length", 0)) + (have if resumed else 0)
            with (
                open(partial, mode) as file,
                tqdm(
                    total=total or None,
                    initial=have if resumed else 0,
                    unit="B",
                    unit_scale=True,
                    desc=target.name,
                ) as bar,
            ):
                for block in iter(lambda: response.read(CHUNK), b""):
                    file.write(block)
                    bar.update(len(block))
            if total and partial.stat().st_size < total:
                raise VislabError(f"download of {url} stopped early; run again to resume it")
    except (urllib.error.URLError, OSError) as error:
        raise VislabError(
            f"could not download {url} ({getattr(error, 'reason', error)}); run again to resume"
        ) from None
    if md5 is not None and md5_of(partial) != md5:
        partial.unlink()
        raise VislabError(f"{url} downloaded with the wrong MD5 checksum; the file was deleted, run again")
    partial.replace(target)
    return target


GZIP_MAGIC = b"\x1f\x8b"


def check_gzip(archive: Path) -> None:
    """Reads a gzip stream to its end, where its CRC-32 and length are checked: tarfile stops reading at
    the tar's end marker and never gets there."""
    with gzip.open(archive) as stream:
        while stream.read(CHUNK):
            pass


def extract(archive: Path, folder: Path, delete_if_damaged: bool = False) -> None:
    """Unpacks a .zip or .tar(.gz) archive into `folder`, refusing members that would land outside it.
    Every member is read whole, so a damaged archive fails its CRC-32 checks here; with
    `delete_if_damaged` it is deleted, so that the next run downloads it again."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                root = folder.resolve()
                for name in zipped.namelist():
                    if not (folder / name).resolve().is_relative_to(root):
                        raise VislabError(f"{archive} holds a path outside its folder: {name}")
                zipped.extractall(folder)
            return
        with open(archive, "rb") as file:
            gzipped = file.read(2) == GZIP_MAGIC
        if gzipped:
            check_gzip(archive)
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as error:
        if delete_if_damaged:
            archive.unlink(missing_ok=True)
        again = "; it was deleted: run again to download it again" if delete_if_damaged else ""
        raise VislabError(f"cannot extract {archive}: {error}{again}") from None
