"""What the events say (issue #23): the build's Spark summary of its events (counts per period by type, the
view -> cart -> purchase funnel, the long tail, the best sellers) and the report's figures drawn from it.

Known answers on a hand-made frame; the real UCI build's page read back as figure JSON and checked against the
bundle's own events with pandas (other code than the Spark aggregation); a catalog-only build."""

from __future__ import annotations

import datetime as dt
import html
import json

import numpy as np
import pandas as pd
import pytest

from index_builder.core import bundle
from index_builder.core.bundle import EVENTS_SUMMARY, REPORT_DIR, REPORT_HTML
from index_builder.core.figures import event_figures, event_notes
from index_builder.insights.events import CURVE_POINTS, summarize_events
from index_builder.insights.report import read_figure_json

TITLES = {"p1": "Red mug", "p2": "Blue teapot", "p3": "Green candle", "p4": "Paper bag", "p5": "Tea towel",
          "p6": "Never touched"}
# (user, product, type, ts); the comment is the ISO week (from Monday) of each event
HAND_MADE = [
    ("u1", "p1", "view", "2011-01-03 10:00"),  # 01-03
    ("u1", "p1", "cart", "2011-01-03 10:05"),  # 01-03
    ("u1", "p1", "purchase", "2011-02-10 09:00"),  # 02-07
    ("u2", "p1", "view", "2011-01-05 12:00"),  # 01-03
    ("u2", "p2", "cart", "2011-03-15 12:00"),  # 03-14
    ("u3", "p2", "view", "2011-03-16 12:00"),  # 03-14
    ("u3", "p4", "view", None),  # undated: in the funnel and the tail, not in the timeline
    ("u4", "p3", "view", "2011-04-20 08:00"),  # 04-18
    ("u5", "p2", "cart", "2011-03-01 08:00"),  # 02-28
    ("u5", "p2", "purchase", "2011-03-02 08:00"),  # 02-28
    ("u6", "p1", "purchase", "2011-03-20 23:00"),  # a Sunday: 03-14
    ("u6", "p2", "purchase", "2011-04-02 11:00"),  # 03-28
    ("u5", "p3", "purchase", "2011-04-05 11:00"),  # 04-04
    ("u1", "p2", "purchase", "2011-04-06 11:00"),  # 04-04
    ("u4", "p5", "purchase", "2011-04-07 11:00"),  # 04-04
]


def _frames(spark, rows):
    events = spark.createDataFrame(
        [(u, p, t, 1.0, None if ts is None else dt.datetime.fromisoformat(ts).replace(tzinfo=dt.UTC))
         for u, p, t, ts in rows],
        "user_id string, product_id string, event_type string, value double, ts timestamp")
    products = spark.createDataFrame(list(TITLES.items()), "product_id string, title string")
    return events, products


@pytest.fixture(scope="module")
def hand_made(spark):
    events, products = _frames(spark, HAND_MADE)
    return summarize_events(events, products, n_products=len(TITLES), top_n=2, periods=3)


def test_counts_per_week_by_type(hand_made):
    s = hand_made
    assert s["n_events"] == 15 and s["undated"] == 1
    assert s["types"] == {"view": 5, "cart": 3, "purchase": 7}
    assert s["first"] == "2011-01-03T10:00:00" and s["last"] == "2011-04-20T08:00:00"
    t = s["timeline"]
    assert t["grain"] == "week" and len(t["periods"]) == 16  # 3 Jan .. 18 Apr, Mondays, empty weeks included
    assert t["periods"][0] == "2011-01-03" and t["periods"][-1] == "2011-04-18"
    nonzero = {(p, kind): c for kind, counts in t["counts"].items() for p, c in zip(t["periods"], counts, strict=True) if c}
    assert nonzero == {("2011-01-03", "view"): 2, ("2011-01-03", "cart"): 1, ("2011-02-07", "purchase"): 1,
                       ("2011-02-28", "cart"): 1, ("2011-02-28", "purchase"): 1, ("2011-03-14", "view"): 1,
                       ("2011-03-14", "cart"): 1, ("2011-03-14", "purchase"): 1, ("2011-03-28", "purchase"): 1,
                       ("2011-04-04", "purchase"): 3, ("2011-04-18", "view"): 1}
    assert list(t["counts"]) == ["view", "cart", "purchase"]


