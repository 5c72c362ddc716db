"""The embedding cache: (model, runtime, text hash) -> vector, in one SQLite file per machine.

A rebuild of an unchanged catalog embeds nothing; one with 1% new or changed texts embeds that 1%. The OpenAI
backend keeps its vectors here (keyed by model and dimensions), and :class:`CachedEmbedder` puts any local
embedder (torch, ONNX) in front of it, keyed by a fingerprint of the model's files, the runtime and the
libraries that compute the vectors: a changed model, backend, dtype or library version never reads another's
vectors. The file is ``$CARTWISE_EMBED_CACHE``, else ``embeddings.sqlite`` in the cache folder
(``$CARTWISE_CACHE``, default ``~/.cache/cartwise``); the Python workers of a local Spark build share it, each
worker of a cluster keeps its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from index_builder.core.embedders.base import Embedder

log = logging.getLogger(__name__)

FILE_NAME = "embeddings.sqlite"
NORM_TOLERANCE = 1e-3  # a stored vector is unit-norm (every backend normalizes); one that is not is a miss
LOOKUP_CHUNK = 500  # keys per SELECT (SQLite's default limit on bound parameters is 999 in old builds)


@contextlib.contextmanager
def _exclusive(lock_path: str) -> Iterator[None]:
    """An advisory lock between processes (POSIX); elsewhere SQLite's own locking is all there is."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def default_cache(values: Mapping[str, str] | None = None) -> str:
    """``$CARTWISE_EMBED_CACHE``, else ``embeddings.sqlite`` in the cache folder (``$CARTWISE_CACHE``)."""
    from index_builder.core.settings import cache_root, read_env

    values = read_env() if values is None else values
    return values.get("CARTWISE_EMBED_CACHE") or str(cache_root(values) / FILE_NAME)


class EmbeddingCache:
    """key -> float32 vector, in one SQLite file shared by the processes of a machine.

    Spark starts one Python worker per partition, and they open the cache at the same moment. Switching a
    file to WAL needs an exclusive lock that SQLite's busy timeout does not wait for ("database is
    locked" at once), so the one-time setup runs under a file lock; after it every connection only reads
    and writes, which the 60 s busy timeout covers.
    """

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        with _exclusive(path + ".lock"):
            conn = sqlite3.connect(path, timeout=60)
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
                conn.commit()
            finally:
                conn.close()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(self.path, timeout=60)
        return conn

    @staticmethod
    def prefix(model: str, variant: str | int | None) -> str:
        """What every key of one model and variant starts with: the OpenAI backend's variant is its requested
        dimensions (0: the model's own), a local embedder's its :func:`fingerprint`."""
        return f"{model}|{variant or 0}|"

    @staticmethod
    def key(model: str, variant: str | int | None, text: str) -> str:
        """``model|variant|`` and the hex sha256 of the text's UTF-8 (what Spark's ``sha2(text, 256)`` gives)."""
        return EmbeddingCache.prefix(model, variant) + hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get_many(self, keys: Sequence[str], dim: int | None = None) -> dict[str, np.ndarray]:
        """The usable vectors of ``keys``: ``dim`` long (when given), finite and of unit norm. Any other row (a
        damaged file, another writer's bytes) is a miss, embedded again and overwritten; a file SQLite cannot
        read is all misses (logged), never the end of a build."""
        out: dict[str, np.ndarray] = {}
        try:
            conn = self._conn()
            for i in range(0, len(keys), LOOKUP_CHUNK):
                part = list(keys[i:i + LOOKUP_CHUNK])
                rows = conn.execute(f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(part))})", part)
                for k, blob in rows:
                    v = usable(blob, dim)
                    if v is not None:
                        out[k] = v
        except sqlite3.Error as exc:
            log.warning("embedding cache %s: unreadable (%s): embedding without it; delete the file or build with "
                        "--no-embed-cache", self.path, exc)
        return out

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        """Store unit vectors (a non-finite one is never stored); a write SQLite refuses is logged, not raised."""
        rows = [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()
                if np.isfinite(np.asarray(v, dtype=np.float32)).all()]
        try:
            with self._conn() as c:
                c.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
        except sqlite3.Error as exc:
            log.warning("embedding cache %s: not written (%s)", self.path, exc)


