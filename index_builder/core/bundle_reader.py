"""Load one verified bundle into memory: tables, arrays and the FAISS index, immutable once loaded."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from index_builder.core import bundle as fmt
from index_builder.core.search import ProductSearch
from index_builder.core.text import readable_title

log = logging.getLogger(__name__)


IVF_KINDS = ("ivf", "ivfpq")  # FAISS indexes whose cells are the KMeans clusters
# A big bundle stores its vectors as float16. Up to this many bytes as float32 (174,762 products of 384 numbers),
# the reader widens them once: the values are the same (every float16 is a float32), but a turn then reads rows
# without converting them, ~1 ns a number in NumPy: 1.2 ms of a 5 ms turn at 100,000 products. Bigger ones stay
# float16 (a million products: 768 MB, not 1.5 GB). The file is read through a memory map a band of rows at a
# time, so a hot reload holds the old bundle and the new float32 copy, not a float16 one besides.
FLOAT32_MAX_BYTES = 256 * 2**20
WIDEN_ROWS = 65_536


def load_embeddings(folder: Path) -> np.ndarray:
    """The bundle's vectors: float32, or float16 past :data:`FLOAT32_MAX_BYTES` (checked finite either way)."""
    mapped = np.load(folder / fmt.EMBEDDINGS, mmap_mode="r", allow_pickle=False)
    if mapped.dtype != np.float16 or mapped.size * 4 > FLOAT32_MAX_BYTES:
        return fmt.check_finite(fmt.EMBEDDINGS, np.array(mapped))  # in memory, as stored
    wide = np.empty(mapped.shape, dtype=np.float32)
    for lo in range(0, len(mapped), WIDEN_ROWS):
        wide[lo:lo + WIDEN_ROWS] = mapped[lo:lo + WIDEN_ROWS]
    return fmt.check_finite(fmt.EMBEDDINGS, wide)


def faiss_kind(manifest: dict[str, Any]) -> str:
    return str(manifest.get("faiss", {}).get("kind") or "flat")


@dataclass(frozen=True)
class Reorders:
    """The buy-again table (``buy_again.parquet``) as arrays: each customer's past products, most likely to be
    ordered again first, with the figures a reason quotes."""

    rows: np.ndarray  # product rows, grouped by user
    probability: np.ndarray
    orders: np.ndarray
    interval_days: np.ndarray  # mean days between the orders (NaN: one order)
    last_days: np.ndarray  # days since the last order, at the bundle's newest event
    slices: dict[str, tuple[int, int]]  # user_id -> [start, end) of their pairs

    @classmethod
    def from_table(cls, table: pd.DataFrame, row_of: dict[str, int]) -> Reorders:
        rows = table["product_id"].astype(str).map(row_of)
        t = table[rows.notna().to_numpy()].assign(_row=rows[rows.notna()].astype(np.int64))
        t = t.sort_values(["user_id", "probability", "last_days", "_row"], ascending=[True, False, True, True],
                          kind="stable", ignore_index=True)
        users = t["user_id"].astype(str).to_numpy()
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, dtype=np.int64)
        ends = np.r_[starts[1:], len(users)] if len(users) else starts
        return cls(rows=t["_row"].to_numpy(dtype=np.int64), probability=t["probability"].to_numpy(dtype=np.float64),
                   orders=t["orders"].to_numpy(dtype=np.int64), interval_days=t["interval_days"].to_numpy(dtype=np.float64),
                   last_days=t["last_days"].to_numpy(dtype=np.float64),
                   slices={users[a]: (int(a), int(b)) for a, b in zip(starts, ends, strict=True)})

    def of(self, user_id: str | None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, probabilities) of the user's past products, most likely first (empty for anyone else)."""
        a, b = self.slices.get(user_id or "", (0, 0))
        return self.rows[a:b], self.probability[a:b]

    def figures(self, user_id: str, row: int) -> dict[str, Any] | None:
        """What a reorder's reason says: orders, mean days between them, days since the last, probability."""
        a, b = self.slices.get(user_id, (0, 0))
        at = np.flatnonzero(self.rows[a:b] == row)
        if not len(at):
            return None
        i = a + int(at[0])
        every = self.interval_days[i]
        return {"orders": int(self.orders[i]), "every_days": None if every != every else int(round(every)),
                "last_days": int(round(self.last_days[i])), "probability": round(float(self.probability[i]), 3)}