def test_funnel_counts_distinct_customers_step_by_step(hand_made):
    # viewed: u1 u2 u3 u4; carted: u1 u2 u5; bought: u1 u4 u5 u6. Viewed and carted: u1 u2; and bought: u1
    assert hand_made["funnel"] == {"steps": ["view", "cart", "purchase"], "absent": [],
                                   "customers": [4, 3, 4], "reached": [4, 2, 1]}
    fig = event_figures(hand_made)["funnel"].to_plotly_json()
    assert list(fig["data"][0]["x"]) == [4, 2, 1]
    assert "4 customers viewed; 2 of them (50%) also added to the cart; 1 of them (50%) also bought" in (
        event_notes(hand_made)["funnel"])


def test_long_tail_of_products_and_customers(hand_made):
    # events per product: p2 6, p1 5, p3 2, p4 1, p5 1 (p6 none); per customer: u1 4, u5 3, u2 u3 u4 u6 2 each
    p, c = hand_made["products"], hand_made["customers"]
    assert (p["n"], p["events"], p["catalog"], p["top"], p["top_share"], p["max"], p["median"]) == (5, 15, 6, 1, 0.4, 6, 2)
    assert p["curve"] == {"rank": [1, 2, 3, 5], "events": [6, 5, 2, 1]}
    assert p["hist"] == {"lo": [1, 2, 4], "hi": [1, 3, 7], "entities": [2, 1, 2], "events": [2, 2, 11]}
    assert (c["n"], c["top"], c["top_share"], c["median"]) == (6, 2, round(7 / 15, 4), 2)  # u1 + u5 = 7 of 15
    assert "The top 20% of the 5 products with events (1 products) take 40% of the events" in (
        event_notes(hand_made)["long_tail"])
    assert "1 of the catalog's 6 products have no event" in event_notes(hand_made)["long_tail"]


def test_best_sellers_of_the_newest_months_with_titles(hand_made):
    b = hand_made["best_sellers"]
    assert (b["type"], b["grain"], b["top"]) == ("purchase", "month", 2)

    def row(pid, events, customers):
        return {"product_id": pid, "title": TITLES[pid], "events": events, "customers": customers, "units": float(events)}

    assert b["periods"] == [
        {"start": "2011-02-01", "end": "2011-02-28", "rows": [row("p1", 1, 1)]},
        {"start": "2011-03-01", "end": "2011-03-31", "rows": [row("p1", 1, 1), row("p2", 1, 1)]},  # a tie: by id
        # April: p2 twice (u6, u1); p3 and p5 once each, p5 cut by top_n; the month ends at the last purchase
        {"start": "2011-04-01", "end": "2011-04-07", "rows": [row("p2", 2, 2), row("p3", 1, 1)]},
    ]
    fig = event_figures(hand_made)["best_sellers"].to_plotly_json()
    assert [list(t["y"]) for t in fig["data"]][-1] == ["Green candle (p3)", "Blue teapot (p2)"]  # the best on top


def test_without_events_there_is_nothing_to_count(spark):
    assert summarize_events(None) == {"n_events": 0, "types": {}}
    events, products = _frames(spark, [])
    assert summarize_events(events, products, n_products=6) == {"n_events": 0, "types": {}}
    assert event_figures({"n_events": 0, "types": {}}) == {}
    assert list(event_notes({"n_events": 0, "types": {}})) == ["events"]