def usable(blob: bytes, dim: int | None) -> np.ndarray | None:
    """A stored vector when it is one: whole float32s, ``dim`` of them (when given), finite, unit norm."""
    if not isinstance(blob, bytes) or len(blob) % 4 or (dim is not None and len(blob) != 4 * dim) or not blob:
        return None
    v = np.frombuffer(blob, dtype=np.float32)
    if not np.isfinite(v).all() or abs(float(np.linalg.norm(v)) - 1.0) > NORM_TOLERANCE:
        return None
    return v


def unusable(path: str) -> str | None:
    """Why the cache file at ``path`` cannot be used (None: it can): what a build says before it goes on
    without it."""
    try:
        EmbeddingCache(path)  # creates the folder, the file and the table, or says why it cannot
    except (sqlite3.Error, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def versions(libraries: Iterable[str]) -> dict[str, str]:
    """Each installed library's version ("-": not installed)."""
    out = {}
    for name in libraries:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "-"
    return out


_FILE_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: each file read once


def file_hash(path: Path) -> str:
    """The sha256 of a whole file (weights changed in place past their first bytes change it too), remembered
    while its size and modification time stay the same."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


def folder_key(folder: str | Path, libraries: Iterable[str] = ()) -> str:
    """A short hash of a model folder's files (names and whole contents) and the versions of ``libraries``:
    what the vectors (or an export) computed from that folder depend on."""
    folder = Path(folder)
    h = hashlib.sha256(json.dumps(versions(libraries), sort_keys=True).encode())
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(folder)}:{file_hash(p)}".encode())
    return h.hexdigest()[:16]


def fingerprint(identity: Mapping[str, Any], folder: str | Path, libraries: Iterable[str]) -> str:
    """What a local embedder's vectors depend on, as a short hash: its identity (model, dimension, backend,
    device, dtype), its model folder's files and the versions of the libraries that run it."""
    h = hashlib.sha256(json.dumps(dict(identity), sort_keys=True, default=str).encode())
    h.update(folder_key(folder, libraries).encode())
    return h.hexdigest()[:16]


class CachedEmbedder(Embedder):
    """An embedder with the cache in front: only texts not met before (by the same model, files, runtime and
    libraries: ``tag``) are encoded, and their vectors stored. Same vectors, same identity, same manifest.

    ``hits`` counts the texts of this process's calls whose vector came from the cache, ``encoded`` the
    distinct texts it encoded."""

    def __init__(self, inner: Embedder, path: str, tag: str) -> None:
        self.inner = inner
        self.path = path
        self.tag = tag
        self.model = inner.model
        self.backend = inner.backend
        self.hits = 0
        self.encoded = 0
        self._cache: EmbeddingCache | None = None

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def cache(self) -> EmbeddingCache:
        if self._cache is None:
            self._cache = EmbeddingCache(self.path)
        return self._cache

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = [EmbeddingCache.key(self.model, self.tag, t) for t in texts]
        have = self.cache.get_many(list(dict.fromkeys(keys)), self.dim)
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in have}
        self.hits += sum(k in have for k in keys)
        self.encoded += len(todo)
        if todo:
            fresh = dict(zip(todo, self.inner.encode(list(todo.values())), strict=True))
            self.cache.put_many(fresh)
            have.update(fresh)
        return np.stack([have[k] for k in keys])  # the inner embedder's unit vectors, as stored

    def spec(self) -> dict[str, Any]:
        return {"kind": "cached", "inner": self.inner.spec(), "path": self.path, "tag": self.tag}

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()

    def __getattr__(self, name: str) -> Any:  # the inner embedder's own attributes (an ONNX folder, a device)
        if name in ("inner", "__setstate__", "__getstate__"):
            raise AttributeError(name)
        return getattr(self.inner, name)
