"""Small HTML pieces for Jupyter: the `_repr_html_` of runs, metrics and predictions (tables, figures and
images inlined as PNG data)."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from PIL import Image


def html_table(values: dict) -> str:
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
        f"<td>{html.escape(f'{v:.4f}' if isinstance(v, float) else str(v))}</td></tr>"
        for k, v in values.items()
    )
    return f"<table>{rows}</table>"


def png_html(data: bytes, style: str) -> str:
    return f"<img src='data:image/png;base64,{base64.b64encode(data).decode()}' style='{style}'>"


def figure_html(figure, width: int) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=70)
    return png_html(buffer.getvalue(), f"max-width:{width}px")


def image_html(picture: np.ndarray, side: int = 96) -> str:
    """A small image: a large one shrunk (photos, segmentation overlays), a small one scaled up without
    blurring (8x8 digits stay readable)."""
    image = Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture)
    style = f"width:{side}px;image-rendering:pixelated"
    if max(image.size) > 2 * side:
        image.thumbnail((2 * side, 2 * side))
        style = f"width:{image.width}px"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return png_html(buffer.getvalue(), style)
