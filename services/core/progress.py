"""A one-line progress bar for command-line tools: redrawn in place on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """`show(fraction, text)` draws "[#####-----]  50.0% text" at most every 0.1 s on a terminal (every 2 s when not
    a terminal); `final=True` always draws and ends the line."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self._stream = stream
        self._width = width
        self._last = 0.0
        self._tty = stream.isatty()

    def show(self, fraction: float, text: str, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < (0.1 if self._tty else 2.0):
            return
        self._last = now
        fraction = min(max(fraction, 0.0), 1.0)
        filled = int(fraction * self._width)
        line = f"[{'#' * filled}{'-' * (self._width - filled)}] {fraction:6.1%} {text}"
        if self._tty:
            self._stream.write("\r" + line + ("\n" if final else ""))
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
