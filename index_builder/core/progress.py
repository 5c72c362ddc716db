"""Stage lines with elapsed time, and the per-stage timings that go into the manifest."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("index_builder")


class Stages:
    """Time named stages; each start and end is logged as ``[  12.3s] stage: message``."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.timings_s: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def say(self, message: str, *args: object) -> None:
        log.info("[%7.1fs] " + message, self.elapsed(), *args)

    @contextmanager
    def stage(self, name: str, message: str = "", *args: object) -> Iterator[None]:
        self.say("%s: " + (message or "started"), name, *args)
        start = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - start
            self.timings_s[name] = round(self.timings_s.get(name, 0.0) + took, 3)
            self.say("%s: done in %.1fs", name, took)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


@contextmanager
def reported(st: Stages, name: str, total: int, unit: str, read: Callable[[], float],
             every: float = 10.0) -> Iterator[None]:
    """While the block runs, say every ``every`` seconds how many of ``total`` ``unit`` are done (``read()``),
    the rate and the time left: plain stage lines, so a log file gets them as well as a terminal.

    ``read`` is typically a Spark accumulator's value: the executors add to it as their tasks finish.
    """
    stop = threading.Event()
    start = time.perf_counter()

    def loop() -> None:
        while not stop.wait(every):
            done = float(read())
            rate = done / max(1e-9, time.perf_counter() - start)
            left = f", about {_duration((total - done) / rate)} left" if rate > 0 and done < total else ""
            st.say("%s: %s of %s %s (%d%%), %.0f %s/s%s", name, f"{int(done):,}", f"{total:,}", unit,
                   100 * done / max(1, total), rate, unit, left)

    thread = threading.Thread(target=loop, name=f"progress-{name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
