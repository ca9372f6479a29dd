"""Property-based tests: whatever a user types as overrides, writes as a YAML recipe or hands over as image
and mask bytes, vislab ends in a result or a VislabError (one line on the CLI), never another exception."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vislab.config import dotted_keys
from vislab.data.images import open_image
from vislab.data.segmentation import read_mask
from vislab.errors import VislabError
from vislab.tasks import load_config

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

KEYS = dotted_keys()
VALUES = st.one_of(
    st.sampled_from(
        ["0", "-1", "1e9", "nan", "inf", "true", "null", "[]", "{}", "[1, 2]", "{a: 1}", "'", "[", "x: y"]
    ),
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=20),
    st.sampled_from(["digits", "voc2012", "folder:/nonexistent", "segfolder:", "resnet20", "timm:resnet18"]),
)
WORDS = st.one_of(
    st.builds(lambda key, value: f"{key}={value}", st.sampled_from(KEYS), VALUES),
    st.text(max_size=30),  # anything at all: no '=', unknown keys, odd characters
)


def outcome(make) -> None:
    try:
        make()
    except VislabError as error:
        assert str(error) and "\n" not in str(error).strip()


@FUZZ
@given(st.lists(WORDS, max_size=5))
def test_any_overrides_give_a_config_or_a_one_line_error(words):
    outcome(lambda: load_config(None, words))


YAML_TEXT = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.builds(lambda key, value: f"{key.split('.')[0]}: {value}", st.sampled_from(KEYS), VALUES)
    ).map("\n".join),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
        ),
        max_leaves=10,
    ).map(repr),
)


@FUZZ
@given(YAML_TEXT)
def test_any_yaml_recipe_gives_a_config_or_a_one_line_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("recipe") / "recipe.yaml"
    path.write_text(text)
    outcome(lambda: load_config(path, []))


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


RNG = np.random.default_rng(0)
SEEDS = {
    "photo.jpg": encoded(Image.fromarray(RNG.integers(0, 255, (24, 32, 3), dtype=np.uint8)), "JPEG"),
    "photo.png": encoded(Image.fromarray(RNG.integers(0, 255, (24, 32, 3), dtype=np.uint8)), "PNG"),
    "mask.png": encoded(Image.fromarray(RNG.integers(0, 12, (24, 32), dtype=np.uint8), "L"), "PNG"),
}


@st.composite
def damaged(draw, original: bytes) -> bytes:
    """The file cut short, with bytes overwritten, inserted or random from the start."""
    data = bytearray(original)
    for _ in range(draw(st.integers(0, 6))):
        where = draw(st.integers(0, max(0, len(data) - 1)))
        action = draw(st.sampled_from(["flip", "insert", "cut"]))
        if action == "flip" and data:
            data[where] = draw(st.integers(0, 255))
        elif action == "insert":
            data[where:where] = draw(st.binary(max_size=16))
        else:
            del data[where:]
    return bytes(data) if draw(st.booleans()) else draw(st.binary(max_size=64))


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_damaged_image_and_mask_bytes_decode_or_give_a_one_line_error(tmp_path_factory, name):
    @FUZZ
    @given(damaged(SEEDS[name]))
    def check(data):
        path = tmp_path_factory.mktemp("bytes") / name
        path.write_bytes(data)
        read = (lambda: read_mask(path)) if name.startswith("mask") else (lambda: open_image(path, 3).size)
        outcome(read)

    check()
