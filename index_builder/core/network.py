"""The recommendation network as a picture a person can read: one customer's neighbourhood, or an overview.

The whole graph (every customer -> their top picks; 4,363 customers and 43,630 edges on UCI) is a hairball,
so what is drawn is capped and the figure's title says what was left out:

- :func:`neighbourhood`: one customer, the products recommended to them, the other customers those products
  are recommended to (the ones sharing most of them first) and, faded, what the customer already had (bought or
  rated: never recommended to them again);
- :func:`overview`: the most recommended products and a seeded sample of the customers they go to.

:func:`layout` places the nodes with networkx (a seeded spring layout: the same graph always gets the same
picture) and :func:`fig_network` draws them with plotly, hover text on every node. Node ids are the graph
files' namespaced ids (``user:<id>``, ``product:<id>``), kept in each point's ``customdata`` so a test (or
a script) can read back which products a picture shows. Used by the report and the app's Insights tab.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from index_builder.core.bundle import PRODUCT_NS, USER_NS
from index_builder.core.text import plotly_text, readable_title

CUSTOMER = "customer"  # the customer whose neighbourhood it is
RECOMMENDED = "recommended to them"
OTHERS = "also recommended to"
HAD = "already had (bought or rated)"
PRODUCT = "most recommended products"
SAMPLED = "customers (seeded sample)"

MAX_OTHERS = 40  # other customers drawn around one customer's picks
MAX_HAD = 12  # the products the customer already had that are drawn, newest first
OVERVIEW_PRODUCTS = 25
OVERVIEW_CUSTOMERS = 60
SPREAD = 3.0  # the spring layout's node distance, times 1/sqrt(nodes): labels need room

STYLE = {  # role -> (symbol, size, colour, opacity, labelled)
    CUSTOMER: ("star", 26, "#d62728", 1.0, True),
    RECOMMENDED: ("circle", 16, "#2ca02c", 0.95, True),
    OTHERS: ("circle", 8, "#1f77b4", 0.8, False),
    HAD: ("square", 10, "#9e9e9e", 0.35, False),
    PRODUCT: ("circle", 14, "#2ca02c", 0.95, True),
    SAMPLED: ("circle", 7, "#1f77b4", 0.8, False),
}
EDGE_STYLE = {  # edge role -> (colour, width, dash)
    "picked": ("rgba(44,160,44,0.8)", 2.0, "solid"),
    "shared": ("rgba(31,119,180,0.25)", 1.0, "solid"),
    "had": ("rgba(158,158,158,0.35)", 1.0, "dot"),
}


@dataclass
class Network:
    """Nodes (``id, role, label, hover``) and edges (``src, dst, role``) of a capped picture, and its title."""

    nodes: pd.DataFrame
    edges: pd.DataFrame
    title: str
    centre: str | None = None  # the node pinned at the middle (the customer), if any
    left_out: dict[str, int] = field(default_factory=dict)  # what was not drawn, by kind

    def ids(self, role: str) -> list[str]:
        """The un-namespaced ids of the nodes of one role (products or customers)."""
        ids = self.nodes.loc[self.nodes["role"] == role, "id"]
        return [i.split(":", 1)[1] for i in ids]


def _order(values, seed: int):
    """A deterministic shuffle (crc32 of seed and value): the same sample on every run and machine."""
    return sorted(values, key=lambda v: (zlib.crc32(f"{seed}:{v}".encode()), v))


def _short(title: str, n: int = 28) -> str:
    """A node's label: the readable title, cut to ``n`` characters, then escaped for plotly."""
    t = readable_title(str(title))
    return plotly_text(t if len(t) <= n else t[: n - 1] + "…")


