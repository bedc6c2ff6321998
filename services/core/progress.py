"""A one-line progress bar for command-line tools: redrawn in place on a terminal; elsewhere (a pipe, a log file) a
plain line now and then for long work, and one line at the end."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from services.core.clock import MonotonicClock

# How often the bar is drawn: redrawn in place on a terminal, a new line each time elsewhere.
TERMINAL_INTERVAL_SECONDS = 0.1
PLAIN_INTERVAL_SECONDS = 10.0


class ProgressBar:
    """`show(fraction, text)` draws "[#####-----]  50.0% text": on a terminal in place, at most every 0.1 s; when the
    stream is not a terminal, as a line of its own at most every 10 s, the first 10 s after the bar was made (so
    quick work prints no intermediate line). `final=True` always draws, once, and ends the line."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30, *, clock: MonotonicClock = time.monotonic) -> None:
        self._stream = stream
        self._width = width
        self._clock = clock
        self._tty = stream.isatty()
        self._interval = TERMINAL_INTERVAL_SECONDS if self._tty else PLAIN_INTERVAL_SECONDS
        self._last = clock()
        self._finished = False

    def show(self, fraction: float, text: str, *, final: bool = False) -> None:
        if self._finished:
            return
        now = self._clock()
        if not final and now - self._last < self._interval:
            return
        self._last = now
        self._finished = final
        fraction = min(max(fraction, 0.0), 1.0)
        filled = int(fraction * self._width)
        line = f"[{'#' * filled}{'-' * (self._width - filled)}] {fraction:6.1%} {text}"
        if self._tty:
            self._stream.write("\r" + line + ("\n" if final else ""))
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
