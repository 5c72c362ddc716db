"""The artifact bundle format: the one module that knows file names, the manifest and checksums.

Layout: ``<root>/<version>/`` (one immutable build) and ``<root>/current`` (a symlink to the newest
version, replaced atomically). A version is written to ``<root>/.tmp-<version>`` and renamed into
place, so a reader never sees half a bundle. This module imports neither pyspark nor faiss: the
assistant uses it too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from index_builder.core.errors import BundleError, ModelFitError

FORMAT_VERSION = 2  # 2: interactions.had, events.parquet, item-item arrays, metrics, recommender
MANIFEST = "manifest.json"
CURRENT = "current"

PRODUCTS = "products.parquet"
EMBEDDINGS = "embeddings.npy"
FAISS_INDEX = "faiss.index"
CENTROIDS = "kmeans_centroids.npy"
ITEM_FACTORS = "als_item_factors.npy"
USER_FACTORS = "als_user_factors.npy"
ITEM_NEIGHBOURS = "item_item_neighbours.npy"
ITEM_WEIGHTS = "item_item_weights.npy"
ITEM_ROWS = "item_item_rows.npy"  # when present, the two arrays above hold only these product rows
USERS = "users.parquet"
INTERACTIONS = "interactions.parquet"
EVENTS = "events.parquet"
BUY_AGAIN = "buy_again.parquet"  # each customer's past products with the probability of another order soon
REJECTS_DIR = "rejects"
PLOTS_DIR = "plots"
EMBEDDER_DIR = "embedder"  # the exported query/product encoder, when the build used the ONNX backend
REPORT_DIR = "report"  # the insights page and the product map's points
REPORT_HTML = "report.html"
MAP_POINTS = "map.parquet"
EVENTS_SUMMARY = "events.json"  # what the events say: per-period counts, funnel, long tail, best sellers
PLOT_FILES = {"kmeans": "kmeans_sweep.png", "map": "product_map.png", "metrics": "metrics.png",
              "top": "top_recommended.png", "degree": "degree_distribution.png",
              "events": "events_per_period.png"}  # under PLOTS_DIR
GRAPH_DIR = "graph"  # the recommendation network (user and product vertices, recommendation edges)
VERTICES = "vertices.csv"
EDGES = "edges.csv"
USER_NS = "user:"  # vertex id prefixes in the graph files
PRODUCT_NS = "product:"

REBUILD_HINT = "rebuild it with: python -m index_builder build ... --out <root>"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_finite(name: str, array: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Raise :class:`ModelFitError` naming ``name`` when an array holds NaN or infinity (checked in row chunks,
    so a million-row array needs no second array of its size)."""
    bad_rows: list[int] = []
    n_bad = 0
    for lo in range(0, max(1, len(array)), chunk):
        bad = ~np.isfinite(array[lo:lo + chunk])
        if bad.any():
            n_bad += int(bad.sum())
            bad_rows += (lo + np.unique(np.nonzero(bad)[0])).tolist()
    if n_bad:
        raise ModelFitError(
            f"{name} has {n_bad} non-finite values (first rows {bad_rows[:5]}); "
            "rebuild with another seed or a larger regParam"
        )
    return array


def save_array(folder: Path, name: str, array: np.ndarray) -> None:
    np.save(folder / name, check_finite(name, np.ascontiguousarray(array)), allow_pickle=False)


def load_array(folder: Path, name: str) -> np.ndarray:
    return check_finite(name, np.load(folder / name, allow_pickle=False))


def save_item_item(folder: Path, neighbours: np.ndarray, weights: np.ndarray) -> None:
    """The EASE arrays, compact when the model covers fewer products than the catalog (it covers at most
    10,000: at a million products the full (n, 256) arrays would be 2 GB of empty rows)."""
    rows = np.flatnonzero(neighbours[:, 0] >= 0) if len(neighbours) else np.zeros(0, dtype=np.int64)
    if len(rows) < len(neighbours):
        save_array(folder, ITEM_ROWS, rows.astype(np.int64))
        neighbours, weights = neighbours[rows], weights[rows]
    save_array(folder, ITEM_NEIGHBOURS, neighbours)
    save_array(folder, ITEM_WEIGHTS, weights)