def test_a_huge_catalog_gives_a_small_summary(spark):
    """300,000 events over 100,000 products and 20,000 customers, made by Spark (nothing collected): the summary
    stays a few kilobytes (a log-spaced curve, power-of-two bins, top-N lists)."""
    from pyspark.sql import functions as F

    n = 300_000
    events = spark.range(n).select(
        (F.col("id") % 20_000).cast("string").alias("user_id"),
        (F.col("id") * F.col("id") % 100_000).cast("string").alias("product_id"),
        F.element_at(F.array(*[F.lit(t) for t in ("view", "view", "cart", "purchase")]),
                     (F.floor(F.col("id") / 20_000) % 4 + 1).cast("int")).alias("event_type"),
        F.lit(1.0).alias("value"),
        F.timestamp_seconds(F.lit(1_577_836_800) + F.col("id") * 60).alias("ts"))  # a minute apart from 2020
    products = spark.range(100_000).select(F.col("id").cast("string").alias("product_id"),
                                           F.concat(F.lit("product "), F.col("id")).alias("title"))
    s = summarize_events(events, products, n_products=100_000)
    assert s["n_events"] == n and sum(map(sum, s["timeline"]["counts"].values())) == n
    assert len(s["products"]["curve"]["rank"]) <= CURVE_POINTS and s["products"]["curve"]["rank"][-1] == s["products"]["n"]
    assert all(len(p["rows"]) == 10 for p in s["best_sellers"]["periods"])
    assert s["funnel"]["customers"] == [20_000, 20_000, 20_000]
    assert len(json.dumps(s)) < 20_000


# ---------------------------------------------------------------------------------------------------
# the real build
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uci(uci_bundle):
    folder, manifest = uci_bundle
    page = (folder / REPORT_DIR / REPORT_HTML).read_text(encoding="utf-8")
    events = pd.read_parquet(folder / bundle.EVENTS)
    return folder, manifest, page, read_figure_json(page), events


def test_uci_events_per_week_sum_to_the_valid_events(uci):
    folder, manifest, page, figures, events = uci
    assert "events_summary" in manifest["timings_s"], "the summary is a timed build stage"
    fig = figures["fig-events_timeline"]
    assert fig["layout"]["meta"]["grain"] == "week"
    bars = {t["name"]: t for t in fig["data"]}
    assert set(bars) == {"purchase", "return"}, "UCI has purchases and cancellations (returns) only"
    assert sum(sum(t["y"]) for t in bars.values()) == manifest["counts"]["events"] == len(events)
    weeks = (events.ts.dt.normalize() - pd.to_timedelta(events.ts.dt.weekday, unit="D")).dt.strftime("%Y-%m-%d")
    by_pandas = events.groupby([weeks, events.event_type]).size()
    for kind, trace in bars.items():
        drawn = {w: y for w, y in zip(trace["x"], trace["y"], strict=True) if y}
        assert drawn == by_pandas.xs(kind, level=1).to_dict(), kind
    assert (folder / bundle.PLOTS_DIR / bundle.PLOT_FILES["events"]).stat().st_size > 5_000


def test_uci_says_the_funnel_has_no_views_or_carts(uci):
    _, manifest, page, figures, _ = uci
    assert "fig-funnel" not in figures
    assert "No funnel: the events have no view or cart events (only purchase, return)" in page
    summary = json.loads((uci[0] / REPORT_DIR / EVENTS_SUMMARY).read_text(encoding="utf-8"))
    assert summary["funnel"] == {"steps": ["purchase"], "absent": ["view", "cart"]}
    assert manifest["report"]["events"] == f"{REPORT_DIR}/{EVENTS_SUMMARY}"


