"""Reading image files into uint8 tensors, with errors that name the file."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vislab.errors import VislabError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def image_files(target: Path) -> list[Path]:
    """One image, or every image under a folder (sorted), as `vislab predict` takes them."""
    if not target.exists():
        raise VislabError(f"no such image or folder: {target}")
    if target.is_file():
        return [target]
    files = sorted(p for p in target.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise VislabError(f"no images in {target}")
    return files


@contextmanager
def opened(path: Path, kind: str = "image") -> Iterator[Image.Image]:
    """`Image.open` for files from anywhere: every way a file can be unreadable (missing, empty, truncated,
    not an image whatever its extension says, malformed in a way PIL trips over) becomes one error naming
    it, and images over PIL's pixel limit (decompression bombs) are refused before they are decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. palette transparency: the conversions below are intended
            with Image.open(path) as image:  # reads the header only
                if image.width * image.height > Image.MAX_IMAGE_PIXELS:
                    raise Image.DecompressionBombError
                yield image
    except VislabError:
        raise
    except FileNotFoundError:
        raise VislabError(f"{kind} not found: {path}") from None
    except Image.DecompressionBombError:
        limit = f"over {Image.MAX_IMAGE_PIXELS:,} pixels"
        raise VislabError(f"{kind} {path} has {limit}: refused as a possible decompression bomb") from None
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, struct.error) for bad bytes
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise VislabError(f"cannot read {kind} {path}: {reason}") from None


def open_image(path: Path, channels: int) -> Image.Image:
    """Opens and fully decodes an image as RGB (3 channels) or grayscale (1), whatever its mode:
    palette, RGBA, CMYK, 16-bit and grayscale files all convert."""
    with opened(path) as image:
        image.load()
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = composite_on_white(image)
        return image.convert("L" if channels == 1 else "RGB")


def composite_on_white(image: Image.Image) -> Image.Image:
    """Transparent pixels become white rather than whatever colour hides under alpha 0."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as a CHW uint8 tensor."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resizes the shorter side to `size` and crops the centre square (the usual evaluation transform)."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    resized = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BICUBIC)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def read_image(path: Path, channels: int, size: int | None = None) -> torch.Tensor:
    image = open_image(path, channels)
    return to_tensor(resize_center_crop(image, size) if size else image)


def read_images(
    paths: list[Path], channels: int, size: int | None, skip_bad: bool
) -> tuple[list[torch.Tensor | None], list[Path]]:
    """Decodes many images in parallel threads (PIL releases the GIL while decoding).
    Returns one tensor per path (None for skipped ones) and the paths that could not be read."""

    def read(path: Path) -> torch.Tensor | None:
        try:
            return read_image(path, channels, size)
        except VislabError:
            if not skip_bad:
                raise
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        tensors = list(pool.map(read, paths, chunksize=64))
    bad = [path for path, tensor in zip(paths, tensors) if tensor is None]
    return tensors, bad


def resize_shorter(image: torch.Tensor, size: int, labels: bool = False) -> torch.Tensor:
    """A uint8 (C, H, W) image, or an (H, W) label mask, with its shorter side at `size`: images bilinear
    with antialiasing, masks nearest: the one resize of segmentation's validation, eval, predict
    and export."""
    height, width = image.shape[-2:]
    scale = size / min(height, width)
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    if shape == (height, width):
        return image
    if labels:
        return F.interpolate(image[None, None].float(), size=shape, mode="nearest-exact")[0, 0].to(
            image.dtype
        )
    resized = F.interpolate(
        image[None].float(), size=shape, mode="bilinear", antialias=True, align_corners=False
    )
    return resized[0].round().clamp(0, 255).to(torch.uint8)


def normalise(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 (N, C, H, W) images as float model input: scaled to 0..1, then standardised per channel."""
    mean_, std_ = (torch.tensor(v, device=images.device).view(1, -1, 1, 1) for v in (mean, std))
    return (images.float() / 255 - mean_) / std_