@dataclass(frozen=True)
class Bundle:
    """Everything the recommender reads. Row i of every per-product array is ``products`` row i."""

    folder: Path
    manifest: dict[str, Any]
    products: pd.DataFrame
    # (n_products, dim) unit-norm; float32, or float16 in a bundle past FLOAT32_MAX_BYTES: use vectors()
    embeddings: np.ndarray
    index: Any  # faiss.Index, ntotal = n_products
    clusters: np.ndarray  # (n_products,) int
    popularity: np.ndarray  # (n_products,) float in [0, 1]: log1p(pop) / log1p(max pop)
    prices: np.ndarray  # (n_products,) float, NaN when unknown
    titles: list[str]
    product_ids: list[str]
    item_factors: np.ndarray | None  # (n_products, rank) or None for a catalog-only bundle
    user_factors: np.ndarray | None  # (n_users, rank)
    user_rows: dict[str, int]
    row_of: dict[str, int]
    purchased: dict[str, frozenset[int]]  # user_id -> product rows bought
    history: dict[str, list[int]]  # user_id -> product rows, most recent first
    had: dict[str, frozenset[int]] = field(repr=False, default_factory=dict)  # user_id -> rows they already have
    # user_id -> (product rows with a positive interaction, most recent first; days before the user's newest one)
    profile: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False, default_factory=dict)
    pair_rows: np.ndarray = field(repr=False, default=None)  # product row of every positive (user, product) pair
    pair_age_days: np.ndarray = field(repr=False, default=None)  # its age in days before the newest event
    # (n_products, k) rows, -1 = none, and EASE weights; a RowTable (indexed the same way) when stored compact
    item_neighbours: Any = field(repr=False, default=None)
    item_weights: Any = field(repr=False, default=None)
    popularity_rank: np.ndarray = field(repr=False, default=None)  # (n_products,) 1 = best seller
    popularity_order: np.ndarray = field(repr=False, default=None)  # rows, best seller first
    members: dict[int, np.ndarray] = field(repr=False, default_factory=dict)  # cluster -> rows
    # cluster -> (m, dim) float32 copies for exact in-cluster search; empty when the FAISS index's cells are the
    # clusters (ivf, ivfpq): then one cell is searched instead, and the vectors stay in memory once
    member_embeddings: dict[int, np.ndarray] = field(repr=False, default_factory=dict)
    # the title-word index (built on first use): the product picker and the recommender's keyword filters
    search: ProductSearch = field(repr=False, default=None)
    reorders: Reorders | None = field(repr=False, default=None)  # the buy-again model's table; None: none was built

    def vectors(self, rows) -> np.ndarray:
        """Embedding rows as float32 (whatever the stored precision)."""
        return np.asarray(self.embeddings[rows], dtype=np.float32)

    @property
    def faiss_kind(self) -> str:
        return faiss_kind(self.manifest)

    @property
    def version(self) -> str:
        return str(self.manifest.get("version"))

    @property
    def has_als(self) -> bool:
        return self.item_factors is not None

    @property
    def has_item_item(self) -> bool:
        return self.item_neighbours is not None

    @property
    def currency(self) -> str | None:
        """The shop's currency code from the build (``--currency``); None: prices are plain numbers."""
        return self.manifest.get("params", {}).get("currency") or None

    def product(self, row: int) -> dict[str, Any]:
        """id, title (as in the data), display_title (readable case), price, description ("" when none)."""
        price = self.prices[row]
        desc = self.products["description"].iat[row] if "description" in self.products.columns else None
        return {"product_id": self.product_ids[row], "title": self.titles[row],
                "display_title": readable_title(self.titles[row]),
                "price": None if price != price else float(price),
                "description": desc if isinstance(desc, str) else ""}


def load_bundle(path: str | Path) -> Bundle:
    """Verify (format, checksums) and load a bundle root or version folder."""
    import faiss

    folder, manifest = fmt.verify(path)
    products = pd.read_parquet(folder / fmt.PRODUCTS)
    embeddings = load_embeddings(folder)
    index = faiss.read_index(str(folder / fmt.FAISS_INDEX))
    n = len(products)
    if embeddings.shape[0] != n or index.ntotal != n:
        raise fmt.BundleError(f"{folder}: {n} products but {embeddings.shape[0]} embeddings and "
                              f"{index.ntotal} FAISS vectors; {fmt.REBUILD_HINT}")
    ivf = faiss.try_extract_index_ivf(index)
    if (ivf is not None) != (faiss_kind(manifest) in IVF_KINDS):  # bundles built before the kind was checked
        actual = "ivf" if ivf is not None else "flat"
        log.warning("%s: the manifest says a %s FAISS index, the file holds a %s one; serving it as %s",
                    folder, faiss_kind(manifest), type(index).__name__, actual)
        manifest = {**manifest, "faiss": {**manifest.get("faiss", {}), "kind": actual}}
    if ivf is not None and manifest.get("faiss", {}).get("nprobe"):
        ivf.nprobe = int(manifest["faiss"]["nprobe"])
    arrays = {name: fmt.load_array(folder, name) if (folder / name).is_file() else None
              for name in (fmt.ITEM_FACTORS, fmt.USER_FACTORS)}
    arrays[fmt.ITEM_NEIGHBOURS], arrays[fmt.ITEM_WEIGHTS] = fmt.load_item_item(folder, n)
    bundle = assemble_bundle(
        folder=folder, manifest=manifest, products=products, embeddings=embeddings, index=index,
        users=pd.read_parquet(folder / fmt.USERS), interactions=pd.read_parquet(folder / fmt.INTERACTIONS),
        item_factors=arrays[fmt.ITEM_FACTORS], user_factors=arrays[fmt.USER_FACTORS],
        item_neighbours=arrays[fmt.ITEM_NEIGHBOURS], item_weights=arrays[fmt.ITEM_WEIGHTS],
        buy_again=pd.read_parquet(folder / fmt.BUY_AGAIN) if (folder / fmt.BUY_AGAIN).is_file() else None,
    )
    log.info("loaded bundle %s: %d products, %d users", folder.name, n, len(bundle.user_rows))
    return bundle


