"""The one exception type for mistakes a user can fix; the CLI prints it as one line and exits 2."""

import difflib
from collections.abc import Iterable


class VislabError(Exception):
    """A problem with the user's input (path, name, config, file), not a bug in vislab."""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> VislabError:
    """An error for an unknown name that suggests the closest known ones."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"choose from {', '.join(choices)}"
    return VislabError(f"unknown {kind} '{name}': {hint}")
