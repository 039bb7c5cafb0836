"""Progress on long work: the one bar of the commands (`[#####.....] 12/30 clips, ETA 1m02s`) and
the one duration format. Standard library only."""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable


def format_duration(seconds: float) -> str:
    """Whole seconds as `45s`, `3m07s` or `2h05m09s`."""
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class ProgressBar:
    """`[#####.....] 12/30 clips, ETA 1m02s` on stderr: redrawn in place on a terminal, else a
    line every tenth of the work (or 30 s). Log lines go to `log` without breaking the bar."""

    def __init__(self, total: int, unit: str = "clips", enabled: bool = True, log: Callable[[str], None] | None = print,
                 stream=None, width: int = 30):
        self.total, self.unit, self.enabled, self.width = total, unit, enabled, width
        self._log = log
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = self.new = 0
        self.t0 = time.monotonic()
        self._last_draw = 0.0
        self._last_done = -1
        self._shown = False
        self._lock = threading.RLock()

    def line(self, final: bool = False) -> str:
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * self.width)
        bar += "." * (self.width - len(bar))
        elapsed = time.monotonic() - self.t0
        if self.done >= self.total:
            tail = f"done in {format_duration(elapsed)}"
        elif final:
            tail = f"stopped after {format_duration(elapsed)}"
        elif self.new:
            tail = f"ETA {format_duration(elapsed / self.new * (self.total - self.done))}"
        else:
            tail = "ETA ?"
        return f"[{bar}] {self.done}/{self.total} {self.unit}, {tail}"

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if force or now - self._last_draw >= 0.2:
                self.stream.write("\r" + self.line())
                self.stream.flush()
                self._shown, self._last_draw = True, now
        else:
            step = max(1, self.total // 10)
            if force or self.done // step != self._last_done // step or now - self._last_draw >= 30:
                self.stream.write(self.line() + "\n")
                self.stream.flush()
                self._last_draw, self._last_done = now, self.done

    def start(self) -> None:
        """Shows the bar before the first clip is done (unless it is already showing)."""
        with self._lock:
            if not self._last_draw:
                self._draw(force=True)

    def advance(self, n: int = 1, new: bool = True) -> None:
        with self._lock:
            self.done += n
            self.new += n if new else 0
            self._draw(force=self.done >= self.total)

    def log(self, msg: str) -> None:
        if self._log is None:
            return
        with self._lock:
            if self.enabled and self.tty and self._shown:
                self.stream.write("\r" + " " * (self.width + 60) + "\r")
                self.stream.flush()
                self._shown = False
            self._log(msg)
            if self.enabled and self.tty and 0 < self.done < self.total:
                self._draw(force=True)

    def close(self) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self.tty:
                self.stream.write("\r" + self.line(final=True) + "\n")
            elif self._last_done != self.done:
                self.stream.write(self.line(final=True) + "\n")
            self.stream.flush()
