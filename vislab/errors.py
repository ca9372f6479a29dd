"""What the CLI turns into one line: mistakes a user can fix (exit 2), and runs that stopped early."""

import difflib
import signal
from collections.abc import Iterable


class VislabError(Exception):
    """A problem with the user's input (path, name, config, file), not a bug in vislab."""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> VislabError:
    """An error for an unknown name that suggests the closest known ones."""
    choices, name = sorted(choices), str(name)  # a YAML value may be a number or a list
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"choose from {', '.join(choices)}"
    return VislabError(f"unknown {kind} {name!r}: {hint}")


class RunStopped(Exception):
    """Training stopped before its end (a signal, a non-finite loss, a failed write) with its run folder
    kept and resumable; the CLI prints the message as one line and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def describe_os_error(error: OSError) -> str:
    """'runs/a/checkpoints/last.ckpt: No space left on device', not a traceback."""
    reason = error.strerror or str(error)
    return f"{error.filename}: {reason}" if error.filename else reason


class Stopped(BaseException):
    """A stop signal (SIGTERM, SIGINT, SIGUSR1) arrived: raised where the program stands, like Python's
    KeyboardInterrupt (and, like it, no Exception, so that no `except Exception` swallows it), but not one:
    Lightning turns a KeyboardInterrupt into exit code 1 and ignores Ctrl-C from then on."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.name, self.exit_code = signum, signal.Signals(signum).name, 128 + signum
