"""Exact duplicates (the same bytes) and near duplicates (re-encoded, resized, slightly cropped or
mirrored copies): perceptual hashes (imagehash's pHash, of each image and of its mirror image) propose
pairs, and the correlation of 16x16 grayscale thumbnails confirms them, so that two different photos
that happen to share a hash are not called copies."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from vislab.check.inventory import Item

HASH_DISTANCE = 12  # of 64 bits: candidates
THUMBNAIL_CORRELATION = 0.9  # confirmed copies
BLOCK = 256  # rows of the pairwise comparison at a time
THUMBNAIL = 16


@dataclass
class Duplicate:
    first: int  # item indices, first < second
    second: int
    kind: str  # exact, near, mirrored
    leak: bool  # the two lie in different splits


def popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of uint64 values."""
    bytes_view = values.view(np.uint8).reshape(*values.shape, 8)
    return np.unpackbits(bytes_view, axis=-1).sum(-1)


def find_duplicates(items: list[Item]) -> list[Duplicate]:
    usable = [i for i, item in enumerate(items) if item.problem is None and item.thumbnail is not None]
    found: dict[tuple[int, int], str] = {}
    by_digest = defaultdict(list)
    for i in usable:
        by_digest[items[i].digest].append(i)
    for group in by_digest.values():
        for other in group[1:]:
            found[(group[0], other)] = "exact"
    # Below the thumbnail's own 16x16, hashes and thumbnails say too little (every 8x8 "1" looks alike):
    # such images are only compared for exact copies.
    add_near_copies(items, [i for i in usable if min(items[i].size) >= THUMBNAIL], found)
    return [Duplicate(a, b, kind, items[a].split != items[b].split) for (a, b), kind in sorted(found.items())]


def add_near_copies(items: list[Item], usable: list[int], found: dict[tuple[int, int], str]) -> None:
    """Adds the near and mirrored copies among `usable` items to `found` ((first, second) -> kind)."""
    if len(usable) < 2:
        return
    hashes = np.array([items[i].hashes[0] for i in usable], dtype=np.uint64)
    mirrored = np.array([items[i].hashes[1] for i in usable], dtype=np.uint64)
    thumbnails = np.stack([items[i].thumbnail for i in usable])
    for start in range(0, len(usable), BLOCK):
        block = slice(start, start + BLOCK)
        for kind, against, flip in (("near", hashes, False), ("mirrored", mirrored, True)):
            close = popcount(hashes[block, None] ^ against[None, :]) <= HASH_DISTANCE
            rows, columns = np.nonzero(close)
            rows += start
            keep = rows < columns
            for a, b in zip(rows[keep], columns[keep]):
                pair = (usable[a], usable[b])
                if pair in found:
                    continue
                other = thumbnails[b].reshape(16, 16)[:, ::-1].ravel() if flip else thumbnails[b]
                if float(thumbnails[a] @ other) >= THUMBNAIL_CORRELATION:
                    found[pair] = kind
