"""The insights figures (plotly), shared by the build's report page (:mod:`index_builder.insights.report`)
and the chat's Insights tab (:mod:`assistant.insights`), so the two always agree. Pure functions of plain
tables; plain lists inside, so the JSON reads back as lists."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from index_builder.core.text import money, plotly_text, readable_title

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
    return money(None if value != value else float(value), currency)


def _hover(points: pd.DataFrame, currency: str | None, label: str) -> dict[str, Any]:
    """Map points' hover: title, price and id, with the trace's label on the side."""
    data = [[plotly_text(t), _money(p, currency), plotly_text(pid)] for t, p, pid in
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

    rows = [int(r) for r in np.argsort(-counts, kind="stable")[:top] if counts[r] > 0][::-1]
    fig = go.Figure(go.Bar(
        x=[int(counts[r]) for r in rows], y=[plotly_text(f"{readable_title(titles[r])[:40]} ({product_ids[r]})") for r in rows],
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


# ---------------------------------------------------------------------------------------------------
# what the events say (the summary of index_builder.insights.events, as stored in report/events.json)
# ---------------------------------------------------------------------------------------------------
TYPE_COLOURS = {"view": "#1f77b4", "cart": "#ff7f0e", "purchase": "#2ca02c", "rating": "#9467bd", "return": "#d62728"}
_DID = {"view": "viewed", "cart": "added to the cart", "purchase": "bought", "rating": "rated"}
_RANKED_BY = {"purchase": "Best sellers", "cart": "Most added to the cart", "rating": "Most rated",
              "view": "Most viewed"}


def _either(words: list[str]) -> str:
    """``view``; ``view or cart``; ``view, cart or purchase``."""
    return " or ".join([", ".join(words[:-1]), words[-1]] if len(words) > 2 else words)


def _top(tail: dict[str, Any]) -> str:
    return f"{tail.get('top_fraction', 0.2):.0%}"


def _day(iso: str) -> str:
    return pd.Timestamp(iso).strftime("%d %b %Y").lstrip("0")


EVENT_HEADINGS = {  # each events section's heading, on the page and in the app
    "events": "What the events say",
    "events_timeline": "What the events say: events over time, by type",
    "funnel": "From view to cart to purchase: the funnel",
    "long_tail": "The long tail: events per customer and per product",
    "best_sellers": "Best sellers of the newest periods",
}


def event_notes(summary: dict[str, Any] | None) -> dict[str, str]:
    """One plain-text sentence per events section (``events`` alone when there are none): what each figure says."""
    s = summary or {}
    n = int(s.get("n_events", 0))
    if not n:
        return {"events": "No events: this bundle is built from the catalog alone, so there is nothing to count "
                          "per week, no funnel, no long tail and no best sellers."}
    said = ", ".join(f"{c:,} {t}" for t, c in s["types"].items())
    span = f" from {_day(s['first'])} to {_day(s['last'])}" if s.get("first") else ""
    undated = f"; {s['undated']:,} without a timestamp are not drawn" if s.get("undated") else ""
    notes = {"events_timeline": f"{n:,} events{span} ({said}){undated}."}
    f = s.get("funnel") or {}
    if "reached" in f:
        steps, reached = f["steps"], f["reached"]
        parts = [f"{reached[0]:,} customers {_DID[steps[0]]}"]
        for i in range(1, len(steps)):
            share = reached[i] / reached[i - 1] if reached[i - 1] else 0.0
            parts.append(f"{reached[i]:,} of them ({share:.0%}) also {_DID[steps[i]]}")
        alone = ", ".join(f"{c:,} {_DID[t]}" for t, c in zip(steps, f["customers"], strict=True))
        missing = f" The events have no {_either(f['absent'])} events." if f.get("absent") else ""
        notes["funnel"] = (f"{'; '.join(parts)}. Distinct customers, in any order (all told: {alone}).{missing}")
    else:
        have = ", ".join(s["types"])
        notes["funnel"] = (f"No funnel: the events have no {_either(f.get('absent', []))} events (only {have}), "
                           "so there is no view -> cart -> purchase path to follow.")
    p, c = s.get("products") or {}, s.get("customers") or {}
    if p.get("n"):
        untouched = p.get("catalog", p["n"]) - p["n"]
        notes["long_tail"] = (
            f"The top {_top(p)} of the {p['n']:,} products with events ({p['top']:,} products) take "
            f"{p['top_share']:.0%} of the events; the top {_top(c)} of the {c['n']:,} customers take "
            f"{c['top_share']:.0%}. Half the products have {p['median']:,} events or fewer, half the customers "
            f"{c['median']:,} or fewer; the busiest product has {p['max']:,}."
            + (f" {untouched:,} of the catalog's {p['catalog']:,} products have no event at all." if untouched else ""))
    b = s.get("best_sellers") or {}
    if b.get("periods"):
        last = b["periods"][-1]
        notes["best_sellers"] = (
            f"The top {b['top']} products by {b['type']} events in each of the newest {len(b['periods'])} "
            f"{b['grain']}s (ties: more customers first); the newest runs from {_day(last['start'])} to the last "
            f"event on {_day(last['end'])}.")
    return notes


def event_figures(summary: dict[str, Any] | None) -> dict[str, Any]:
    """The events' figures by name (``events_timeline``, ``funnel``, ``long_tail``, ``best_sellers``); only those
    the summary has data for (none without events)."""
    s = summary or {}
    if not s.get("n_events"):
        return {}
    out = {}
    if s.get("timeline"):
        out["events_timeline"] = fig_events_timeline(s)
    if "reached" in (s.get("funnel") or {}):
        out["funnel"] = fig_funnel(s["funnel"])
    if (s.get("products") or {}).get("n"):
        out["long_tail"] = fig_long_tail(s["customers"], s["products"])
    if (s.get("best_sellers") or {}).get("periods"):
        out["best_sellers"] = fig_best_sellers(s["best_sellers"])
    return out


def fig_events_timeline(summary: dict[str, Any]):
    """Stacked bars: events per period (day, week or month), one colour per event type."""
    import plotly.graph_objects as go

    t = summary["timeline"]
    fig = go.Figure()
    for kind, counts in t["counts"].items():
        fig.add_trace(go.Bar(x=t["periods"], y=counts, name=kind, marker={"color": TYPE_COLOURS.get(kind)},
                             hovertemplate=f"{t['grain']} of %{{x}}: %{{y:,}} {kind} events<extra></extra>"))
    fig.update_layout(title=f"Events per {t['grain']} by type ({summary['n_events']:,} events)", barmode="stack",
                      xaxis_title=f"{t['grain']} starting", yaxis_title="events", height=400,
                      meta={"grain": t["grain"]})
    return fig


def fig_funnel(funnel: dict[str, Any]):
    """Distinct customers at each step of the path the events have, with the share of the step before."""
    import plotly.graph_objects as go

    steps, reached = funnel["steps"], funnel["reached"]
    text = [f"{reached[0]:,}"] + [f"{reached[i]:,} ({reached[i] / reached[i - 1]:.0%} of the step before)"
                                  if reached[i - 1] else f"{reached[i]:,}" for i in range(1, len(steps))]
    fig = go.Figure(go.Funnel(y=[_DID[s] for s in steps], x=reached, text=text, textinfo="text",
                              marker={"color": [TYPE_COLOURS[s] for s in steps]},
                              hovertemplate="%{x:,} customers %{y}<extra></extra>"))
    end = reached[-1] / reached[0] if reached[0] else 0.0
    fig.update_layout(title=f"Funnel: {' -> '.join(steps)} (distinct customers; {end:.0%} go all the way)",
                      yaxis_title="customers who", height=360)
    return fig


def fig_long_tail(customers: dict[str, Any], products: dict[str, Any]):
    """Left: events against rank (log-log), products and customers. Right: how many have 1, 2-3, 4-7, ... events."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("Rank / frequency (log-log)",
                                                        "Events each: power-of-two bins (log scale)"))
    for name, tail, colour in (("products", products, "#1f77b4"), ("customers", customers, "#ff7f0e")):
        if not tail.get("n"):
            continue
        fig.add_trace(go.Scatter(x=tail["curve"]["rank"], y=tail["curve"]["events"], mode="lines", name=name,
                                 legendgroup=name, line={"color": colour, "shape": "hv"},
                                 hovertemplate=f"{name} ranked %{{x:,}}: %{{y:,}} events<extra></extra>"), row=1, col=1)
        labels = [_bin_label(lo, hi) for lo, hi in zip(tail["hist"]["lo"], tail["hist"]["hi"], strict=True)]
        fig.add_trace(go.Bar(x=labels, y=tail["hist"]["entities"], name=name, legendgroup=name, showlegend=False,
                             marker={"color": colour},
                             hovertemplate=f"%{{y:,}} {name} with %{{x}} events<extra></extra>"), row=1, col=2)
    fig.update_xaxes(type="log", title_text="rank (1 = the most events)", row=1, col=1)
    fig.update_yaxes(type="log", title_text="events", row=1, col=1)
    bins = sorted({(lo, hi) for t in (products, customers) if t.get("n")
                   for lo, hi in zip(t["hist"]["lo"], t["hist"]["hi"], strict=True)})
    fig.update_xaxes(type="category", title_text="events each", row=1, col=2, categoryorder="array",
                     categoryarray=[_bin_label(lo, hi) for lo, hi in bins])  # in order, whichever tail lacks a bin
    fig.update_yaxes(type="log", title_text="products / customers", row=1, col=2)
    fig.update_layout(title=f"The long tail: the top {_top(products)} of products take {products['top_share']:.0%} "
                            f"of the events, the top {_top(customers)} of customers {customers['top_share']:.0%}",
                      barmode="group", height=420, margin={"t": 90},
                      meta={"products_top_share": products["top_share"], "customers_top_share": customers["top_share"]})
    return fig


