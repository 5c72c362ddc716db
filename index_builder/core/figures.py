"""The insights figures (plotly), shared by the build's report page (:mod:`index_builder.insights.report`)
and the chat's Insights tab (:mod:`assistant.insights`), so the two always agree. Pure functions of plain
tables; plain lists inside, so the JSON reads back as lists."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

TOP_RECOMMENDED = 20
METRIC_COLUMNS = ("ndcg", "hr", "precision", "recall", "map", "coverage")


TOP_RECOMMENDED = 20


METRIC_COLUMNS = ("ndcg", "hr", "precision", "recall", "map", "coverage")


def metrics_table(metrics: dict[str, Any] | None, k: int = 10, track: str = "new") -> pd.DataFrame:
    """One row per model (the chat's hybrid and its baselines), the @k metrics as columns. ``track``: "new"
    (truth = products new to the user) or "all" (everything bought next, repeats included)."""
    source = (metrics or {}) if track == "new" else ((metrics or {}).get("all_items") or {})
    models = source.get("models") or {}
    rows = [{"model": name, **{f"{m}@{k}": row.get(f"{m}@{k}") for m in METRIC_COLUMNS}} for name, row in models.items()]
    return pd.DataFrame(rows, columns=["model", *[f"{m}@{k}" for m in METRIC_COLUMNS]])


def recommended_counts(edges: pd.DataFrame | None, n_products: int, row_of: dict[str, int]) -> np.ndarray:
    """How many users each product (by bundle row) is recommended to."""
    deg = np.zeros(n_products, dtype=np.int64)
    if edges is not None and len(edges):
        np.add.at(deg, edges["product_id"].astype(str).map(row_of).to_numpy(dtype=np.int64), 1)
    return deg


# ---------------------------------------------------------------------------------------------------
# figures (plotly), shared by the page and the app; plain lists, so the JSON reads back as lists
# ---------------------------------------------------------------------------------------------------
def _money(value: float, currency: str | None) -> str:
    from index_builder.core.text import money

    return money(None if value != value else float(value), currency)


def _hover(points: pd.DataFrame, currency: str | None, label: str) -> dict[str, Any]:
    """Map points' hover: title, price and id, with the trace's label on the side."""
    data = [[t, _money(p, currency), pid] for t, p, pid in
            zip(points["title"], points["price"], points["product_id"], strict=True)]
    return {"customdata": data,
            "hovertemplate": "%{customdata[0]}<br>%{customdata[1]} · id %{customdata[2]}<extra>" + label + "</extra>"}


def fig_kmeans(sweep: list[dict[str, Any]], k: int, elbow: int):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("Elbow: within-cluster sum of squares",
                                                        "Silhouette (cosine), higher is better"))
    ks = [int(r["k"]) for r in sweep]
    for col, key, name in ((1, "wssse", "WSSSE"), (2, "silhouette", "silhouette")):
        ys = [float(r[key]) for r in sweep]
        fig.add_trace(go.Scatter(x=ks, y=ys, mode="lines+markers", name=name), row=1, col=col)
        for mark, symbol, colour, label in ((k, "star", "#2ca02c", f"chosen k={k}"), (elbow, "x", "#7f7f7f", f"elbow k={elbow}")):
            if mark in ks:
                fig.add_trace(go.Scatter(x=[mark], y=[ys[ks.index(mark)]], mode="markers", name=label,
                                         legendgroup=label, showlegend=col == 1,
                                         marker={"symbol": symbol, "size": 16, "color": colour}), row=1, col=col)
        fig.add_vline(x=k, line={"color": "#2ca02c", "dash": "dot"}, row=1, col=col)
        fig.update_xaxes(title_text="k (clusters)", row=1, col=col)
        fig.update_yaxes(title_text=name, row=1, col=col)
    fig.update_layout(title=f"KMeans: chosen k={k} (elbow at k={elbow})", height=420, margin={"t": 80})
    return fig


def fig_map(points: pd.DataFrame, labels: dict[int, str], share: list[float], *, currency: str | None = None,
            marks: dict[str, pd.DataFrame] | None = None):
    """The PCA map: one trace per cluster over the shown sample; ``marks`` (name -> points) drawn on top."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    palette = qualitative.Dark24 + qualitative.Light24  # 48 distinct colours; the default has 10
    shown = points[points["shown"]]
    fig = go.Figure()
    for i, (c, grp) in enumerate(shown.groupby("cluster", sort=True)):
        fig.add_trace(go.Scattergl(
            x=grp["x"].round(4).tolist(), y=grp["y"].round(4).tolist(), mode="markers",
            name=f"{int(c)}: {labels.get(int(c), '')}",
            marker={"size": 5, "opacity": 0.7, "color": palette[i % len(palette)]},
            **_hover(grp, currency, f"cluster {int(c)}"),
        ))
    styles = {"bought": ("diamond", "#d62728"), "viewed": ("star", "#ff7f0e"), "recommended": ("circle-open", "#2ca02c")}
    for name, pts in (marks or {}).items():
        symbol, colour = styles.get(name.split(" ")[0], ("circle-open", "#000000"))
        fig.add_trace(go.Scatter(
            x=pts["x"].round(4).tolist(), y=pts["y"].round(4).tolist(), mode="markers", name=f"{name} ({len(pts)})",
            marker={"symbol": symbol, "size": 15, "color": colour,
                    "line": {"width": 3 if symbol.endswith("open") else 1.5, "color": colour if symbol.endswith("open") else "#000000"}},
            **_hover(pts, currency, name),
        ))
    n, m = len(points), len(shown)
    note = f"all {n:,} products" if m == n else f"a random sample of {m:,} of {n:,} products"
    fig.update_layout(
        title=f"Products by embedding (PCA), coloured by cluster: {note}", height=640,
        xaxis_title=f"PC 1 ({share[0]:.0%} of variance)", yaxis_title=f"PC 2 ({share[1]:.0%} of variance)",
        legend={"title": {"text": "cluster: commonest title words"}, "font": {"size": 10}},
        meta={"products": n, "shown": m},
    )
    return fig


def fig_metrics(table: pd.DataFrame, k: int = 10, title: str | None = None):
    import plotly.graph_objects as go

    fig = go.Figure()
    for metric in (f"ndcg@{k}", f"hr@{k}"):
        fig.add_trace(go.Bar(x=table["model"].tolist(), y=[float(v) for v in table[metric].fillna(0)], name=metric,
                             text=[f"{v:.3f}" for v in table[metric].fillna(0)], textposition="outside"))
    fig.update_layout(title=title or f"Next-purchase quality on the held-out weeks: the chat's hybrid vs baselines (@{k})",
                      barmode="group", xaxis_title="model", yaxis_title="score", height=420)
    return fig


def fig_top_recommended(counts: np.ndarray, titles: list[str], product_ids: list[str], n_users: int,
                        top: int = TOP_RECOMMENDED):
    import plotly.graph_objects as go

    from index_builder.core.text import readable_title

    rows = [int(r) for r in np.argsort(-counts, kind="stable")[:top] if counts[r] > 0][::-1]
    fig = go.Figure(go.Bar(
        x=[int(counts[r]) for r in rows], y=[f"{readable_title(titles[r])[:40]} ({product_ids[r]})" for r in rows],
        orientation="h", name="users", hovertemplate="%{y}: recommended to %{x} users<extra></extra>"))
    fig.update_layout(title=f"Most recommended products (top {len(rows)}, over {n_users:,} users' top picks)",
                      xaxis_title="users it is recommended to", yaxis_title="product",
                      height=max(320, 24 * len(rows) + 140), margin={"l": 320})
    return fig


def fig_degree(counts: np.ndarray, n_users: int):
    import plotly.graph_objects as go

    reached = int((counts > 0).sum())
    values, freq = np.unique(counts, return_counts=True)
    fig = go.Figure(go.Bar(x=values.astype(int).tolist(), y=freq.astype(int).tolist(), name="products",
                           hovertemplate="%{y} products are recommended to %{x} users<extra></extra>"))
    share = reached / len(counts) if len(counts) else 0.0
    fig.update_layout(
        title=f"Degree distribution of the recommendation graph: {reached:,} of {len(counts):,} products "
              f"({share:.0%}) reach at least one of {n_users:,} users",
        xaxis_title="in-degree (users a product is recommended to)", yaxis_title="products (log scale)",
        yaxis_type="log", height=400)
    return fig
