"""Stop signals sent at a chosen point of vislab's code, so that tests of stopping do not depend on the
machine's speed (no "wait 1 s, then send": on a fast machine the run is over by then).

In a test: `send_at(monkeypatch, "vislab.training.summarize", signal.SIGTERM)` makes the next call of that
function send the signal to this process first. As a process of its own (signals to its whole process
group, DataLoader workers included): `python tests/stopper.py SIGNAL TARGET N [--after] -- VISLAB_ARGS`
runs `vislab VISLAB_ARGS` and sends SIGNAL (a name, or KILL) on the N-th call of TARGET, before the call,
or once it has returned with --after. Under torchrun, `--rank R` sends it to rank R's process alone (the
other ranks run unchanged): a signal that reaches one rank of a job."""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
from pathlib import Path


def resolve(target: str) -> tuple[object, str]:
    """("vislab.resilience.RunGuard.on_train_batch_end") -> (the RunGuard class, "on_train_batch_end")."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:-1]:
            owner = getattr(owner, name)
        return owner, parts[-1]
    raise ValueError(f"cannot resolve {target}")


def signalling(function, send, nth: int = 1, after: bool = False):
    """`function`, except that its `nth` call calls `send()` first (or after it returned)."""
    calls = 0

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == nth and not after:
            send()
        result = function(*args, **kwargs)
        if calls == nth and after:
            send()
        return result

    return wrapper


def send_at(monkeypatch, target: str, signum: int, nth: int = 1, after: bool = False) -> None:
    owner, name = resolve(target)
    send = functools.partial(os.kill, os.getpid(), signum)
    monkeypatch.setattr(owner, name, signalling(getattr(owner, name), send, nth, after))


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's vislab, as `-m` finds it
    split = argv.index("--")
    spec, vislab_args = argv[:split], argv[split + 1 :]
    name, target, nth = spec[0], spec[1], int(spec[2])
    signum = signal.SIGKILL if name == "KILL" else signal.Signals[name]
    only = spec[spec.index("--rank") + 1] if "--rank" in spec else None
    if only is None or os.environ.get("RANK") == only:
        owner, attribute = resolve(target)
        if only is None:
            send = functools.partial(os.killpg, os.getpgrp(), signum)
        else:
            send = functools.partial(os.kill, os.getpid(), signum)
        setattr(owner, attribute, signalling(getattr(owner, attribute), send, nth, "--after" in spec))
    from vislab.cli import main as vislab_main

    return vislab_main(vislab_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
