"""The recipes in recipes/: YAML configs that reproduce the seed experiments, found by file or by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vislab.errors import VislabError, unknown_name

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    description: str  # the first comment line
    expect: str  # the comment line that starts with "expect:"


def read_recipe(path: Path) -> Recipe:
    comments = [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")]
    expect = next((c.removeprefix("expect:").strip() for c in comments if c.startswith("expect:")), "")
    return Recipe(path.stem, path, comments[0] if comments else "", expect)


def list_recipes() -> list[Recipe]:
    return [read_recipe(path) for path in sorted(RECIPES_DIR.glob("*.yaml"))]


def recipe_path(name_or_path: str | Path) -> Path:
    """A YAML file as given, or a recipe by name (`cifar10_resnet18`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    named = RECIPES_DIR / f"{path.name.removesuffix('.yaml')}.yaml"
    if named.is_file():
        return named
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        raise VislabError(f"config file not found: {path}")
    raise unknown_name("recipe", str(name_or_path), [r.name for r in list_recipes()])
