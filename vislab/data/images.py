"""Reading images (files, and PIL images, arrays and tensors from Python) into uint8 tensors, with errors that
name the file."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode

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
        image = ImageOps.exif_transpose(image)  # upright: phones store photos turned, with a tag to undo it
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = composite_on_white(image)
        return image.convert("L" if channels == 1 else "RGB")


EXIF_ORIENTATION = 0x0112
TURNED = {5, 6, 7, 8}  # EXIF orientations whose upright picture is the stored one turned by 90 degrees


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image as it is shown, read from its header alone."""
    turned = image.getexif().get(EXIF_ORIENTATION, 1) in TURNED
    return (image.height, image.width) if turned else image.size


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


def shorter_side(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) scaled so that the shorter side is `size`."""
    scale = size / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


RESIZE_CHUNK = 1024  # images resized by one call


def resize(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The one resize of vislab's images: uint8 (..., C, H, W) to `shape`, bilinear and antialiased like
    PIL's (torchvision's uint8 kernel: within one level of PIL's, ten times faster than float maths)."""
    if tuple(image.shape[-2:]) == tuple(shape):
        return image
    if image.ndim == 4 and len(image) > RESIZE_CHUNK:  # a whole dataset: a chunk at a time, so that a
        # machine without torchvision's uint8 kernel (float maths) never holds all of it as floats
        out = torch.empty((*image.shape[:-2], *shape), dtype=image.dtype)
        for start in range(0, len(image), RESIZE_CHUNK):
            out[start : start + RESIZE_CHUNK] = resize(image[start : start + RESIZE_CHUNK], shape)
        return out
    return TF.resize(image, list(shape), interpolation=InterpolationMode.BILINEAR, antialias=True)


def resize_mask(mask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(..., H, W) label masks at `shape`, nearest neighbour: labels are never blended."""
    if tuple(mask.shape[-2:]) == tuple(shape):
        return mask
    flat = mask.reshape(-1, 1, *mask.shape[-2:]).float()
    resized = F.interpolate(flat, size=tuple(shape), mode="nearest-exact")
    return resized.reshape(*mask.shape[:-2], *shape).to(mask.dtype)


def fit(image: torch.Tensor, size: int | None, crop: bool = True) -> torch.Tensor:
    """A uint8 (..., C, H, W) image with its shorter side at `size` and, with `crop`, the centre square:
    classification's input; segmentation keeps the whole image (`crop=False`). None: as it is."""
    if size is None:
        return image
    image = resize(image, shorter_side(*image.shape[-2:], size))
    if not crop:
        return image
    height, width = image.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return image[..., top : top + size, left : left + size]


def read_image(path: Path, channels: int, size: int | None = None) -> torch.Tensor:
    """An image file as classification's input: upright, in the colour mode, `fit` to `size` square."""
    return fit(to_tensor(open_image(path, channels)), size)


JPEG_CHUNK = 512  # files decoded by one torchvision call


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, walking its segments as libjpeg does; None when the
    bytes are not a JPEG that is well formed up to that header."""
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 9 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            return int.from_bytes(data[at + 7 : at + 9], "big"), int.from_bytes(data[at + 5 : at + 7], "big")
        else:
            at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None


def jpeg_as_is(path: Path, size: int | None) -> torch.Tensor | None:
    """The bytes of a JPEG that needs no resizing to `size` (and is within PIL's pixel limit), else None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    found = jpeg_size(data)
    if found is None or 0 in found or found[0] * found[1] > Image.MAX_IMAGE_PIXELS:
        return None
    if size is not None and found != (size, size):
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_jpegs_as_is(paths: list[Path], size: int | None) -> list[torch.Tensor | None]:
    """The RGB JPEGs among `paths` that need no resizing, decoded in batches by torchvision's libjpeg-turbo
    binding: pixel for pixel what PIL gives (grayscale and CMYK files included), at about 65 us an image
    where PIL takes 250 us for small ones, its per-image Python work dominating and not running in parallel
    threads (loading CIFAR-10's 60,000 files: 7 s instead of 37). None for the others, and for every file of a
    batch where one cannot be decoded: PIL then reads them or names the bad one."""
    tensors: list[torch.Tensor | None] = [None] * len(paths)
    for start in range(0, len(paths), JPEG_CHUNK):
        encoded = {}
        for index in range(start, min(start + JPEG_CHUNK, len(paths))):
            data = jpeg_as_is(paths[index], size)
            if data is not None:
                encoded[index] = data
        try:
            decoded = (
                decode_jpeg(list(encoded.values()), mode=ImageReadMode.RGB, apply_exif_orientation=True)
                if encoded
                else []
            )
        except RuntimeError:
            continue
        for index, tensor in zip(encoded, decoded):
            tensors[index] = tensor
    return tensors


def read_images(
    paths: list[Path], channels: int, size: int | None, skip_bad: bool
) -> tuple[list[torch.Tensor | None], list[Path]]:
    """Decodes many images: JPEGs that need no resizing in batches (`decode_jpegs_as_is`), the rest with
    PIL in parallel threads (it releases the GIL while decoding, which pays for large images).
    Returns one tensor per path (None for skipped ones) and the paths that could not be read."""

    def read(path: Path) -> torch.Tensor | None:
        try:
            return read_image(path, channels, size)
        except VislabError:
            if not skip_bad:
                raise
            return None

    tensors = decode_jpegs_as_is(paths, size) if channels == 3 else [None] * len(paths)
    rest = [index for index, tensor in enumerate(tensors) if tensor is None]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for index, tensor in zip(rest, pool.map(read, [paths[i] for i in rest], chunksize=64)):
            tensors[index] = tensor
    bad = [path for path, tensor in zip(paths, tensors) if tensor is None]
    return tensors, bad


def as_pil(image: Any) -> Image.Image:
    """A PIL image of an array (HxW or HxWxC, uint8) or a tensor (CxHxW, uint8 or float in 0..1)."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        if image.ndim != 3:
            raise VislabError(f"a tensor image must be CxHxW, got shape {tuple(image.shape)}")
        if image.is_floating_point():
            image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        image = image.permute(1, 2, 0).cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise VislabError(
            f"cannot read an image from a {type(image).__name__}: give paths, PIL images, arrays or tensors"
        )
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] > 4):
        raise VislabError(f"an array image must be HxW or HxWxC uint8, got {image.dtype} {image.shape}")
    return Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)


def decode_any(image: Any, channels: int) -> torch.Tensor:
    """A CxHxW uint8 tensor of a file, PIL image, array or tensor, read as files are: upright, transparent
    pixels on white, in the model's colour mode, at its own size."""
    if isinstance(image, (str, Path)):
        return to_tensor(open_image(Path(image), channels))
    picture = ImageOps.exif_transpose(as_pil(image))
    if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
        picture = composite_on_white(picture)
    return to_tensor(picture.convert("L" if channels == 1 else "RGB"))
