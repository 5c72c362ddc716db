"""The app's Insights tab: the bundle's report figures, and the product map with one shopper's products marked.

Reads what the build wrote (``report/map.parquet``, ``graph/edges.csv``, the manifest) and draws with the
same figure functions (``index_builder.core.figures``) as ``report/report.html``, so the tab and the page always agree.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from index_builder.core import figures, network
from index_builder.core.bundle import (
    EDGES,
    EVENTS_SUMMARY,
    GRAPH_DIR,
    MAP_POINTS,
    PRODUCT_NS,
    REPORT_DIR,
    REPORT_HTML,
    USER_NS,
)
from index_builder.core.bundle_reader import Bundle
from index_builder.core.text import plotly_text

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
    edges: pd.DataFrame | None = None  # the graph's user_id, product_id rows
    to_whom: dict[str, list[str]] | None = None  # product_id -> the graph's users it is recommended to

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
                   picks=picks, edges=edges, to_whom=network.recommended_to(picks))

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

    def title_of(self, product_id: str) -> str:
        b = self.bundle
        row = b.row_of.get(product_id)
        return b.titles[row] if row is not None else product_id

    def network_figure(self, user_id: str | None = None):
        """The picked customer's neighbourhood in the recommendation graph (their picks, the other customers
        those go to, what they already had, faded); with no customer (or one outside the graph), the overview the
        report draws. None when the bundle has no graph."""
        if not self.graph_users or self.edges is None:
            return None
        b = self.bundle
        if user_id not in b.user_rows:  # not a customer of this bundle (whatever the page sent): the overview
            user_id = None
        if user_id and user_id in self.picks:
            had = set(b.had.get(user_id, ()))  # bought or rated: what the graph never recommends them again
            newest_first = [b.product_ids[r] for r in b.history.get(user_id, []) if r in had]
            net = network.neighbourhood(user_id, self.picks, self.to_whom or {}, self.title_of, newest_first,
                                        seed=self.seed)
        else:
            net = network.overview(self.edges, self.title_of, seed=self.seed)
            if user_id:  # a customer the graph does not hold (outside its sample): said, not hidden
                net.title = (f"Customer {plotly_text(user_id)} is not in the build's recommendation graph "
                             f"({self.graph_users:,} customers; --graph-users sets how many), so here is its "
                             f"overview<br>{net.title.replace('<br>', ' · ')}")
        return network.fig_network(net, network.layout(net, self.seed))

    @property
    def seed(self) -> int:
        return int(self.bundle.manifest.get("params", {}).get("seed", 42))

    @cached_property
    def events(self) -> dict[str, Any] | None:
        """What the events say (``report/events.json``, the build's Spark summary); None when the bundle predates it."""
        path = self.bundle.folder / REPORT_DIR / EVENTS_SUMMARY
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def event_figures(self) -> dict[str, Any]:
        """The report's events figures by name (``events_timeline``, ``funnel``, ``long_tail``, ``best_sellers``;
        those the bundle has data for), drawn from the same summary by the same functions as the page."""
        return figures.event_figures(self.events)

    def event_notes(self) -> dict[str, str]:
        """The sentence under each events figure (``events`` alone for a bundle without events); empty when the
        bundle predates the summary."""
        return figures.event_notes(self.events) if self.events is not None else {}

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


def _when(value: Any) -> pd.Timestamp | None:
    """A manifest's time (epoch seconds or milliseconds, or an ISO string; naive means UTC) in UTC; None when
    missing or unreadable (the panel reads manifests that other versions of the stream wrote)."""
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        if isinstance(value, int | float):
            stamp = pd.to_datetime(value, unit="ms" if abs(value) > 1e11 else "s", utc=True, errors="coerce")
        else:
            stamp = pd.to_datetime(str(value), utc=True, errors="coerce")
    except (ValueError, OverflowError, TypeError):
        return None
    return None if pd.isna(stamp) else stamp


def _count(value: Any) -> int:
    try:
        return max(0, int(float(value)))
    except (TypeError, ValueError, OverflowError):
        return 0


def _hms(stamp: pd.Timestamp) -> str:
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(a: pd.Timestamp, b: float | pd.Timestamp) -> str:
    """``b - a`` as a duration; a negative one says the clocks disagree (it is not hidden as 0)."""
    gap = (b.timestamp() if isinstance(b, pd.Timestamp) else float(b)) - a.timestamp()
    return f"**{gap:.1f} s**" if gap >= 0 else f"**{gap:.1f} s** (the clocks of the stream and this app disagree)"


def freshness_markdown(manifest: dict[str, Any], version: Any, *, since: float | None = None, swaps: int = 0,
                       following: bool = True) -> str:
    """The Insights tab's live panel: the version served, the events the stream folded in since the last full
    build, how long the newest batch took from reaching the stream to being served, the dead letters by reason.
    Whatever the manifest holds, it says what it can read and never raises on a field (a missing or malformed one
    is left out or shown as "?")."""
    lines = ["### Live: what this app serves now"]
    served = f"Serving version **{html.escape(str(version))}**"
    if _when(since) is not None:
        served += f" since {_hms(_when(since))}"
    if following:
        served += f" ({swaps} hot reload{'s' * (swaps != 1)} since the app started; this panel follows them)."
    else:
        served += " (a fixed version: this app does not follow a bundle root)."
    lines.append(served)
    s = manifest.get("stream") if isinstance(manifest, dict) else None
    if not isinstance(s, dict) or not s:
        built = _when((manifest or {}).get("created_at")) if isinstance(manifest, dict) else None
        lines.append(f"No live events in this version: it is the full build of {_hms(built) if built else '?'}. "
                     "When `python -m index_builder stream` publishes into this bundle root, this panel shows what it "
                     "folded in.")
        return "\n\n".join(lines)
    newest, arrived, published = _when(s.get("newest_event_ts")), _when(s.get("arrived_at")), _when(s.get("published_at"))
    built = _when(s.get("full_build_at"))
    n_pub = _count(s.get("publishes"))
    lines.append(f"**{_count(s.get('events_total')):,} events folded in** over {n_pub:,} publish{'es' * (n_pub != 1)} "
                 f"since the full build {html.escape(str(s.get('full_build') or '?'))}"
                 f"{f' ({_hms(built)})' if built is not None else ''}; this version added "
                 f"{_count(s.get('events_folded')):,} events, {_count(s.get('new_users')):,} new customers and "
                 f"{_count(s.get('new_products')):,} new products"
                 f"{f' (published {_hms(published)})' if published is not None else ''}.")
    if arrived is not None:
        said = f"This version's newest batch reached the stream at {_hms(arrived)}"
        if published is not None:
            said += f"; the version was published {_seconds(arrived, published)} later"
        if since is not None and _when(since) is not None:
            said += f" and served {_seconds(arrived, float(since))} after the batch arrived"
        lines.append(said + ".")
    if newest is not None:
        lines.append(f"The newest event time stamp folded in so far: {_hms(newest)}.")
    dead = s.get("dead_letters")
    if not isinstance(dead, dict):
        lines.append("Dead letters: not recorded by the stream that published this version.")
    elif not dead:
        lines.append("Dead letters: **none** so far.")
    else:
        counts = {str(reason): _count(n) for reason, n in dead.items()}
        cell = {r: html.escape(" ".join(r.split())).replace("|", "\\|") for r in counts}  # a | or newline ends the cell
        rows = "\n".join(f"| {cell[r]} | {n:,} |" for r, n in counts.items())
        lines.append(f"Dead letters so far, **{sum(counts.values()):,}** records kept with their reason "
                     f"(in the stream's dead_letter folder):\n\n| reason | records |\n|---|---:|\n{rows}")
    return "\n\n".join(lines)
