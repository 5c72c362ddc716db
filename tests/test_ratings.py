"""RMSE of explicit ratings (index_builder.evaluation.ratings): the predictors on data whose structure is known."""

from __future__ import annotations

import numpy as np
import pandas as pd

from index_builder.evaluation.ratings import bias_predictor, rating_errors, ratings_of, rmse, warm


def _ratings(n_users=120, n_items=60, per_user=30, rank=2, seed=0, start="2020-01-01"):
    """Stars from user and item offsets plus a low-rank taste, with noise; dated over a year."""
    rng = np.random.default_rng(seed)
    b_u, b_i = rng.normal(0, 0.5, n_users), rng.normal(0, 0.7, n_items)
    pu, qi = rng.normal(0, 0.6, (n_users, rank)), rng.normal(0, 0.6, (n_items, rank))
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, per_user, replace=False):
            stars = 3.5 + b_u[u] + b_i[i] + pu[u] @ qi[i] + rng.normal(0, 0.3)
            rows.append((f"u{u}", f"p{i}", float(np.clip(np.round(stars), 1, 5))))
    ts = pd.Timestamp(start) + pd.to_timedelta(rng.uniform(0, 365, len(rows)), unit="D")
    return pd.DataFrame({"user_id": [r[0] for r in rows], "product_id": [r[1] for r in rows],
                         "event_type": "rating", "value": [r[2] for r in rows], "ts": ts})


def test_only_dated_finite_ratings_count():
    ev = pd.DataFrame({"user_id": ["a", "a", "b", "b", "c"], "product_id": ["x", "y", "x", "y", "x"],
                       "event_type": ["rating", "purchase", "rating", "rating", "rating"],
                       "value": ["4", "1", "nan", "5", "3"],
                       "ts": ["2020-01-01", "2020-01-02", "2020-01-03", None, "2020-01-05"]})
    r = ratings_of(ev)
    assert r[["user_id", "product_id", "value"]].values.tolist() == [["a", "x", 4.0], ["c", "x", 3.0]]


def test_the_bias_baseline_beats_the_mean_when_users_and_items_differ():
    r = _ratings()
    cut = r["ts"].quantile(0.8)
    train, test = r[r["ts"] < cut], warm(r[r["ts"] < cut], r[r["ts"] >= cut])
    mean_err = rmse(np.full(len(test), train["value"].mean()), test["value"].to_numpy())
    assert rmse(bias_predictor(train, 5.0)(test), test["value"].to_numpy()) < 0.85 * mean_err
    # an unknown user or product falls back to the offsets it has (here: none)
    unknown = pd.DataFrame({"user_id": ["nobody"], "product_id": ["nothing"]})
    assert bias_predictor(train, 5.0)(unknown)[0] == train["value"].mean()


def test_explicit_als_beats_the_baselines_on_low_rank_ratings(spark):
    r = _ratings(rank=3)
    cut = r["ts"].quantile(0.8)
    val_cut = r["ts"].quantile(0.6)
    out = rating_errors(spark, r, val_cut.tz_localize("UTC"), cut.tz_localize("UTC"), seed=1)
    m = out["models"]
    assert out["test_ratings"] > 100 and out["cold_left_out"] >= 0
    assert m["bias_plus_als"] < m["bias"] < m["global_mean"] and m["explicit_als"] < m["global_mean"], m
    assert out["explicit_als"]["reg_param"] in (0.05, 0.1, 0.2, 0.5) and out["bias"]["damping"] in (0.0, 5.0, 10.0, 25.0)
    # the rank search: every rank at regParam 0.1, then every regParam at the best rank (7 fits a model)
    for model in ("explicit_als", "bias_plus_als"):
        tried = {(t["rank"], t["reg_param"]) for t in out[model]["validation_rmse"]}
        best = out[model]["rank"]
        assert tried == {(2, 0.1), (5, 0.1), (10, 0.1), (20, 0.1), (best, 0.05), (best, 0.2), (best, 0.5)}, tried
        chosen = min(out[model]["validation_rmse"], key=lambda t: t["rmse"])
        assert (chosen["rank"], chosen["reg_param"]) == (best, out[model]["reg_param"])


def test_the_report_page_shows_the_rmse_table_and_the_standard_error():
    from index_builder.insights.report import _metrics_html

    table = pd.DataFrame({"model": ["hybrid"], "ndcg@10": [0.25]})
    page = _metrics_html(table, {"protocol": {}, "ratings": {"test_ratings": 2173, "cold_left_out": 6665,
                                                             "models": {"bias": 0.98, "bias_plus_als": 0.9649}}})
    assert "rmse-table" in page and "0.9649" in page and "2,173 test ratings" in page
    assert "rmse-table" not in _metrics_html(table, {"protocol": {}})
    with_se = _metrics_html(table, {"protocol": {}, "models": {"hybrid": {"ndcg@10": 0.2515, "ndcg@10_se": 0.031,
                                                                          "users": 84}}})
    assert "0.2515 ± 0.0310" in with_se and "84 users" in with_se


def test_a_purchase_log_has_no_rmse(spark):
    r = _ratings().assign(event_type="purchase")
    assert rating_errors(spark, r, pd.Timestamp("2020-06-01", tz="UTC"), pd.Timestamp("2020-10-01", tz="UTC")) is None
