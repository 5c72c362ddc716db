"""The app's Insights tab: the bundle's report figures, and the product map with one shopper's products marked.

Reads what the build wrote (``report/map.parquet``, ``graph/edges.csv``, the manifest) and draws with the
same figure functions (``index_builder.core.figures``) as ``report/report.html``, so the tab and the page always agree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from index_builder.core import figures
from index_builder.core.bundle import EDGES, GRAPH_DIR, MAP_POINTS, PRODUCT_NS, REPORT_DIR, REPORT_HTML, USER_NS
from index_builder.core.bundle_reader import Bundle

log = logging.getLogger(__name__)


@dataclass
class Insights:
    bundle: Bundle
    points: pd.DataFrame  # every product's map position, indexed by product_id
    labels: dict[int, str]
    share: list[float]
    counts: np.ndarray  # users each product (by row) is recommended to
    graph_users: int
    picks: dict[str, list[str]]  # user_id -> the graph's product ids for them, best first

    @classmethod
    def load(cls, b: Bundle) -> Insights | None:
        """None when the bundle predates the report (rebuild it to get one)."""
        path = b.folder / REPORT_DIR / MAP_POINTS
        if not path.is_file():
            return None
        points = pd.read_parquet(path)
        info = b.manifest.get("report", {})
        labels = {int(c): w for c, w in info.get("cluster_labels", {}).items()}
        edges_path = b.folder / GRAPH_DIR / EDGES
        edges = None
        if edges_path.is_file():
            raw = pd.read_csv(edges_path, dtype={"src": str, "dst": str})
            edges = pd.DataFrame({"user_id": raw["src"].str.removeprefix(USER_NS),
                                  "product_id": raw["dst"].str.removeprefix(PRODUCT_NS)})
        counts = figures.recommended_counts(edges, len(b.product_ids), b.row_of)
        picks = {} if edges is None else edges.groupby("user_id", sort=False)["product_id"].apply(list).to_dict()
        return cls(bundle=b, points=points.set_index("product_id", drop=False), labels=labels,
                   share=list(info.get("pca_variance", [0.0, 0.0])), counts=counts, graph_users=len(picks),
                   picks=picks)

    @property
    def html_path(self) -> Path | None:
        path = self.bundle.folder / REPORT_DIR / REPORT_HTML
        return path if path.is_file() else None

    def marks(self, user_id: str | None, viewed: Sequence[str] = ()) -> dict[str, pd.DataFrame]:
        """The shopper's products on the map: what they bought, what they viewed (this session or before) and
        what the build's recommendation graph picks for them."""
        b = self.bundle
        out: dict[str, pd.DataFrame] = {}
        bought_rows = sorted(b.purchased.get(user_id, ())) if user_id else []
        bought = [b.product_ids[r] for r in bought_rows]
        earlier = [b.product_ids[r] for r in b.history.get(user_id, [])] if user_id else []
        seen = list(dict.fromkeys([*viewed, *(p for p in earlier if p not in set(bought))]))
        picked = self.picks.get(user_id, []) if user_id else []
        for name, ids in ((f"bought by {user_id}", bought), ("viewed", seen), ("recommended", picked)):
            ids = [p for p in ids if p in self.points.index]
            if ids:
                out[name] = self.points.loc[ids]
        return out

    def map_figure(self, user_id: str | None = None, viewed: Sequence[str] = ()):
        fig = figures.fig_map(self.points, self.labels, self.share, currency=self.bundle.currency,
                             marks=self.marks(user_id, viewed))
        fig.update_layout(height=620)
        return fig

    def kmeans_figure(self):
        km = self.bundle.manifest.get("kmeans", {})
        return figures.fig_kmeans(km["sweep"], km["k"], km["elbow_k"]) if km.get("sweep") else None

    def metrics_table(self, track: str = "new") -> pd.DataFrame:
        """The evaluation's table: "new" products (discovery) or "all" items bought next (restocks included)."""
        return figures.metrics_table(self.bundle.manifest.get("metrics"), track=track).round(4)

    def top_figure(self):
        if not self.graph_users:
            return None
        return figures.fig_top_recommended(self.counts, self.bundle.titles, self.bundle.product_ids, self.graph_users)

    def degree_figure(self):
        return figures.fig_degree(self.counts, self.graph_users) if self.graph_users else None

    def summary(self) -> str:
        m: dict[str, Any] = self.bundle.manifest
        k = m.get("kmeans", {}).get("k", "?")
        hybrid = m.get("metrics", {}).get("models", {}).get("hybrid")
        quality = (f" The chat's picks: NDCG@10 {hybrid['ndcg@10']:.3f}, hit rate@10 {hybrid['hr@10']:.3f} on the "
                   "held-out weeks." if hybrid else "")
        return (f"**{len(self.points):,} products in {k} clusters**, {self.graph_users:,} customers in the "
                f"recommendation graph.{quality} Pick a customer in the sidebar to mark their products on the map.")
