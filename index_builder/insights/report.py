"""The insights report (``report/report.html``, PNG copies in ``plots/``): what the builder found and how good it is.

Every build writes ``report/report.html``: one self-contained page (plotly.js embedded, so it opens
offline) with the KMeans elbow and silhouette curves (chosen k marked), a PCA map of the products coloured
by cluster (clusters named by their most telling title words), the evaluation's metrics against the
baselines, the most recommended products, the degree distribution of the user -> product
recommendation graph (``graph.py``) and a readable piece of that graph (:mod:`index_builder.core.network`).
``report/map.parquet`` keeps every product's map position so the app's Insights tab can mark a shopper's
products; ``plots/*.png`` are PNG copies of the charts.

The events' sections (counts per period by type, the funnel, the long tail, the best sellers) draw the build's
own Spark summary of the events (:mod:`index_builder.insights.events`), kept in ``report/events.json``.

The figures are built here once and used by both the page and the app. No pyspark here.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from index_builder.core import bundle, network
from index_builder.core.bundle import EVENTS_SUMMARY, MAP_POINTS, REPORT_DIR, REPORT_HTML
from index_builder.core.figures import (
    EVENT_HEADINGS,
    TOP_RECOMMENDED,
    event_figures,
    event_notes,
    fig_degree,
    fig_kmeans,
    fig_map,
    fig_metrics,
    fig_top_recommended,
    metrics_table,
    recommended_counts,
)

MAX_MAP_POINTS = 20_000  # points drawn on the map; more products are sampled (the page says so)

_GENERIC = ("a an and are as at be by for from in into is it its of on or the to with without set sets pack box "
            "assorted colour colours design designs small large big mini jumbo new vintage retro")
STOPWORDS = frozenset(_GENERIC.split())  # words that name no kind of product


# ---------------------------------------------------------------------------------------------------
# the numbers behind the pictures
# ---------------------------------------------------------------------------------------------------
def pca_2d(embeddings: np.ndarray, seed: int = 42, fit_rows: int = 50_000) -> tuple[np.ndarray, list[float]]:
    """Every row projected on the first two principal components, and the share of variance each explains.

    Fitted on at most ``fit_rows`` rows (a 384 x 384 covariance), so a million products cost one matrix product.
    Signs are fixed (the largest loading positive), so the same embeddings always give the same map.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    n = len(x)
    if n == 0:
        return np.zeros((0, 2), dtype=np.float32), [0.0, 0.0]
    fit = x if n <= fit_rows else x[np.sort(np.random.default_rng(seed).choice(n, fit_rows, replace=False))]
    mean = fit.mean(axis=0)
    centred = fit - mean
    cov = centred.T @ centred / max(1, len(fit) - 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:2]
    comps = vectors[:, order]
    if comps.shape[1] < 2:  # one-dimensional embeddings: a flat second axis
        comps = np.pad(comps, ((0, 0), (0, 2 - comps.shape[1])))
    comps = comps * np.where(comps[np.abs(comps).argmax(axis=0), range(2)] < 0, -1.0, 1.0)
    total = float(values.clip(min=0).sum()) or 1.0
    share = [float(max(values[i], 0.0)) / total for i in order] + [0.0] * (2 - len(order))
    return ((x - mean) @ comps).astype(np.float32), share


