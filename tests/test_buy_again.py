"""The buy-again model and the all-items baselines: known answers on hand-made order logs (pure pandas and
scikit-learn, no Spark), and the published table read back by the bundle reader."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from index_builder.core.bundle_reader import Reorders
from index_builder.evaluation.repeats import TifuKnn, orders, recency_frequency, top_frequency, top_positive
from index_builder.stages import buy_again as ba

T0 = pd.Timestamp("2011-01-01", tz="UTC")


def ev(rows):
    """(user, product, day, type) -> canonical events."""
    return pd.DataFrame({"user_id": [r[0] for r in rows], "product_id": [r[1] for r in rows],
                         "event_type": [r[3] if len(r) > 3 else "purchase" for r in rows], "value": 1.0,
                         "ts": [T0 + pd.Timedelta(days=r[2]) for r in rows]})


def test_orders_are_distinct_timestamps_and_the_figures_are_what_a_reason_says():
    events = ev([("u", "A", 0), ("u", "A", 0), ("u", "A", 30), ("u", "A", 60), ("u", "B", 50), ("u", "B", 50, "view"),
                 ("u", "C", 200)])  # two lines of A in one order count once; a view is no order; C is after the cut
    at = T0 + pd.Timedelta(days=101)
    h = ba.pair_figures(ba.order_history(ba.order_lines(events, ("purchase",), at), at, dt.timedelta(days=30)), at)
    row = h.set_index("product_id")
    assert row.loc["A", "orders"] == 3 and row.loc["A", "interval_days"] == 30 and row.loc["A", "last_days"] == 41
    assert row.loc["B", "orders"] == 1 and np.isnan(row.loc["B", "interval_days"]) and "C" not in row.index
    assert (h["user_orders"] == 4).all()  # days 0, 30, 50, 60
    x = ba.features(h, at)
    assert x.shape == (2, len(ba.FEATURES)) and np.isfinite(x).all()


def restocking_shop(n_users=60, days=240, seed=0):
    """Every customer restocks "CAKE" every ~14 days and once bought a "MAT" that nobody buys twice."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start = int(rng.integers(0, 14))
        rows += [(f"u{u}", "CAKE", d) for d in range(start, days, 14)]
        rows.append((f"u{u}", "MAT", int(rng.integers(0, days))))
        rows += [(f"u{u}", f"P{int(rng.integers(0, 40))}", int(rng.integers(0, days))) for _ in range(3)]
    return ev(rows)


def test_the_model_learns_that_restocked_products_come_back_and_one_offs_do_not():
    events = restocking_shop()
    cut = T0 + pd.Timedelta(days=200)
    window = dt.timedelta(days=20)
    model = ba.fit(events, ("purchase",), cut - window, cut)
    assert model is not None and model.fitted_on["positives"] >= ba.MIN_POSITIVES
    table = ba.predict_table(model, events, ("purchase",), cut)
    first = table.groupby("user_id").head(1)
    assert (first["product_id"] == "CAKE").mean() > 0.9, "the restocked product is each customer's most likely"
    p = table.groupby("product_id")["probability"].mean()
    assert p["CAKE"] > 0.5 > p["MAT"]


def test_nobody_rates_a_movie_twice_so_there_is_no_model():
    events = ev([(f"u{u}", f"M{m}", u + m, "rating") for u in range(30) for m in range(20)])
    assert ba.fit(events, ("purchase", "rating"), T0 + pd.Timedelta(days=30), T0 + pd.Timedelta(days=60)) is None


def test_the_reader_groups_the_table_by_customer_most_likely_first():
    table = pd.DataFrame({"user_id": ["a", "b", "a", "a"], "product_id": ["X", "X", "Y", "GONE"],
                          "probability": [0.2, 0.5, 0.7, 0.9], "orders": [1, 2, 3, 4],
                          "interval_days": [np.nan, 10.0, 20.4, 1.0], "last_days": [5.0, 6.0, 7.0, 8.0]})
    r = Reorders.from_table(table, {"X": 0, "Y": 1})  # GONE is no longer in the catalog
    rows, p = r.of("a")
    assert rows.tolist() == [1, 0] and p.tolist() == [0.7, 0.2] and r.of("nobody")[0].tolist() == []
    assert r.figures("a", 1) == {"orders": 3, "every_days": 20, "last_days": 7, "probability": 0.7}
    assert r.figures("a", 0)["every_days"] is None and r.figures("b", 1) is None
    stale = Reorders.from_table(table[table.product_id == "GONE"], {"X": 0})  # an edited bundle: nothing left
    assert stale.of("a")[0].tolist() == [] and stale.slices == {}


