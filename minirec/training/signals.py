"""Stopping a run by signal: Ctrl-C (SIGINT) and SIGTERM (a scheduler, ``kill``) alike.

Within the block, the first signal sets ``requested`` (the loop stops at the next batch
boundary and saves a checkpoint); a second raises KeyboardInterrupt at once, unless it arrives
inside `protected` (a state update), which then finishes first. During the test evaluation
(``immediate``) the first one stops at once: there is nothing to save then. Once the run is
winding down (``stopping``: saving the checkpoint, writing results.json), signals are only
noted, so a burst of Ctrl-C cannot cut the report short or escape as a traceback.

Off the main thread, signals cannot be caught here and Ctrl-C arrives as KeyboardInterrupt,
which the loop also handles.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

__all__ = ["StopSignals"]

_HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    def __init__(self, exiting: bool = False):
        self.requested = False
        self.name = None  # the first signal's name: "SIGINT" or "SIGTERM"
        self.protecting = 0
        self.immediate = False
        self.stopping = False
        self.exiting = exiting  # the process ends after the run: leave the signals ignored
        self.previous = {}

    def _handler(self, signum, frame):
        if self.stopping:
            return
        first = not self.requested
        self.requested = True
        self.name = self.name or signal.Signals(signum).name
        what = "interrupt" if signum == signal.SIGINT else signal.Signals(signum).name
        if self.immediate:
            print(f"\nminirec: {what} received during the test evaluation; stopping now", file=sys.stderr, flush=True)
        elif first:
            print(f"\nminirec: {what} received; stopping at the end of this batch (Ctrl-C again to abort now)",
                  file=sys.stderr, flush=True)
        if (self.immediate or not first) and not self.protecting:
            self.stop()

    def stop(self):
        """Stop now: the run winds down from here."""
        self.stopping = True
        raise KeyboardInterrupt

    def check(self):
        """At a safe point: stop if a signal asked for it."""
        if self.requested:
            self.stop()

    def wind_down(self):
        """From here on the run only saves and reports: later signals are noted, not raised."""
        self.stopping = True

    @contextlib.contextmanager
    def protected(self):
        """A state update that a second signal must not cut in half."""
        self.protecting += 1
        try:
            yield
        finally:
            self.protecting -= 1

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in _HANDLED:
                with contextlib.suppress(ValueError, OSError):
                    self.previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc):
        for signum, previous in self.previous.items():
            if self.exiting:
                signal.signal(signum, signal.SIG_IGN)
            elif previous is not None:  # (None: a handler installed from C, which cannot be restored)
                signal.signal(signum, previous)
        return False