def _frame(rows: list[tuple[str, str, str, str]], columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


def recommended_to(picks: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """product id -> the customers it is recommended to (the inverse of ``picks``)."""
    out: dict[str, list[str]] = {}
    for user, products in picks.items():
        for p in products:
            out.setdefault(p, []).append(user)
    return out


def neighbourhood(user: str, picks: Mapping[str, Sequence[str]], to_whom: Mapping[str, Sequence[str]],
                  title_of: Callable[[str], str], had: Sequence[str] = (), *, max_others: int = MAX_OTHERS,
                  max_had: int = MAX_HAD, seed: int = 42) -> Network:
    """``user``, their picks, the other customers those picks go to and (faded) what ``user`` already had.

    ``picks``: customer -> recommended product ids (best first); ``to_whom``: its inverse
    (:func:`recommended_to`); ``title_of``: a product id's title; ``had``: the products the customer already had,
    newest first.
    """
    mine = list(dict.fromkeys(picks.get(user, ())))
    shared = Counter(u for p in mine for u in to_whom.get(p, ()) if u != user)
    others = sorted(_order(shared, seed), key=lambda u: -shared[u])
    drawn_others = others[:max_others]
    history = [p for p in dict.fromkeys(had) if p not in set(mine)]
    drawn_had = history[:max_had]

    def product_hover(p: str, role: str) -> str:
        n = len(to_whom.get(p, ()))
        return (f"{plotly_text(title_of(p))}<br>id {plotly_text(p)} · {role}<br>recommended to {n:,} "
                f"customer{'s' * (n != 1)}")

    who = plotly_text(user)
    rows = [(USER_NS + user, CUSTOMER, f"customer {who}",
             f"customer {who}<br>{len(mine)} recommended products, {len(had)} already had")]
    rows += [(PRODUCT_NS + p, RECOMMENDED, _short(title_of(p)), product_hover(p, "recommended to them"))
             for p in mine]
    rows += [(USER_NS + u, OTHERS, f"customer {plotly_text(u)}",
              f"customer {plotly_text(u)}<br>shares {shared[u]} of these picks") for u in drawn_others]
    rows += [(PRODUCT_NS + p, HAD, _short(title_of(p)), product_hover(p, "already had by them"))
             for p in drawn_had]
    drawn = set(drawn_others)
    edges = [(USER_NS + user, PRODUCT_NS + p, "picked") for p in mine]
    edges += [(USER_NS + u, PRODUCT_NS + p, "shared") for p in mine for u in to_whom.get(p, ()) if u in drawn]
    edges += [(USER_NS + user, PRODUCT_NS + p, "had") for p in drawn_had]
    left_out = {"customers": len(others) - len(drawn_others), "of their past products": len(history) - len(drawn_had)}
    said = "; ".join(f"{n:,} more {what} not drawn" for what, n in left_out.items() if n)
    title = (f"Customer {who}'s neighbourhood: {len(mine)} recommended products, {len(drawn_others)} of "
             f"{len(others):,} other customers they are recommended to<br><sup>most shared first; "
             f"{len(drawn_had)} products they already had, faded{f'; {said}' if said else ''}</sup>")
    return Network(_frame(rows, ("id", "role", "label", "hover")), _frame(edges, ("src", "dst", "role")), title,
                   centre=USER_NS + user, left_out=left_out)


def overview(edges: pd.DataFrame, title_of: Callable[[str], str], *, n_products: int = OVERVIEW_PRODUCTS,
             n_customers: int = OVERVIEW_CUSTOMERS, seed: int = 42) -> Network:
    """The ``n_products`` most recommended products and a seeded sample of ``n_customers`` of the customers
    they are recommended to (each product reached by at least one sampled customer where the sample allows).

    ``edges``: ``user_id, product_id`` rows (the graph's edges); ``title_of``: a product id's title."""
    counts = edges["product_id"].astype(str).value_counts(sort=False)
    counts = counts.sort_values(ascending=False, kind="stable")
    top = [str(p) for p in counts.index[:n_products]]
    on_top = edges[edges["product_id"].astype(str).isin(set(top))]
    by_product = on_top.groupby(on_top["product_id"].astype(str))["user_id"].apply(lambda s: s.astype(str).tolist())
    reachers = set(on_top["user_id"].astype(str))
    sample: list[str] = []
    for p in top:  # first one seeded customer per product, so no product stands alone
        if len(sample) >= n_customers:
            break
        first = next((u for u in _order(by_product.get(p, []), seed) if u not in sample), None)
        if first is not None:
            sample.append(first)
    taken = set(sample)
    sample += [u for u in _order(reachers - taken, seed)][: max(0, n_customers - len(sample))]
    chosen = set(sample)
    drawn = on_top[on_top["user_id"].astype(str).isin(chosen)]
    per_user = drawn.groupby(drawn["user_id"].astype(str)).size()
    n_graph = edges["user_id"].nunique()

    rows = [(PRODUCT_NS + p, PRODUCT, _short(title_of(p)),
             f"{plotly_text(title_of(p))}<br>id {plotly_text(p)}<br>recommended to {int(counts[p]):,} customers")
            for p in top]
    rows += [(USER_NS + u, SAMPLED, f"customer {plotly_text(u)}",
              f"customer {plotly_text(u)}<br>{int(per_user.get(u, 0))} of these products among their top picks")
             for u in sample]
    lines = [(USER_NS + str(u), PRODUCT_NS + str(p), "shared") for u, p in
             zip(drawn["user_id"], drawn["product_id"], strict=True)]
    left_out = {"products": int(len(counts) - len(top)), "customers": int(n_graph - len(sample))}
    title = (f"Recommendation network: the {len(top)} most recommended products and a seeded sample of "
             f"{len(sample)} of the {len(reachers):,} customers they are recommended to<br><sup>{n_graph:,} "
             f"customers and {len(counts):,} products in the whole graph; {len(edges) - len(lines):,} of its "
             f"{len(edges):,} edges not drawn</sup>")
    return Network(_frame(rows, ("id", "role", "label", "hover")), _frame(lines, ("src", "dst", "role")), title,
                   left_out=left_out)


def layout(net: Network, seed: int = 42) -> dict[str, tuple[float, float]]:
    """Node positions: a seeded networkx spring layout; the centre customer pinned at (0, 0), their picks
    starting on a ring around it, the others outside."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(net.nodes["id"])
    g.add_edges_from(zip(net.edges["src"], net.edges["dst"], strict=True))
    if not len(g):
        return {}
    start: dict[str, tuple[float, float]] = {}
    rings = {RECOMMENDED: 1.0, HAD: 0.6, OTHERS: 2.0}
    for role, radius in rings.items():
        ids = net.nodes.loc[net.nodes["role"] == role, "id"].tolist()
        for i, node in enumerate(ids):
            angle = 2 * math.pi * i / max(1, len(ids)) + (0.3 if role != RECOMMENDED else 0.0)
            start[node] = (radius * math.cos(angle), radius * math.sin(angle))
    fixed = None
    if net.centre is not None and net.centre in g:
        start[net.centre] = (0.0, 0.0)
        fixed = [net.centre]
    pos = nx.spring_layout(g, pos=start or None, fixed=fixed, seed=seed, iterations=150,
                           k=SPREAD / math.sqrt(len(g)) if len(g) > 1 else None)
    return {n: (float(x), float(y)) for n, (x, y) in pos.items()}


def fig_network(net: Network, pos: Mapping[str, tuple[float, float]] | None = None, *, height: int = 640):
    """The network drawn with plotly: one line trace per edge kind, one marker trace per node role (hover
    text; ids in ``customdata``)."""
    import plotly.graph_objects as go

    pos = layout(net) if pos is None else pos
    fig = go.Figure()
    for role, (colour, width, dash) in EDGE_STYLE.items():
        part = net.edges[net.edges["role"] == role]
        if not len(part):
            continue
        xs: list[float | None] = []
        ys: list[float | None] = []
        for s, d in zip(part["src"], part["dst"], strict=True):
            xs += [round(pos[s][0], 4), round(pos[d][0], 4), None]
            ys += [round(pos[s][1], 4), round(pos[d][1], 4), None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False, name=f"edges: {role}",
                                 line={"color": colour, "width": width, "dash": dash}))
    for role, (symbol, size, colour, opacity, labelled) in STYLE.items():
        part = net.nodes[net.nodes["role"] == role]
        if not len(part):
            continue
        fig.add_trace(go.Scatter(
            x=[round(pos[i][0], 4) for i in part["id"]], y=[round(pos[i][1], 4) for i in part["id"]],
            mode="markers+text" if labelled else "markers", name=f"{role} ({len(part)})",
            text=part["label"].tolist() if labelled else None, textposition="top center", textfont={"size": 9},
            marker={"symbol": symbol, "size": size, "color": colour, "opacity": opacity,
                    "line": {"width": 1, "color": "#ffffff"}},
            customdata=[[i, h] for i, h in zip(part["id"], part["hover"], strict=True)],
            hovertemplate="%{customdata[1]}<extra></extra>",
        ))
    fig.update_layout(title={"text": net.title, "font": {"size": 13}}, height=height, hovermode="closest",
                      xaxis={"visible": False}, yaxis={"visible": False},
                      legend={"orientation": "h", "y": -0.02}, margin={"l": 10, "r": 10, "t": 70, "b": 10},
                      meta={"nodes": len(net.nodes), "edges": len(net.edges), "left_out": net.left_out})
    return fig