def _rows_by_user(inter: pd.DataFrame, kind: Callable[[list[int]], Any]) -> dict[str, Any]:
    """user -> ``kind`` of the ``_row`` values of their rows, in the frame's order (one array pass per user,
    not one DataFrame per user: 0.1 ms a user less, three times per bundle assembled)."""
    rows = inter["_row"].to_numpy(dtype=np.int64)
    return {uid: kind(rows[idx].tolist()) for uid, idx in inter.groupby("_uid", sort=True).indices.items()}


def assemble_bundle(*, folder: Path, manifest: dict[str, Any], products: pd.DataFrame, embeddings: np.ndarray,
                    index: Any, users: pd.DataFrame, interactions: pd.DataFrame,
                    item_factors: np.ndarray | None = None, user_factors: np.ndarray | None = None,
                    item_neighbours: np.ndarray | None = None, item_weights: np.ndarray | None = None,
                    buy_again: pd.DataFrame | None = None) -> Bundle:
    """A :class:`Bundle` from tables and arrays already in memory (the reader and the evaluation use it).

    ``interactions``: one row per (user, product) with ``weight``, ``purchased``, ``had`` and ``last_ts``;
    ``buy_again``: the buy-again table (user_id, product_id, probability, orders, interval_days, last_days).
    """
    n = len(products)
    user_rows = dict(zip(users["user_id"].astype(str), users["user_idx"].astype(int), strict=True))
    row_of = {pid: i for i, pid in enumerate(products["product_id"].astype(str))}
    purchased: dict[str, frozenset[int]] = {}
    had: dict[str, frozenset[int]] = {}
    history: dict[str, list[int]] = {}
    profile: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    pair_rows = np.zeros(0, dtype=np.int64)
    pair_age = np.zeros(0, dtype=np.float64)
    if len(interactions):
        inter = interactions.assign(
            _row=interactions["product_id"].astype(str).map(row_of),
            _uid=interactions["user_id"].astype(str),
            _ts=pd.to_datetime(interactions["last_ts"], utc=True),
        )
        purchased = _rows_by_user(inter[inter["purchased"].astype(bool)], frozenset)
        had = _rows_by_user(inter[inter["had"].astype(bool)], frozenset)
        # newest first; ties (one invoice holds many lines at one time) by weight, then row: the same order
        # whichever order the interactions were read in
        recent = inter.sort_values(["_uid", "_ts", "weight", "_row"], ascending=[True, False, False, True],
                                   na_position="last", kind="stable")
        history = _rows_by_user(recent, list)
        pos = recent[recent["weight"] > 0]
        newest = pos.groupby("_uid")["_ts"].transform("max")
        user_age = ((newest - pos["_ts"]).dt.total_seconds() / 86400).fillna(0.0).to_numpy()
        rows = pos["_row"].astype(int).to_numpy()
        for uid, idx in pos.groupby("_uid", sort=False).indices.items():
            profile[uid] = (rows[idx], user_age[idx])
        end = pos["_ts"].max()
        pair_rows = rows
        pair_age = ((end - pos["_ts"]).dt.total_seconds() / 86400).fillna(0.0).to_numpy() if len(pos) else pair_age
    clusters = products["cluster"].to_numpy(dtype=np.int64)
    members = {int(c): np.flatnonzero(clusters == c) for c in np.unique(clusters)}
    pop = products["popularity"].to_numpy(dtype=np.float64)
    top = np.log1p(pop.max()) if len(pop) and pop.max() > 0 else 1.0
    order = np.argsort(-pop, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    titles, product_ids = products["title"].astype(str).tolist(), products["product_id"].astype(str).tolist()
    return Bundle(
        folder=Path(folder), manifest=manifest, products=products, embeddings=embeddings, index=index,
        clusters=clusters, popularity=np.log1p(pop) / top,
        prices=products["price"].to_numpy(dtype=np.float64), titles=titles, product_ids=product_ids,
        item_factors=item_factors, user_factors=user_factors, user_rows=user_rows, row_of=row_of,
        purchased=purchased, history=history, had=had, profile=profile, pair_rows=pair_rows, pair_age_days=pair_age,
        item_neighbours=item_neighbours, item_weights=item_weights,
        popularity_rank=rank, popularity_order=order,
        members=members,
        member_embeddings={} if faiss_kind(manifest) in IVF_KINDS else
        {c: np.ascontiguousarray(embeddings[m], dtype=np.float32) for c, m in members.items()},
        search=ProductSearch(titles, product_ids, rank),
        reorders=Reorders.from_table(buy_again, row_of) if buy_again is not None and len(buy_again) else None,
    )