def title_words(title: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", str(title).lower()) if len(w) > 2 and w not in STOPWORDS}


def cluster_labels(titles: list[str], clusters: np.ndarray, n_words: int = 3) -> dict[int, str]:
    """Each cluster named by the title words that are common in it and rarer elsewhere (lift-weighted)."""
    clusters = np.asarray(clusters)
    n = len(titles)
    words = [title_words(t) for t in titles]
    overall = Counter(w for ws in words for w in ws)
    labels: dict[int, str] = {}
    for c in np.unique(clusters):
        rows = np.flatnonzero(clusters == c)
        inside = Counter(w for r in rows for w in words[r])
        size = len(rows)

        def score(w: str, inside=inside, size=size) -> float:
            p_in, p_all = inside[w] / size, overall[w] / n
            return p_in * math.log((p_in + 1e-9) / (p_all + 1e-9)) if inside[w] > 1 or size < 3 else 0.0

        best = sorted(inside, key=lambda w: (-score(w), -inside[w], w))[:n_words]
        labels[int(c)] = ", ".join(best) if best else f"cluster {int(c)}"
    return labels


def map_points(products: pd.DataFrame, embeddings: np.ndarray, *, max_points: int = MAX_MAP_POINTS,
               seed: int = 42) -> tuple[pd.DataFrame, list[float]]:
    """Every product's map position (``product_id, title, price, cluster, x, y, shown``); ``shown`` marks the
    random sample the map draws when there are more than ``max_points`` products."""
    xy, share = pca_2d(embeddings, seed)
    n = len(products)
    shown = np.ones(n, dtype=bool)
    if n > max_points:
        shown[:] = False
        shown[np.random.default_rng(seed).choice(n, max_points, replace=False)] = True
    price = products["price"] if "price" in products.columns else pd.Series(np.nan, index=products.index)
    pts = pd.DataFrame({
        "product_id": products["product_id"].astype(str).to_numpy(),
        "title": products["title"].astype(str).to_numpy(),
        "price": pd.to_numeric(price, errors="coerce").to_numpy(dtype=np.float64),
        "cluster": products["cluster"].to_numpy(dtype=np.int64),
        "x": xy[:, 0], "y": xy[:, 1], "shown": shown,
    })
    return pts, share


# ---------------------------------------------------------------------------------------------------
# the page and the PNGs
# ---------------------------------------------------------------------------------------------------
@dataclass
class ReportInputs:
    products: pd.DataFrame  # product_id, title, price, cluster (bundle row order)
    embeddings: np.ndarray
    sweep: list[dict[str, Any]]
    k: int
    elbow: int
    metrics: dict[str, Any] | None
    edges: pd.DataFrame | None  # user_id, product_id, score, rank (graph.recommendation_edges)
    dataset: str = ""
    created_at: str = ""
    currency: str | None = None
    graph_note: str = ""
    seed: int = 42
    max_map_points: int = MAX_MAP_POINTS
    events: dict[str, Any] | None = None  # what the events say (insights.events.summarize_events); None: not shown


def _figure_json(fig) -> str:
    return fig.to_json(validate=False).replace("</", "<\\/")


def _metrics_html(table: pd.DataFrame, metrics: dict[str, Any] | None) -> str:
    if table.empty:
        reason = (metrics or {}).get("skipped", "no evaluation was run")
        return f"<p class='muted'>No metrics: {html.escape(str(reason))}.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    best = {c: table[c].max() for c in table.columns[1:]}
    body = []
    for _, row in table.iterrows():
        cells = [f"<td>{html.escape(str(row['model']))}</td>"]
        for c in table.columns[1:]:
            v = row[c]
            text = "" if v is None or v != v else f"{v:.4f}"
            cells.append(f"<td class='{'best' if v == best[c] else ''}'>{text}</td>")
        body.append(f"<tr class='{'hybrid' if row['model'] == 'hybrid' else ''}'>{''.join(cells)}</tr>")
    p = (metrics or {}).get("protocol", {})
    note = (f"Time split at {str(p.get('cutoff', ''))[:10]}: {p.get('users_evaluated', '?')} users, truth = "
            f"{html.escape(str(p.get('truth', '')))}; {html.escape(str(p.get('filtered', '')))}.")
    hybrid = (metrics or {}).get("models", {}).get("hybrid", {})
    if "ndcg@10_se" in hybrid:  # how far the numbers move by which users happened to be evaluated
        note += (f" Each number rests on those {hybrid.get('users', '?')} users: the hybrid's NDCG@10 is "
                 f"{hybrid['ndcg@10']:.4f} ± {hybrid['ndcg@10_se']:.4f} (one standard error).")
    r = (metrics or {}).get("ratings")
    stars = ""
    if r:  # explicit ratings: the stars' prediction error beside the ranking metrics
        cells = "".join(f"<tr><td>{html.escape(name)}</td><td>{value:.4f}</td></tr>" for name, value in r["models"].items())
        stars = (f"<table id='rmse-table'><thead><tr><th>rating predictor</th><th>RMSE</th></tr></thead>"
                 f"<tbody>{cells}</tbody></table><p class='muted'>On {r['test_ratings']:,} test ratings whose user "
                 f"and product were rated before the cut-off ({r['cold_left_out']:,} cold ones left out).</p>")
    return (f"<table id='metrics-table'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<p class='muted'>{note} Best in each column in bold; <b>hybrid</b> is what the chat serves.</p>{stars}")


def _event_sections(summary: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """The events' sections (each figure under its sentence); none when the build gave no summary."""
    if summary is None:
        return []
    return [(key, EVENT_HEADINGS[key], f"<p class='muted'>{html.escape(note)}</p>")
            for key, note in event_notes(summary).items()]


ALL_ITEMS_TITLE = "Everything bought next (repeats included): the chat's list vs the repeat baselines (@10)"


def _all_items_html(table: pd.DataFrame, metrics: dict[str, Any] | None) -> str:
    """The all-items track: its table (the same layout as the new-items one) and what it rests on."""
    if table.empty:
        return ""
    a = (metrics or {}).get("all_items", {})
    hybrid = a.get("models", {}).get("hybrid", {})
    model = a.get("buy_again") or {}
    fitted = (f"the buy-again model was fitted on {model['pairs']:,} (customer, product) pairs with "
              f"{model['positives']:,} repeat orders in the window before the test"
              if "pairs" in model else f"no buy-again model ({html.escape(str(model.get('skipped', 'none')))})")
    se = (f" The chat's list: NDCG@10 {hybrid['ndcg@10']:.4f} ± {hybrid['ndcg@10_se']:.4f} (one standard error)."
          if "ndcg@10_se" in hybrid else "")
    rows = _metrics_html(table, None).split("<p class='muted'>")[0].replace("metrics-table", "all-items-table")
    return (f"{rows}<p class='muted'>{a.get('users_evaluated', '?')} users, truth = every product they bought in the "
            f"test window, repeats included; {fitted}.{se} <b>hybrid</b> is the chat's list (due reorders, then new "
            f"products); <b>discovery</b> its new products alone; top_frequency, recency_frequency and tifu_knn are the "
            f"next-basket baselines.</p>")


PAGE_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;margin:24px auto;padding:0 16px;color:#222}
h1{margin-bottom:4px} h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
.muted{color:#666;font-size:0.92em} .fig{width:100%}
table{border-collapse:collapse;font-size:0.92em} th,td{padding:4px 10px;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left} td.best{font-weight:700} tr.hybrid{background:#f3f8ee}
"""


def render_page(inputs: ReportInputs, figures: dict[str, Any], sections: list[tuple[str, str, str]],
                summary: str) -> str:
    """The self-contained page: plotly.js inline, each figure's JSON in a ``<script type=application/json>``."""
    from plotly.offline import get_plotlyjs

    parts = []
    for key, heading, extra in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{extra}")
        if key in figures:
            parts.append(f"<div id='fig-{key}' class='fig'></div>"
                         f"<script type='application/json' data-figure='fig-{key}'>{_figure_json(figures[key])}</script>")
    title = f"cartwise insights: {inputs.dataset or 'bundle'}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{PAGE_CSS}</style>
<script>{get_plotlyjs()}</script></head>
<body><h1>{html.escape(title)}</h1><p class="muted">{summary}</p>
{''.join(parts)}
<script>
document.querySelectorAll('script[data-figure]').forEach(function (el) {{
  var fig = JSON.parse(el.textContent);
  Plotly.newPlot(el.dataset.figure, fig.data, fig.layout, {{responsive: true, displaylogo: false}});
}});
</script></body></html>
"""


def write_report(folder: Path, inputs: ReportInputs) -> dict[str, Any]:
    """Write ``report/report.html``, ``report/map.parquet`` and ``plots/*.png``; returns the manifest's section."""
    folder = Path(folder)
    (folder / REPORT_DIR).mkdir(parents=True, exist_ok=True)
    products = inputs.products.reset_index(drop=True)
    titles = products["title"].astype(str).tolist()
    ids = products["product_id"].astype(str).tolist()
    labels = cluster_labels(titles, products["cluster"].to_numpy())
    points, share = map_points(products, inputs.embeddings, max_points=inputs.max_map_points, seed=inputs.seed)
    points.to_parquet(folder / REPORT_DIR / MAP_POINTS, index=False)
    table = metrics_table(inputs.metrics)
    row_of = {p: i for i, p in enumerate(ids)}
    counts = recommended_counts(inputs.edges, len(products), row_of)
    n_users = int(inputs.edges["user_id"].nunique()) if inputs.edges is not None and len(inputs.edges) else 0

    figures: dict[str, Any] = {"map": fig_map(points, labels, share, currency=inputs.currency)}
    figures.update(event_figures(inputs.events))
    if inputs.sweep:
        figures["kmeans"] = fig_kmeans(inputs.sweep, inputs.k, inputs.elbow)
    if not table.empty:
        figures["metrics"] = fig_metrics(table)
    all_items = metrics_table(inputs.metrics, track="all")
    if not all_items.empty:
        figures["all_items"] = fig_metrics(all_items, title=ALL_ITEMS_TITLE)
    if n_users:
        figures["top"] = fig_top_recommended(counts, titles, ids, n_users)
        figures["degree"] = fig_degree(counts, n_users)
        net = network.overview(inputs.edges, lambda p: titles[row_of[p]] if p in row_of else p, seed=inputs.seed)
        figures["network"] = network.fig_network(net, network.layout(net, inputs.seed))

    shown = int(points["shown"].sum())
    sample_note = ("" if shown == len(points) else
                   f"<p class='muted'>The map draws a random sample of {shown:,} of {len(points):,} products "
                   f"(every product's position is in {REPORT_DIR}/{MAP_POINTS}).</p>")
    graph_extra = (f"<p class='muted'>{html.escape(inputs.graph_note)}</p>" if n_users else
                   "<p class='muted'>No recommendation graph: the bundle has no customers with a history.</p>")
    sections = [
        *_event_sections(inputs.events),
        ("kmeans", "Clusters: how k was chosen", "" if inputs.sweep else "<p class='muted'>Too few products to cluster.</p>"),
        ("map", "The product map", sample_note),
        ("metrics", "How good the recommendations are: new products", _metrics_html(table, inputs.metrics)),
        ("all_items", "Restocks and new products: everything bought next", _all_items_html(all_items, inputs.metrics)),
        ("top", "Most recommended products", graph_extra),
        ("degree", "Who gets recommended: the degree distribution", ""),
        ("network", "The recommendation network", "<p class='muted'>Customers (blue) and the products recommended to "
                    "them (green): the most recommended products and a seeded sample of their customers, laid out so "
                    "that customers with the same picks sit together. The whole graph is in graph/edges.csv; the "
                    "app's Insights tab draws any one customer's neighbourhood.</p>" if n_users else ""),
    ]
    summary = (f"{len(products):,} products in {len(labels)} clusters"
               f"{f', {n_users:,} customers in the recommendation graph' if n_users else ''}"
               f"{f'; built {html.escape(inputs.created_at)}' if inputs.created_at else ''}.")
    (folder / REPORT_DIR / REPORT_HTML).write_text(render_page(inputs, figures, sections, summary), encoding="utf-8")
    if inputs.events is not None:  # the app draws the same figures from it
        (folder / REPORT_DIR / EVENTS_SUMMARY).write_text(json.dumps(inputs.events), encoding="utf-8")
    write_pngs(folder / bundle.PLOTS_DIR, inputs, points, labels, table, counts, titles, ids)
    return {"html": f"{REPORT_DIR}/{REPORT_HTML}", "map_points": len(points), "map_shown": shown,
            "pca_variance": [round(s, 4) for s in share], "cluster_labels": {str(c): w for c, w in labels.items()},
            "figures": sorted(figures), "graph_users": n_users,
            **({"events": f"{REPORT_DIR}/{EVENTS_SUMMARY}"} if inputs.events is not None else {}),
            "products_recommended": int((counts > 0).sum())}


def write_pngs(target: Path, inputs: ReportInputs, points: pd.DataFrame, labels: dict[int, str],
               table: pd.DataFrame, counts: np.ndarray, titles: list[str], ids: list[str]) -> None:
    """PNG copies of the charts (matplotlib: no browser needed), for slides and for the README."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from index_builder.core.text import readable_title

    target.mkdir(parents=True, exist_ok=True)
    if inputs.sweep:
        plot_kmeans_sweep(inputs.sweep, inputs.k, inputs.elbow, target / bundle.PLOT_FILES["kmeans"])
    if (inputs.events or {}).get("timeline"):
        plot_events_timeline(inputs.events, target / bundle.PLOT_FILES["events"])

    shown = points[points["shown"]]
    fig, ax = plt.subplots(figsize=(9, 6.5), dpi=110)
    cmap = plt.get_cmap("tab20")
    for i, (c, grp) in enumerate(shown.groupby("cluster", sort=True)):
        ax.scatter(grp["x"], grp["y"], s=4, alpha=0.6, color=cmap(i % 20), label=f"{int(c)}: {labels.get(int(c), '')}"[:38])
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"Products by embedding (PCA): {len(shown):,} of {len(points):,} shown")
    if len(labels) <= 30:
        ax.legend(fontsize=6, markerscale=3, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(target / bundle.PLOT_FILES["map"])
    plt.close(fig)

    if not table.empty:
        fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
        x = np.arange(len(table))
        for j, metric in enumerate(("ndcg@10", "hr@10")):
            ax.bar(x + (j - 0.5) * 0.4, table[metric].fillna(0), width=0.4, label=metric)
        ax.set_xticks(x, table["model"], rotation=20)
        ax.set_ylabel("score")
        ax.set_title("Next-purchase quality: hybrid vs baselines")
        ax.legend()
        fig.tight_layout()
        fig.savefig(target / bundle.PLOT_FILES["metrics"])
        plt.close(fig)

    if counts.any():
        rows = [int(r) for r in np.argsort(-counts, kind="stable")[:TOP_RECOMMENDED] if counts[r] > 0][::-1]
        fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.5), dpi=110)
        ax.barh([f"{readable_title(titles[r])[:36]} ({ids[r]})" for r in rows], [counts[r] for r in rows])
        ax.set_xlabel("users it is recommended to")
        ax.set_title("Most recommended products")
        ax.tick_params(axis="y", labelsize=7)
        fig.tight_layout()
        fig.savefig(target / bundle.PLOT_FILES["top"])
        plt.close(fig)

        values, freq = np.unique(counts, return_counts=True)
        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        ax.bar(values, freq)
        ax.set_yscale("log")
        ax.set_xlabel("in-degree (users a product is recommended to)")
        ax.set_ylabel("products")
        ax.set_title("Degree distribution of the recommendation graph")
        fig.tight_layout()
        fig.savefig(target / bundle.PLOT_FILES["degree"])
        plt.close(fig)


def plot_events_timeline(summary: dict[str, Any], path: Path) -> None:
    """Stacked bars of the events per period by type (the report's first events figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from index_builder.core.figures import TYPE_COLOURS

    t = summary["timeline"]
    x = pd.to_datetime(t["periods"])
    width = {"day": 0.8, "week": 5.5, "month": 24}[t["grain"]]
    fig, ax = plt.subplots(figsize=(9, 4), dpi=110)
    bottom = np.zeros(len(x))
    for kind, counts in t["counts"].items():
        ax.bar(x, counts, width=width, bottom=bottom, label=kind, color=TYPE_COLOURS.get(kind), align="edge")
        bottom += np.asarray(counts, dtype=float)
    ax.set_ylabel("events")
    ax.set_title(f"Events per {t['grain']} by type ({summary['n_events']:,} events)")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_kmeans_sweep(sweep: list[dict[str, Any]], k: int, elbow: int, path: Path) -> None:
    """Elbow (WSSSE) and cosine silhouette against k, with the elbow and the chosen k marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r["k"] for r in sweep]
    fig, ax1 = plt.subplots(figsize=(7, 4.6), dpi=110)
    ax1.plot(ks, [r["wssse"] for r in sweep], "o-", color="tab:blue", label="WSSSE (elbow)")
    ax1.set_xlabel("k (clusters)")
    ax1.set_ylabel("WSSSE", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(ks, [r["silhouette"] for r in sweep], "s--", color="tab:orange", label="silhouette (cosine)")
    ax2.set_ylabel("silhouette", color="tab:orange")
    ax1.axvline(elbow, color="grey", linestyle=":", label=f"elbow k={elbow}")
    ax1.axvline(k, color="tab:green", linewidth=2, label=f"chosen k={k}")
    handles = ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax1.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, fontsize=8, frameon=False)
    ax1.set_title("KMeans sweep: elbow + silhouette")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def read_figure_json(page: str) -> dict[str, dict[str, Any]]:
    """The figures of a written page, by div id (for tests and for anyone scripting over reports)."""
    found = re.findall(r"<script type='application/json' data-figure='([^']+)'>(.*?)</script>", page, flags=re.S)
    return {key: json.loads(body) for key, body in found}
