"""The user -> product recommendation graph: what the chat would recommend to each customer, as CSV.

Written into the bundle as ``graph/vertices.csv`` (``id, kind, label``) and ``graph/edges.csv``
(``src, dst, score, rank``), like the streaming seed project's export. Users and products live in
separate id namespaces (``user:<id>``, ``product:<id>``), so a customer number can never be mistaken
for a stock code. Each user's edges are the assistant's own "what should I buy next?" answer on the
finished bundle (the hybrid the evaluation scores), so the graph shows what shoppers would be shown.

No pyspark here: the graph is computed from the bundle assembled in memory.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from index_builder.core.bundle_reader import Bundle

from index_builder.core.bundle import EDGES, GRAPH_DIR, PRODUCT_NS, USER_NS, VERTICES

log = logging.getLogger(__name__)

DEFAULT_K = 10
DEFAULT_MAX_USERS = 20_000


def graph_users(b: Bundle, max_users: int | None, seed: int = 42) -> list[str]:
    """The users the graph covers: all with a history, or a deterministic sample of ``max_users``."""
    users = sorted(u for u in b.user_rows if b.history.get(u))
    if max_users and len(users) > max_users:
        users = sorted(users, key=lambda u: zlib.crc32(f"{seed}:{u}".encode()))[:max_users]
        users.sort()
    return users


def recommendation_edges(b: Bundle, users: list[str], k: int = DEFAULT_K, processes: int | None = None) -> pd.DataFrame:
    """``user_id, product_id, score, rank`` (rank 1 = first pick): the assistant's top ``k`` for each user
    (:func:`~index_builder.scoring.ranking.rank_users`)."""
    from index_builder.scoring.ranking import rank_users

    tops = rank_users(b, users, k, processes, desc="recommendation graph")
    rows = [(uid, b.product_ids[r], score, rank) for uid, top in zip(users, tops, strict=True)
            for rank, (r, score) in enumerate(top, start=1)]
    return pd.DataFrame(rows, columns=["user_id", "product_id", "score", "rank"])


def graph_tables(b: Bundle, edges: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(vertices, edges) in the exported shape, ids namespaced; products only when an edge reaches them."""
    users = sorted(set(edges["user_id"]))
    products = sorted(set(edges["product_id"]), key=lambda p: b.row_of[p])
    vertices = pd.DataFrame({
        "id": [USER_NS + u for u in users] + [PRODUCT_NS + p for p in products],
        "kind": ["user"] * len(users) + ["product"] * len(products),
        "label": [f"customer {u}" for u in users] + [b.titles[b.row_of[p]] for p in products],
    })
    out = pd.DataFrame({
        "src": USER_NS + edges["user_id"].astype(str),
        "dst": PRODUCT_NS + edges["product_id"].astype(str),
        "score": edges["score"].round(6),
        "rank": edges["rank"].astype(int),
    })
    return vertices, out


def write_graph(folder: Path, b: Bundle, edges: pd.DataFrame) -> dict[str, int]:
    """Write ``graph/vertices.csv`` and ``graph/edges.csv`` under ``folder``; returns the counts for the manifest."""
    vertices, out = graph_tables(b, edges)
    target = Path(folder) / GRAPH_DIR
    target.mkdir(parents=True, exist_ok=True)
    vertices.to_csv(target / VERTICES, index=False)
    out.to_csv(target / EDGES, index=False)
    return {"users": int((vertices["kind"] == "user").sum()), "products": int((vertices["kind"] == "product").sum()),
            "edges": len(out)}

