"""Search spaces written as config values: `grid(a,b)`, `choice(a,b)`, `uniform(lo,hi)`, `loguniform(lo,hi)`,
`int(lo,hi)`. `split_space` separates a sweep's keys into the searched ones and the ones every trial shares;
each space turns into one Optuna `suggest_*` call."""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from vislab.errors import VislabError

SPACE = re.compile(r"^\s*(grid|choice|uniform|loguniform|int)\s*\((.*)\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Space:
    """One searched key: `kind` is grid, choice, uniform, loguniform or int; `values` the listed values, or
    (lo, hi) for the ranges."""

    kind: str
    values: tuple

    def __str__(self) -> str:
        return f"{self.kind}({','.join(map(str, self.values))})"

    @property
    def is_grid(self) -> bool:
        return self.kind == "grid"

    def suggest(self, trial, key: str) -> Any:
        """The trial's value of `key`: sampled, or the one already stored for a trial that resumes."""
        if self.kind in ("grid", "choice"):
            return trial.suggest_categorical(key, list(self.values))
        lo, hi = self.values
        if self.kind == "int":
            return trial.suggest_int(key, lo, hi)
        return trial.suggest_float(key, lo, hi, log=self.kind == "loguniform")


def scalar(text: str) -> Any:
    """A listed value as `key=value` reads it: 0.1 and 1e-3 numbers, true a bool, mlp text."""
    text = text.strip()
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as text; a space means the number
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return text if isinstance(value, (dict, list)) or value is None else value


def parse_space(key: str, value: Any) -> Space | None:
    """The space a value writes, None for a plain value; a malformed space is one line naming the key."""
    if isinstance(value, Space):
        return value
    match = SPACE.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    kind, inside = match.groups()
    values = tuple(scalar(part) for part in inside.split(",")) if inside.strip() else ()
    written = f"{key}={value.strip()}"
    if kind in ("grid", "choice"):
        if not values or any(v is None for v in values):
            raise VislabError(f"{written}: {kind}() needs one or more values, separated by commas")
        if len(set(map(repr, values))) != len(values):
            raise VislabError(f"{written}: a value is listed twice")
        return Space(kind, values)
    if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise VislabError(f"{written}: {kind}() needs two numbers, lo and hi, e.g. {kind}(1,10)")
    lo, hi = values
    if not lo < hi:
        raise VislabError(f"{written}: lo must be below hi")
    if kind == "loguniform" and lo <= 0:
        raise VislabError(f"{written}: loguniform() needs lo > 0 (a log scale has no 0)")
    if kind == "int":
        if lo != int(lo) or hi != int(hi):
            raise VislabError(f"{written}: int() needs whole numbers")
        return Space(kind, (int(lo), int(hi)))
    return Space(kind, (float(lo), float(hi)))


def flat(values: dict, prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": x}} -> {"optim.lr": x}; `model_args` stays one value, as in the config."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key != "model_args":
            out |= flat(value, f"{name}.")
        else:
            out[name] = value
    return out


def nested(values: dict[str, Any]) -> dict[str, Any]:
    """{"optim.lr": x} -> {"optim": {"lr": x}}: the sections `vislab.train` takes."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        target = out
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return out


def split_space(keys: dict[str, Any]) -> tuple[dict[str, Space], dict[str, Any]]:
    """Dotted keys -> (searched keys and their spaces, plain keys shared by every trial)."""
    searched, shared = {}, {}
    for key, value in flat(keys).items():
        space = parse_space(key, value)
        if space is None:
            shared[key] = value
        else:
            searched[key] = space
    return searched, shared


def grid_points(space: dict[str, Space]) -> list[dict[str, Any]]:
    """Every combination of the grid keys' values, in the order they were written."""
    grid = {k: s.values for k, s in space.items() if s.is_grid}
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]


def describe(space: dict[str, Space]) -> dict[str, str]:
    """The space as text: what a study stores, and compares with a later command's."""
    return {key: str(space[key]) for key in sorted(space)}
