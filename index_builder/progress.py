"""Stage lines with elapsed time, and the per-stage timings that go into the manifest."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
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
