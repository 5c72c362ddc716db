"""The insights report and the recommendation graph: the real build's files, read back as data (figure JSON,
CSV columns), not pixels; and the page for a 100k-product catalog."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from index_builder.core import bundle
from index_builder.core.bundle import (
    EDGES,
    GRAPH_DIR,
    MAP_POINTS,
    PRODUCT_NS,
    REPORT_DIR,
    REPORT_HTML,
    USER_NS,
    VERTICES,
)
from index_builder.insights.report import ReportInputs, cluster_labels, pca_2d, read_figure_json, write_report


@pytest.fixture(scope="module")
def built(uci_bundle):
    folder, manifest = uci_bundle
    page = (folder / REPORT_DIR / REPORT_HTML).read_text(encoding="utf-8")
    return folder, manifest, page, read_figure_json(page)


def _trace(fig, name_start):
    return [t for t in fig["data"] if str(t.get("name", "")).startswith(name_start)]


def test_every_build_writes_an_offline_report(built):
    folder, manifest, page, figures = built
    assert set(figures) == {"fig-kmeans", "fig-map", "fig-metrics", "fig-all_items", "fig-top", "fig-degree",
                            "fig-events_timeline", "fig-long_tail", "fig-best_sellers", "fig-network"}  # UCI: no funnel
    assert "<script src=" not in page and "Plotly.newPlot" in page and len(page) > 3_000_000, "plotly.js is inline"
    assert f"{REPORT_DIR}/{REPORT_HTML}" in manifest["files"], "the report is checksummed with the bundle"
    for png in ("kmeans_sweep", "product_map", "metrics", "top_recommended", "degree_distribution"):
        assert (folder / bundle.PLOTS_DIR / f"{png}.png").stat().st_size > 5_000
    assert manifest["report"]["figures"] == ["all_items", "best_sellers", "degree", "events_timeline", "kmeans",
                                             "long_tail", "map", "metrics", "network", "top"]


def test_kmeans_figure_marks_the_chosen_k(built):
    _, manifest, _, figures = built
    fig, k = figures["fig-kmeans"], manifest["kmeans"]["k"]
    sweep = manifest["kmeans"]["sweep"]
    (wssse,) = [t for t in fig["data"] if t["name"] == "WSSSE"]
    (sil,) = [t for t in fig["data"] if t["name"] == "silhouette"]
    assert wssse["x"] == [r["k"] for r in sweep] and np.allclose(sil["y"], [r["silhouette"] for r in sweep])
    chosen = _trace(fig, f"chosen k={k}")
    assert len(chosen) == 2 and all(t["x"] == [k] for t in chosen)
    assert fig["layout"]["xaxis"]["title"]["text"] == "k (clusters)"
    assert fig["layout"]["yaxis"]["title"]["text"] == "WSSSE" and fig["layout"]["yaxis2"]["title"]["text"] == "silhouette"


def test_map_has_one_point_per_product_coloured_by_cluster(built):
    folder, manifest, _, figures = built
    products = pd.read_parquet(folder / bundle.PRODUCTS)
    fig = figures["fig-map"]
    clusters = [t for t in fig["data"] if t["type"] == "scattergl"]
    assert len(clusters) == manifest["kmeans"]["k"]
    ids = [c[2] for t in clusters for c in t["customdata"]]
    assert sorted(ids) == sorted(products.product_id.astype(str)), "one point per product (the catalog is < 20k)"
    labels = manifest["report"]["cluster_labels"]
    assert all(t["name"] == f"{c}: {labels[str(c)]}" for c, t in zip(sorted(map(int, labels)), clusters, strict=True))
    assert fig["layout"]["xaxis"]["title"]["text"].startswith("PC 1")
    assert f"all {len(products):,} products" in fig["layout"]["title"]["text"]
    points = pd.read_parquet(folder / REPORT_DIR / MAP_POINTS)
    assert len(points) == len(products) and points.shown.all()


def test_metrics_table_and_chart_show_the_hybrid_against_the_baselines(built):
    _, manifest, page, figures = built
    models = list(manifest["metrics"]["models"])
    bars = figures["fig-metrics"]["data"]
    assert [b["name"] for b in bars] == ["ndcg@10", "hr@10"] and bars[0]["x"] == models
    assert np.allclose(bars[0]["y"], [manifest["metrics"]["models"][m]["ndcg@10"] for m in models])
    assert "id='metrics-table'" in page and all(f"<td>{m}</td>" in page for m in models)


def test_the_all_items_track_is_shown_beside_the_new_items_one(built):
    _, manifest, page, figures = built
    track = manifest["metrics"]["all_items"]
    models = list(track["models"])
    assert models == ["top_frequency", "recency_frequency", "tifu_knn", "buy_again", "discovery", "hybrid"]
    bars = figures["fig-all_items"]["data"]
    assert bars[0]["x"] == models and np.allclose(bars[0]["y"], [track["models"][m]["ndcg@10"] for m in models])
    assert "id='all-items-table'" in page and "repeats included" in page
    assert track["users_evaluated"] == track["models"]["hybrid"]["users"] > 0


def test_graph_csvs_namespaced_and_grounded_in_the_catalog(built):
    folder, manifest, _, figures = built
    vertices = pd.read_csv(folder / GRAPH_DIR / VERTICES, dtype=str)
    edges = pd.read_csv(folder / GRAPH_DIR / EDGES, dtype={"src": str, "dst": str})
    assert list(vertices.columns) == ["id", "kind", "label"] and list(edges.columns) == ["src", "dst", "score", "rank"]
    assert vertices.id.is_unique and set(vertices.kind) == {"user", "product"}
    assert vertices[vertices.kind == "user"].id.str.startswith(USER_NS).all()
    assert vertices[vertices.kind == "product"].id.str.startswith(PRODUCT_NS).all()
    catalog = set(pd.read_parquet(folder / bundle.PRODUCTS).product_id.astype(str))
    assert set(edges.dst.str.removeprefix(PRODUCT_NS)) <= catalog, "every edge's product is in the catalog"
    assert set(edges.src) <= set(vertices.id) and set(edges.dst) <= set(vertices.id)
    assert edges.groupby("src")["rank"].apply(lambda r: list(r) == list(range(1, len(r) + 1))).all()
    inter = pd.read_parquet(folder / bundle.INTERACTIONS)
    had = set(zip(USER_NS + inter[inter.had].user_id.astype(str), PRODUCT_NS + inter[inter.had].product_id.astype(str),
                  strict=True))
    assert not had & set(zip(edges.src, edges.dst, strict=True)), "nobody is recommended what they already have"
    assert manifest["report"]["graph"]["edges"] == len(edges)
    from assistant.chat import Assistant
    from assistant.session import SessionState
    from index_builder.core.bundle_reader import load_bundle

    chat = Assistant(load_bundle(folder), encode=lambda texts: None)
    for src in sorted(set(edges.src))[:3]:  # each user's edges are the chat's own answer, in order, with its scores
        req = chat.next_request(SessionState(user_id=src.removeprefix(USER_NS)))
        req.n, req.reorders = 10, "off"  # the graph holds the new products (the discovery part of the answer)
        shown = chat.recommender.recommend(req)
        mine = edges[edges.src == src].sort_values("rank")
        assert list(mine.dst) == [PRODUCT_NS + r.product_id for r in shown]
        assert np.allclose(mine.score, [r.score for r in shown], atol=1e-6)
    degree = figures["fig-degree"]
    assert sum(degree["data"][0]["y"]) == len(catalog) and degree["layout"]["yaxis"]["type"] == "log"
    top = figures["fig-top"]["data"][0]
    assert top["x"] == sorted(top["x"]) and top["x"][-1] == edges.dst.value_counts().iloc[0]


def _network_ids(fig, role: str) -> list[str]:
    return [c[0] for t in fig["data"] if str(t.get("name", "")).startswith(role + " (") for c in t["customdata"]]


def test_the_network_draws_the_most_recommended_products_and_a_seeded_sample_of_their_customers(built):
    from index_builder.core import network

    folder, manifest, page, figures = built
    edges = pd.read_csv(folder / GRAPH_DIR / EDGES, dtype={"src": str, "dst": str})
    fig = figures["fig-network"]
    products = _network_ids(fig, network.PRODUCT)
    customers = _network_ids(fig, network.SAMPLED)
    counts = edges.dst.value_counts()
    assert len(products) == min(network.OVERVIEW_PRODUCTS, len(counts))
    assert counts[products].tolist() == counts.iloc[: len(products)].tolist(), "the most recommended, most first"
    reached = set(edges.loc[edges.dst.isin(products), "src"])
    assert set(customers) <= reached and len(customers) == min(network.OVERVIEW_CUSTOMERS, len(reached))
    # every line drawn is an edge of the graph between two drawn nodes
    pos = {}
    for t in fig["data"]:
        for (node, _), x, y in zip(t.get("customdata") or [], t["x"], t["y"], strict=False):
            pos[(x, y)] = node
    lines = [t for t in fig["data"] if t.get("mode") == "lines"]
    xs = [v for t in lines for v in t["x"]]
    ys = [v for t in lines for v in t["y"]]
    drawn = {tuple(sorted((pos[(xs[i], ys[i])], pos[(xs[i + 1], ys[i + 1])]))) for i in range(0, len(xs), 3)}
    graph = {tuple(sorted(e)) for e in zip(edges.src, edges.dst, strict=True)}
    assert drawn and drawn <= graph
    n_users = edges.src.nunique()
    assert f"a seeded sample of {len(customers)} of the {len(reached):,} customers" in fig["layout"]["title"]["text"]
    assert f"{n_users:,} customers and {len(counts):,} products in the whole graph" in fig["layout"]["title"]["text"]
    assert "The recommendation network" in page


@pytest.mark.slow
def test_a_100k_product_catalog_gets_a_sampled_map_and_a_small_page(tmp_path):
    rng = np.random.default_rng(0)
    n, k = 100_000, 30
    centres = rng.normal(size=(k, 384)).astype(np.float32)
    clusters = rng.integers(0, k, n)
    emb = centres[clusters] + 0.5 * rng.normal(size=(n, 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    words = ["mug", "candle", "bag", "card", "lamp", "tin", "cushion", "clock", "frame", "bottle"]
    products = pd.DataFrame({"product_id": [f"P{i}" for i in range(n)],
                             "title": [f"{words[c % 10]} style {c} item {i % 7}" for i, c in enumerate(clusters)],
                             "price": rng.uniform(0.5, 50, n).round(2), "cluster": clusters})
    edges = pd.DataFrame({"user_id": np.repeat([f"u{i}" for i in range(5000)], 10),
                          "product_id": [f"P{i}" for i in rng.integers(0, n, 50_000)],
                          "score": rng.random(50_000), "rank": np.tile(np.arange(1, 11), 5000)})
    sweep = [{"k": kk, "wssse": 1000.0 / kk, "silhouette": 0.1 + kk / 1000} for kk in range(20, 41)]
    info = write_report(tmp_path, ReportInputs(products=products, embeddings=emb, sweep=sweep, k=k, elbow=25,
                                               metrics=None, edges=edges, dataset="synthetic"))
    page = (tmp_path / REPORT_DIR / REPORT_HTML).read_text(encoding="utf-8")
    assert (tmp_path / REPORT_DIR / REPORT_HTML).stat().st_size < 15_000_000
    fig = read_figure_json(page)["fig-map"]
    drawn = sum(len(t["x"]) for t in fig["data"])
    assert drawn == info["map_shown"] == 20_000 and info["map_points"] == n
    assert "a random sample of 20,000 of 100,000 products" in fig["layout"]["title"]["text"]
    assert "The map draws a random sample of 20,000 of 100,000 products" in page
    assert "No metrics" in page and "fig-metrics" not in read_figure_json(page)
    net = read_figure_json(page)["fig-network"]
    assert 25 < sum(len(t.get("customdata") or []) for t in net["data"]) <= 25 + 60, "capped, not 100k nodes"
    assert "5,000 customers and" in net["layout"]["title"]["text"]
    assert len(pd.read_parquet(tmp_path / REPORT_DIR / MAP_POINTS)) == n


def test_pca_is_deterministic_and_orders_components():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 8)) * np.array([5, 2, 1, 1, 1, 1, 1, 1])
    a, share = pca_2d(x)
    b, _ = pca_2d(x[::-1].copy())
    assert np.allclose(a[::-1], b, atol=1e-4) and share[0] > share[1] > 0
    assert abs(np.corrcoef(a[:, 0], x[:, 0])[0, 1]) > 0.95


def test_cluster_labels_prefer_words_that_tell_clusters_apart():
    titles = ["red heart candle holder", "white heart candle holder", "heart candle tin",
              "red heart tea mug", "blue tea mug", "tea mug spots"]
    labels = cluster_labels(titles, np.array([0, 0, 0, 1, 1, 1]), n_words=2)
    assert labels[0].split(", ")[0] == "candle" and labels[1].split(", ")[0] in {"mug", "tea"}
    assert "heart" not in labels[1]


def test_the_graphs_seed_memo_changes_no_ranking(built):
    """The graph ranks every customer with one memo of each product's neighbours (shared by the customers who
    have that product): the same lists and scores as ranking each customer afresh, on the real bundle."""
    from assistant.chat import Assistant
    from index_builder.core.bundle_reader import load_bundle
    from index_builder.insights.graph import graph_users

    folder = built[0]
    b = load_bundle(folder)
    users = graph_users(b, None)[:150]
    afresh = Assistant(b, encode=lambda texts: None)
    remembering = Assistant(b, encode=lambda texts: None)
    remembering.recommender.neighbours_memo = {}
    assert [remembering.user_top_n(u, 10) for u in users] == [afresh.user_top_n(u, 10) for u in users]
    memo = remembering.recommender.neighbours_memo
    seeds = sum(len(remembering.user_request(u, 10).seeds[: remembering.recommender.cfg.max_seeds]) for u in users)
    assert memo and len(memo) < seeds, "customers shared products: fewer searches than seeds"


def test_the_tabs_network_draws_only_customers_of_the_bundle(built):
    """Whatever id the page sends (a huge one, a lone surrogate, markup, another namespace), the network is the
    overview unless it names a customer of the bundle: nothing of it is echoed and the figure serializes."""
    from assistant.insights import Insights
    from index_builder.core.bundle_reader import load_bundle

    insights = Insights.load(load_bundle(built[0]))
    overview = insights.network_figure(None).layout.title.text
    for hostile in ("x" * 100_000, "\ud800", "<b>\u202eevil</b>", USER_NS + sorted(insights.picks)[0], " "):
        fig = insights.network_figure(hostile)
        assert fig.layout.title.text == overview
        fig.to_json()
    customer = sorted(insights.picks)[0]
    assert insights.network_figure(customer).layout.title.text.startswith(f"Customer {customer}'s neighbourhood")