def test_the_frequency_baselines_rank_by_orders_then_recency():
    events = ev([("u", "A", 1), ("u", "A", 2), ("u", "B", 3), ("u", "C", 9), ("u", "B", 4), ("v", "A", 1)])
    o = orders(events, ("purchase",), T0 + pd.Timedelta(days=10), {"A": 0, "B": 1, "C": 2})
    assert top_frequency(o, ["u", "v", "w"], 3) == {"u": [1, 0, 2], "v": [0], "w": []}  # B and A tie: B is newer
    # a short half-life: the one recent order of C outweighs two old ones
    assert recency_frequency(o, T0 + pd.Timedelta(days=10), 1.0, ["u"], 1) == {"u": [2]}
    assert recency_frequency(o, T0 + pd.Timedelta(days=10), 1000.0, ["u"], 1) == {"u": [1]}


def test_no_have_event_before_the_cut_gives_empty_baselines():
    o = orders(ev([("u", "A", 20)]), ("purchase",), T0 + pd.Timedelta(days=10), {"A": 0})
    assert len(o) == 0 and recency_frequency(o, T0, 5.0, ["u"], 3) == {"u": []} and top_frequency(o, ["u"], 3) == {"u": []}


def test_the_newest_event_counts_when_the_window_ends_just_after_it():
    events = ev([("u", "A", 0), ("u", "A", 10)])
    end = T0 + pd.Timedelta(days=10) + pd.Timedelta(microseconds=1)
    h = ba.pair_figures(ba.order_history(ba.order_lines(events, ("purchase",), end), end, dt.timedelta(days=5)), end)
    assert h["orders"].tolist() == [2] and h["last_days"].iloc[0] < 1e-6


def test_tifu_knn_blends_the_users_own_orders_with_their_neighbours():
    # u and v buy alike; v also buys D, which u never did: with alpha < 1 it reaches u's list, with alpha 1 not
    events = ev([("u", "A", 1), ("u", "B", 2), ("v", "A", 1), ("v", "B", 2), ("v", "D", 3), ("w", "C", 1)])
    o = orders(events, ("purchase",), T0 + pd.Timedelta(days=10), {"A": 0, "B": 1, "C": 2, "D": 3})
    got = TifuKnn(o, 4, neighbours=1).rankings((1.0, 0.5), ["u", "nobody"], 4)
    assert set(got[1.0]["u"]) == {0, 1} and got[1.0]["nobody"] == []
    assert set(got[0.5]["u"]) == {0, 1, 3} and got[0.5]["u"][-1] == 3


def test_tifu_knn_lists_take_ties_at_the_cut_by_the_lower_row():
    """The k best positive scores, the highest first; a tie, also one across the k-th place, goes to the lower row
    (the column names, not the positions); a row with fewer positive scores than k lists only those."""
    cols = np.array([3, 8, 11, 20, 42])
    score = np.array([[0.2, 0.5, 0.2, 0.2, 0.0],
                      [0.0, 0.0, 0.3, 0.0, 0.0],
                      [0.1, 0.1, 0.1, 0.1, 0.1]])
    assert top_positive(score, cols, 3) == [[8, 3, 11], [11], [3, 8, 11]]
    assert top_positive(score, cols, 10) == [[8, 3, 11, 20], [11], [3, 8, 11, 20, 42]]
    assert top_positive(score[:, :0], cols[:0], 3) == [[], [], []]


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_the_reorder_settings_are_tuned_and_published(share):
    from assistant.config import TUNED, RecommenderConfig

    assert {"reorder_share", "reorder_min_probability"} <= set(TUNED)
    cfg = RecommenderConfig.from_manifest({"recommender": {"reorder_share": share}})
    assert cfg.reorder_share == share and cfg.candidate_key() == RecommenderConfig().candidate_key()


def test_without_a_buy_again_table_no_reorder_slot_is_chosen():
    from types import SimpleNamespace

    from index_builder.evaluation.evaluate import EvalSettings, tune_reorders

    split = SimpleNamespace(buy_again=None, buy_again_info={"skipped": "fewer than 20 repeat orders"})
    chosen, record = tune_reorders(SimpleNamespace(split=split), {"w_item": 1.0, "reorder_share": 0.4}, EvalSettings(),
                                   say=lambda *a: None)
    assert chosen == {"w_item": 1.0, "reorder_share": 0.0} and record["skipped"] == "fewer than 20 repeat orders"
