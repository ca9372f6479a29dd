"""Stop signals for a command's whole life. SIGTERM, SIGINT (Ctrl-C) and SIGUSR1 (Slurm's warning before
pre-emption) raise `Stopped` wherever the program stands, the way Python's own SIGINT raises
KeyboardInterrupt, so that every command ends in one line and exit code 128+signal instead of being killed
with no word (a scheduler could not tell a stop from a crash) and leaving a file half-written: writers
write to a temporary name and rename it when whole (`vislab.runs.replacing`), and drop it when stopped.

While a run trains, and until it has written its summary, the signal is held instead: training stops at
the next optimizer step with a checkpoint (`vislab.resilience.RunGuard`), a finished run writes its
summary.json, and then the run stops. A second Ctrl-C stops at once, even then."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from vislab.errors import Stopped

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopSignals:
    """The process's handler of stop signals: raising by default, holding while `hold()` is in force."""

    def __init__(self) -> None:
        self.received: int | None = None  # the first signal that came while held
        self.holding: str | None = None  # what the process finishes before it stops, while held
        self.depth = 0

    @contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Stop signals are handled here for the time of the block (nested blocks share the outer one's
        handlers; outside the main thread, where Python allows no handlers, nothing changes)."""
        owner = self.depth == 0 and threading.current_thread() is threading.main_thread()
        previous = {signum: signal.signal(signum, self.handle) for signum in STOP_SIGNALS} if owner else {}
        self.depth += 1
        try:
            yield self
        finally:
            self.depth -= 1
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if owner:
                self.received = self.holding = None

    def handle(self, signum: int, frame) -> None:
        second_ctrl_c = signum == signal.SIGINT and self.received == signal.SIGINT
        if self.holding is None or second_ctrl_c:
            raise Stopped(signum)
        if self.received is None:
            self.received = signum
            name = signal.Signals(signum).name
            print(f"\nvislab: {name}: {self.holding}, then stopping", file=sys.stderr)

    def reinstall(self) -> None:
        """Takes the signals back from a handler installed since (Lightning installs its own SIGTERM
        handler when fitting starts: it stops at the epoch's end, without a checkpoint)."""
        if self.depth and threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                signal.signal(signum, self.handle)

    def hold(self, doing: str) -> None:
        """From now on a stop signal is recorded in `received`, not raised: the process finishes `doing`
        (which the one line printed on the signal names) and then stops by itself."""
        self.holding = doing

    def release(self) -> int | None:
        """Ends holding; returns the signal that came meanwhile, for the caller to stop with."""
        received, self.received, self.holding = self.received, None, None
        return received


STOP = StopSignals()
