"""Progress lines for the read-only commands that draw many samples (``sample``, ``eval``)."""

from __future__ import annotations

import sys
import time


class ProgressLine:
    """``progress(done, total)`` -> ``difflab <command>: 250/1000 images, 41.3 images/s, ETA 18 s`` on
    stderr, for ``GenerativeModel.sample(progress=...)``; the clock restarts at done = 0 (each
    ``sample`` call of an eval sweep), which prints nothing."""

    def __init__(self, command: str) -> None:
        self.command, self.start = command, time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        if done == 0:
            self.start = time.perf_counter()
            return
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        print(f"difflab {self.command}: {done}/{total} images, {rate:.1f} images/s, ETA {(total - done) / rate:.0f} s",
              file=sys.stderr, flush=True)
