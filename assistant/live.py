"""Hot reload: serve the newest bundle version of a root without a restart.

:class:`LiveAssistant` stands in for an :class:`~assistant.chat.Assistant` (every attribute is the
current one's). A background thread watches ``<root>/current``; when it names a new version, that
version is loaded and checked (checksums, arrays, the query encoder, one recommendation) off the serving
path, then swapped in with one assignment. A turn that began before the swap holds the old assistant
and finishes on it. A version that fails to load is refused with a logged error, the old one keeps
serving, and it is tried again only once its files change (a version still being copied in fails its
checksums, then loads once complete).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from index_builder.core import bundle as fmt

log = logging.getLogger(__name__)


class LiveAssistant:
    def __init__(self, root: str | Path, make: Callable[[Path], Any], *, interval_s: float = 1.0, watch: bool = True):
        self.root = Path(root)
        self._make = make
        folder = fmt.resolve(self.root)
        self.current = make(folder)
        self.version = folder.name
        self.since = time.time()  # when the version served now was swapped in (epoch seconds)
        self.refused: dict[str, str] = {}
        self._refused_at: dict[str, tuple] = {}  # the files' (name, size, mtime) when a version was refused
        self.swaps = 0
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = None
        if watch:
            self._thread = threading.Thread(target=self._watch, name="bundle-reload", daemon=True)
            self._thread.start()

    def __getattr__(self, name: str) -> Any:  # only called for what this class does not define itself
        if name == "current":  # not set yet (the first load failed): no recursion
            raise AttributeError(name)
        return getattr(self.current, name)

    def check(self) -> bool:
        """Swap in ``current``'s version if it is new and loads; True when swapped."""
        try:
            folder = fmt.resolve(self.root)
        except fmt.BundleError as exc:
            log.error("bundle reload: %s; still serving %s", exc, self.version)
            return False
        if folder.name == self.version:
            return False
        if folder.name in self.refused and self._refused_at.get(folder.name) == signature(folder):
            return False
        t0 = time.perf_counter()
        seen = signature(folder)
        try:
            fresh = self._make(folder)
        except Exception as exc:  # a broken version must never take the chat down
            self.refused[folder.name] = f"{type(exc).__name__}: {exc}"
            self._refused_at[folder.name] = seen
            log.error("bundle reload: refused version %s (%s); still serving %s", folder.name,
                      self.refused[folder.name], self.version)
            return False
        self.refused.pop(folder.name, None)
        self._refused_at.pop(folder.name, None)
        old, self.current, self.version, self.since = self.version, fresh, folder.name, time.time()
        self.swaps += 1
        log.info("bundle reload: now serving %s (was %s), loaded in %.1fs", folder.name, old, time.perf_counter() - t0)
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # the watcher must outlive any one bad check
                log.exception("bundle reload: check failed")

    def close(self) -> None:
        self._stop.set()


def signature(folder: Path) -> tuple:
    """(name, size, mtime) of every file of a version folder: changes when any file is written."""
    out = []
    for p in sorted(Path(folder).rglob("*")):
        try:
            st = p.stat()
        except OSError:  # removed while listed
            continue
        if p.is_file():
            out.append((p.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(out)