def test_uci_long_tail_share_matches_the_events(uci):
    _, _, page, figures, events = uci
    per_product = np.sort(events.product_id.value_counts().to_numpy())[::-1]
    top = int(np.ceil(0.2 * len(per_product)))
    share = per_product[:top].sum() / per_product.sum()
    fig = figures["fig-long_tail"]
    assert fig["layout"]["meta"]["products_top_share"] == pytest.approx(share, abs=1e-4)
    curve = next(t for t in fig["data"] if t["name"] == "products" and t["type"] == "scatter")
    assert curve["x"][0] == 1 and curve["y"][0] == per_product[0] and curve["x"][-1] == len(per_product)
    assert fig["layout"]["xaxis"]["type"] == "log" and fig["layout"]["yaxis"]["type"] == "log"
    assert f"take {share:.0%} of the events" in page


def test_uci_best_sellers_are_catalog_products_counted_from_the_events(uci):
    folder, _, _, figures, events = uci
    catalog = pd.read_parquet(folder / bundle.PRODUCTS).set_index("product_id")["title"]
    fig = figures["fig-best_sellers"]
    assert len(fig["data"]) == 3, "the newest three months"
    newest = fig["data"][-1]
    for pid, title, _, _ in newest["customdata"]:
        assert html.escape(catalog[pid], quote=False) == title, "shown as typed: plotly would read <a> as markup"
    bought = events[events.event_type == "purchase"]
    last = bought.ts.max()
    month = bought[bought.ts >= last.normalize().replace(day=1)]
    top = month.groupby("product_id").size().sort_values(ascending=False, kind="stable")
    drawn = dict(zip([c[0] for c in newest["customdata"]], newest["x"], strict=True))
    assert len(drawn) == 10 and all(top[pid] == n for pid, n in drawn.items())
    assert max(drawn.values()) == top.iloc[0] and min(drawn.values()) >= top.iloc[9]


def test_the_app_draws_the_same_event_figures(uci):
    from assistant.insights import Insights
    from index_builder.core.bundle_reader import load_bundle

    folder, _, _, figures, _ = uci
    insights = Insights.load(load_bundle(folder))
    app = insights.event_figures()
    assert sorted(app) == ["best_sellers", "events_timeline", "long_tail"]
    for name, fig in app.items():
        assert json.loads(fig.to_json()) == figures[f"fig-{name}"], name
    assert insights.event_notes()["funnel"].startswith("No funnel")


def test_a_catalog_only_build_says_there_are_no_events(spark, tmp_path):
    from assistant.insights import Insights
    from index_builder.core.bundle_reader import load_bundle
    from index_builder.pipeline import BuildConfig, build

    path = tmp_path / "products.csv"
    pd.DataFrame({"product_id": list(TITLES), "title": list(TITLES.values())}).to_csv(path, index=False)
    folder = build(BuildConfig(out=str(tmp_path / "out"), products=str(path), k_min=2, k_max=3), spark=spark)
    folder, manifest = bundle.verify(folder)
    assert manifest["counts"]["events"] == 0 and "events_summary" in manifest["timings_s"]
    page = (folder / REPORT_DIR / REPORT_HTML).read_text(encoding="utf-8")
    assert "No events: this bundle is built from the catalog alone" in page
    assert not {"fig-events_timeline", "fig-funnel", "fig-long_tail", "fig-best_sellers"} & set(read_figure_json(page))
    insights = Insights.load(load_bundle(folder))
    assert insights.event_figures() == {} and list(insights.event_notes()) == ["events"]



def test_the_long_tail_bins_stay_in_order_when_one_tail_lacks_a_bin():
    """Plotly orders a category axis by first appearance: a bin only customers have would land at the end."""
    from index_builder.core.figures import fig_long_tail
    from index_builder.insights.events import tail_from_frequencies

    products = tail_from_frequencies(np.array([1, 3000]), np.array([20, 1]), 21)
    customers = tail_from_frequencies(np.array([2, 600, 1500]), np.array([10, 5, 1]))
    axis = fig_long_tail(customers, products).layout.xaxis2
    assert list(axis.categoryarray) == ["1", "2-3", "512-1023", "1024-2047", "2048-4095"]
    assert axis.categoryorder == "array"
