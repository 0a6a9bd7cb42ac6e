"""Progress of a data-set run on stderr: done / total, examples per second, and the ETA.

On a terminal one line is redrawn in place (at most 10 times a second); otherwise a plain line is
printed every `every` seconds and at the end, so that logs stay short.
"""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class RateProgress:
    """`update(done)` after each batch; `close()` prints the final line."""

    def __init__(self, total: int | None, label: str = "explaining", stream=None, every: float = 10.0):
        self.total, self.label, self.every = total, label, every
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = self.last = time.perf_counter()
        self.done = 0

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = self.done / elapsed
        total = f"/{self.total}" if self.total is not None else ""
        eta = ""
        if self.total is not None and rate > 0:
            eta = f", ETA {_clock(max(0, self.total - self.done) / rate)}"
        return f"{self.label} {self.done}{total} examples, {rate:.1f} examples/s{eta}, {_clock(elapsed)} elapsed"

    def update(self, done: int) -> None:
        self.done = done
        now = time.perf_counter()
        if self.tty and now - self.last >= 0.1:
            self.stream.write("\r\x1b[K" + self.line())
            self.stream.flush()
            self.last = now
        elif not self.tty and now - self.last >= self.every:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self.last = now

    def close(self) -> None:
        self.stream.write(("\r\x1b[K" if self.tty else "") + self.line() + "\n")
        self.stream.flush()