class RowTable:
    """A per-product array stored for some rows only: ``table[rows]`` reads like the full (n, k) array
    (``fill`` where a row is not stored)."""

    def __init__(self, n: int, rows: np.ndarray, values: np.ndarray, fill: float) -> None:
        self.slot = np.full(n, len(values), dtype=np.int64)
        self.slot[rows] = np.arange(len(rows))
        self.values = np.concatenate([values, np.full((1, *values.shape[1:]), fill, dtype=values.dtype)])
        self.shape = (n, *values.shape[1:])
        self.dtype = values.dtype

    def __getitem__(self, rows):
        return self.values[self.slot[rows]]

    def __len__(self) -> int:
        return self.shape[0]


def load_item_item(folder: Path, n: int) -> tuple[np.ndarray | RowTable | None, np.ndarray | RowTable | None]:
    """(neighbours, weights) as saved by :func:`save_item_item`; (None, None) when the bundle has none."""
    if not (folder / ITEM_NEIGHBOURS).is_file():
        return None, None
    neighbours, weights = load_array(folder, ITEM_NEIGHBOURS), load_array(folder, ITEM_WEIGHTS)
    if not (folder / ITEM_ROWS).is_file():
        return neighbours, weights
    rows = load_array(folder, ITEM_ROWS)
    return RowTable(n, rows, neighbours, -1), RowTable(n, rows, weights, 0.0)


def new_version(root: Path, now: dt.datetime | None = None) -> str:
    """A sortable, unique version name such as ``20261122T013000Z``."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    version, n = stamp, 1
    while (root / version).exists():
        n += 1
        version = f"{stamp}-{n}"
    return version


def list_files(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` for every file in a bundle folder except the manifest."""
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def publish(root: Path, fill: Callable[[Path], dict[str, Any]]) -> Path:
    """Write a new version atomically and point ``current`` at it.

    ``fill(tmp_folder)`` writes the files and returns the manifest body; this function adds
    ``format_version``, ``version`` and ``files`` (checksums), then renames the folder into place. The
    version is named when the folder is complete: another build that landed meanwhile (in the same second,
    even) takes the name first, and this one the next free name.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{new_version(root)}-{uuid.uuid4().hex[:12]}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        body = fill(tmp)
        files = list_files(tmp)
        for _ in range(100):
            version = new_version(root)
            manifest = {"format_version": FORMAT_VERSION, "version": version, **body, "files": files}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
            final = root / version
            try:
                os.rename(tmp, final)  # refused when that version exists (a non-empty folder)
                break
            except OSError:
                if not final.exists():
                    raise
        else:
            raise BundleError(f"{root}: no free version name after 100 tries; is another process writing there?")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    set_current(root, version)
    return final


def set_current(root: Path, version: str) -> None:
    """Point ``root/current`` at ``version`` with one atomic rename of a fresh symlink."""
    link = root / f".{CURRENT}-{uuid.uuid4().hex[:12]}"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(version, link)
    os.replace(link, root / CURRENT)


def resolve(path: Path | str) -> Path:
    """A version folder from either itself or a bundle root (following ``current``)."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    current = path / CURRENT
    if current.is_symlink() or current.is_dir():
        target = current.resolve()
        if (target / MANIFEST).is_file():
            return target
    elif current.is_file():  # a pointer file holding the version name (filesystems without symlinks)
        target = path / current.read_text().strip()
        if (target / MANIFEST).is_file():
            return target
    raise BundleError(f"{path} holds no bundle (no {MANIFEST} and no '{CURRENT}' pointer); {REBUILD_HINT}")


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a version folder; refuses another format version."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path} cannot be read ({exc}); {REBUILD_HINT}") from exc
    found = manifest.get("format_version")
    if found != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format {found!r}, this code reads format {FORMAT_VERSION}; {REBUILD_HINT}"
        )
    return manifest


def update_manifest(folder: Path, **sections: Any) -> dict[str, Any]:
    """Replace top-level manifest sections (e.g. ``metrics``) atomically; the checksummed files stay as they are."""
    folder = resolve(folder)
    manifest = read_manifest(folder)
    manifest.update(sections)
    tmp = folder / f".{MANIFEST}.{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, folder / MANIFEST)
    return manifest


def verify(path: Path | str) -> tuple[Path, dict[str, Any]]:
    """Resolve and check a bundle: format version, every listed file present with its sha256."""
    folder = resolve(path)
    manifest = read_manifest(folder)
    for name, digest in manifest.get("files", {}).items():
        file = folder / name
        if not file.is_file():
            raise BundleError(f"{file} is listed in the manifest but missing; {REBUILD_HINT}")
        if sha256_file(file) != digest:
            raise BundleError(f"{file} does not match its checksum in {MANIFEST} (changed or corrupt); {REBUILD_HINT}")
    return folder, manifest