def _bin_label(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def fig_best_sellers(sellers: dict[str, Any]):
    """One horizontal bar chart per period (newest last): its top products by events, with their titles."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    periods = sellers["periods"]
    fig = make_subplots(rows=len(periods), cols=1, vertical_spacing=0.25 / len(periods),
                        subplot_titles=[f"{_day(p['start'])} to {_day(p['end'])}" for p in periods])
    unit = "units" if sellers["type"] != "rating" else None
    for i, p in enumerate(periods, start=1):
        rows = p["rows"][::-1]  # the best at the top
        fig.add_trace(go.Bar(
            x=[r["events"] for r in rows],
            y=[plotly_text(f"{readable_title(r['title'])[:40]} ({r['product_id']})") for r in rows],
            orientation="h", name=p["start"], showlegend=False, marker={"color": TYPE_COLOURS.get(sellers["type"])},
            customdata=[[plotly_text(r["product_id"]), plotly_text(r["title"]), r["customers"], r.get("units", 0)]
                        for r in rows],
            hovertemplate=("%{customdata[1]} (id %{customdata[0]}): %{x:,} " + sellers["type"] + " events by "
                           "%{customdata[2]:,} customers" + (", %{customdata[3]:,} " + unit if unit else "")
                           + "<extra></extra>")), row=i, col=1)
        fig.update_xaxes(title_text=f"{sellers['type']} events", row=i, col=1)
    fig.update_layout(title=f"{_RANKED_BY.get(sellers['type'], 'Top products')} by {sellers['grain']}: the top "
                            f"{sellers['top']} of the newest {len(periods)} {sellers['grain']}s",
                      height=max(360, sum(24 * len(p["rows"]) + 90 for p in periods) + 80), margin={"l": 320})
    return fig
