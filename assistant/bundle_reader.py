"""Load one verified bundle into memory: tables, arrays and the FAISS index, immutable once loaded."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from index_builder import bundle as fmt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bundle:
    """Everything the recommender reads. Row i of every per-product array is ``products`` row i."""

    folder: Path
    manifest: dict[str, Any]
    products: pd.DataFrame
    embeddings: np.ndarray  # (n_products, dim) float32, unit-norm
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
    popularity_rank: np.ndarray = field(repr=False, default=None)  # (n_products,) 1 = best seller
    popularity_order: np.ndarray = field(repr=False, default=None)  # rows, best seller first
    members: dict[int, np.ndarray] = field(repr=False, default_factory=dict)  # cluster -> rows
    member_embeddings: dict[int, np.ndarray] = field(repr=False, default_factory=dict)  # cluster -> (m, dim)

    @property
    def version(self) -> str:
        return str(self.manifest.get("version"))

    @property
    def has_als(self) -> bool:
        return self.item_factors is not None

    def product(self, row: int) -> dict[str, Any]:
        price = self.prices[row]
        return {"product_id": self.product_ids[row], "title": self.titles[row],
                "price": None if price != price else float(price)}


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
    item_f = user_f = None
    user_rows: dict[str, int] = {}
    if (folder / fmt.ITEM_FACTORS).is_file():
        item_f = fmt.load_array(folder, fmt.ITEM_FACTORS)
        user_f = fmt.load_array(folder, fmt.USER_FACTORS)
    users = pd.read_parquet(folder / fmt.USERS)
    user_rows = dict(zip(users["user_id"].astype(str), users["user_idx"].astype(int), strict=True))
    inter = pd.read_parquet(folder / fmt.INTERACTIONS)
    row_of = {pid: i for i, pid in enumerate(products["product_id"].astype(str))}
    purchased: dict[str, frozenset[int]] = {}
    history: dict[str, list[int]] = {}
    if len(inter):
        inter = inter.assign(_row=inter["product_id"].astype(str).map(row_of))
        for uid, grp in inter[inter["purchased"]].groupby("user_id"):
            purchased[str(uid)] = frozenset(grp["_row"].astype(int))
        recent = inter.sort_values(["user_id", "last_ts", "weight"], ascending=[True, False, False])
        for uid, grp in recent.groupby("user_id", sort=False):
            history[str(uid)] = grp["_row"].astype(int).tolist()
    if manifest.get("faiss", {}).get("nprobe"):
        faiss.extract_index_ivf(index).nprobe = int(manifest["faiss"]["nprobe"])
    clusters = products["cluster"].to_numpy(dtype=np.int64)
    members = {int(c): np.flatnonzero(clusters == c) for c in np.unique(clusters)}
    pop = products["popularity"].to_numpy(dtype=np.float64)
    top = np.log1p(pop.max()) if len(pop) and pop.max() > 0 else 1.0
    order = np.argsort(-pop, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    log.info("loaded bundle %s: %d products, %d users", folder.name, n, len(user_rows))
    return Bundle(
        folder=folder, manifest=manifest, products=products, embeddings=embeddings, index=index,
        clusters=clusters, popularity=np.log1p(pop) / top,
        prices=products["price"].to_numpy(dtype=np.float64), titles=products["title"].astype(str).tolist(),
        product_ids=products["product_id"].astype(str).tolist(),
        item_factors=item_f, user_factors=user_f, user_rows=user_rows, row_of=row_of,
        purchased=purchased, history=history, popularity_rank=rank, popularity_order=order,
        members=members, member_embeddings={c: np.ascontiguousarray(embeddings[m]) for c, m in members.items()},
    )
