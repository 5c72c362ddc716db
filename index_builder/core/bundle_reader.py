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


def faiss_kind(manifest: dict[str, Any]) -> str:
    return str(manifest.get("faiss", {}).get("kind") or "flat")


@dataclass(frozen=True)
class Bundle:
    """Everything the recommender reads. Row i of every per-product array is ``products`` row i."""

    folder: Path
    manifest: dict[str, Any]
    products: pd.DataFrame
    embeddings: np.ndarray  # (n_products, dim) unit-norm; float32, or float16 in a big (ivfpq) bundle: use vectors()
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
    embeddings = fmt.load_array(folder, fmt.EMBEDDINGS)
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
                    item_neighbours: np.ndarray | None = None, item_weights: np.ndarray | None = None) -> Bundle:
    """A :class:`Bundle` from tables and arrays already in memory (the reader and the evaluation use it).

    ``interactions``: one row per (user, product) with ``weight``, ``purchased``, ``had`` and ``last_ts``.
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
    )
