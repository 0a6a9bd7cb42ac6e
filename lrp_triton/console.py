"""Status line and progress bar on stderr for the command line (no third-party dependency).

On a terminal both redraw one line in place; otherwise a status is one plain line and a progress
bar prints only its final count, so that logs and pipes stay readable.
"""

from __future__ import annotations

import sys
import time


def _is_tty(stream) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


class Status:
    """`status.set("Loading ...")` shows a transient line; `status.clear()` removes it."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _is_tty(self.stream)
        self._shown = False

    def set(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self._shown = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        self._shown = False


class ProgressBar:
    """A bar `label [#####.....] 3/8 1.2s` advanced with `update(done)`; `close()` ends it."""

    def __init__(self, total: int, label: str, stream=None, width: int = 30):
        self.total, self.label, self.width = max(1, total), label, width
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _is_tty(self.stream)
        self.done = 0
        self.start = time.perf_counter()
        self._draw()

    def _line(self) -> str:
        filled = round(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        return f"{self.label} [{bar}] {self.done}/{self.total} {time.perf_counter() - self.start:.1f}s"

    def _draw(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + self._line())
            self.stream.flush()

    def update(self, done: int) -> None:
        self.done = min(done, self.total)
        self._draw()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(self._line() + "\n")
        self.stream.flush()
