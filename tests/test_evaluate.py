"""The time-split evaluation: no leak across the cut-off, a known answer, and the chat's own Recommender."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from index_builder.cli import main
from index_builder.core import bundle
from index_builder.evaluation.evaluate import (
    EvalSettings,
    Scorer,
    Split,
    choose_cutoffs,
    coordinate_search,
    make_split,
    time_bounds,
)

THEMES = {
    "candle": ["WHITE PILLAR CANDLE", "VANILLA SCENTED CANDLE", "LAVENDER CANDLE JAR"],
    "mug": ["RED SPOTTY MUG", "BLUE CERAMIC MUG", "ENAMEL CAMPING MUG"],
    "bag": ["JUMBO BAG RED RETROSPOT", "LUNCH BAG BLACK SKULL", "SHOPPER BAG PINK POLKADOT"],
    "tea": ["ENGLISH BREAKFAST TEA TIN", "TEAPOT WITH STRAINER", "GREEN TEA CADDY"],
}
CUTOFF = "2011-07-01"


def _known_answer_files(folder):
    """Each theme has 3 products; every shopper bought two of a theme before the cut-off and the third
    after it. Ten bag fans make bags the best sellers, so popularity points everyone at bags."""
    products, events = [], []
    for theme, titles in THEMES.items():
        for j, title in enumerate(titles):
            products.append({"product_id": f"{theme}{j}", "title": title, "price": 2.0 + j})
    day = dt.datetime(2011, 1, 3)
    for theme in THEMES:
        for held in range(3):
            for r in range(3):
                user = f"{theme}-{held}-{r}"
                for i, j in enumerate(j for j in range(3) if j != held):
                    events.append({"user": user, "sku": f"{theme}{j}", "type": "purchase",
                                   "when": (day + dt.timedelta(days=7 * r + i)).isoformat()})
                events.append({"user": user, "sku": f"{theme}{held}", "type": "purchase",
                               "when": (dt.datetime(2011, 8, 1) + dt.timedelta(days=r)).isoformat()})
    for f in range(10):
        for j in range(3):
            events.append({"user": f"fan{f}", "sku": f"bag{j}", "type": "purchase",
                           "when": (day + dt.timedelta(days=f)).isoformat()})
    pd.DataFrame(products).to_csv(folder / "products.csv", index=False)
    pd.DataFrame(events).to_csv(folder / "events.csv", index=False)


@pytest.fixture(scope="module")
def known_answer_bundle(spark, tmp_path_factory):
    folder = tmp_path_factory.mktemp("known")
    _known_answer_files(folder)
    out = folder / "bundle"
    assert main(["build", "--products", str(folder / "products.csv"), "--events", str(folder / "events.csv"),
                 "--map", "user_id=user,product_id=sku,event_type=type,ts=when", "--out", str(out),
                 "--k-min", "2", "--k-max", "4", "--kmeans-restarts", "2", "--als-rank", "4",
                 "--eval-cutoff", CUTOFF]) == 0
    return bundle.verify(out)


def test_known_answer_the_hybrid_is_perfect_and_popularity_is_not(known_answer_bundle):
    folder, manifest = known_answer_bundle
    metrics = manifest["metrics"]
    protocol = metrics["protocol"]
    assert protocol["users_evaluated"] == 36  # every themed shopper; the bag fans bought nothing new
    assert protocol["cutoff"].startswith(CUTOFF)
    models = metrics["models"]
    assert set(models) >= {"popularity", "random_in_cluster", "content", "als", "item_item", "hybrid"}
    assert models["hybrid"]["ndcg@10"] == pytest.approx(1.0)
    assert models["hybrid"]["hr@1" if "hr@1" in models["hybrid"] else "hr@5"] == pytest.approx(1.0)
    assert models["popularity"]["ndcg@10"] < models["hybrid"]["ndcg@10"] - 0.2
    for k in (5, 10, 20):
        for name in ("precision", "recall", "ndcg", "map", "hr", "coverage"):
            assert 0.0 <= models["hybrid"][f"{name}@{k}"] <= 1.0
    # the published bundle carries what the evaluation chose, and the chat reads it
    assert manifest["recommender"] and manifest["item_item"]["model"] == "ease"
    from assistant.config import RecommenderConfig
    from index_builder.core.bundle_reader import load_bundle

    b = load_bundle(folder)
    assert RecommenderConfig.from_manifest(b.manifest).w_item == manifest["recommender"]["w_item"]
    assert b.has_item_item


def test_evaluate_command_rewrites_the_metrics(known_answer_bundle, capsys):
    folder, manifest = known_answer_bundle
    assert main(["evaluate", "--bundle", str(folder), "--eval-cutoff", "2011-07-15"]) == 0
    out = capsys.readouterr().out
    assert "hybrid" in out and "ndcg@10" in out
    again = json.loads((folder / bundle.MANIFEST).read_text())
    assert again["metrics"]["protocol"]["cutoff"].startswith("2011-07-15")
    # it scored the blend the bundle serves
    assert again["metrics"]["tuning"]["chosen"]["recommender"] == manifest["recommender"]
    bundle.verify(folder)  # the checksummed files are untouched


def test_split_never_leaks_a_test_event_into_training():
    cut = dt.datetime(2011, 6, 1, tzinfo=dt.UTC)
    rows = []
    for u in range(6):
        for d in range(0, 60, 7):  # events from 2011-05-04 to 2011-06-29, on both sides of the cut-off
            ts = dt.datetime(2011, 5, 4) + dt.timedelta(days=d + u)
            rows.append((f"u{u}", f"p{(u + d) % 9}", "purchase" if d % 2 == 0 else "view", 1.0, ts))
    rows.append(("late", "p1", "purchase", 1.0, dt.datetime(2011, 6, 20)))  # no history before the cut-off
    rows.append(("u0", "p1", "purchase", 1.0, None))  # undated: on neither side
    events = pd.DataFrame(rows, columns=["user_id", "product_id", "event_type", "value", "ts"])
    events["ts"] = pd.to_datetime(events["ts"])
    products = pd.DataFrame({"product_id": [f"p{i}" for i in range(9)]})
    split = make_split("test", events, products, cut, None, EvalSettings())
    train_ts = pd.to_datetime(split.interactions["last_ts"], utc=True)
    assert len(train_ts) and (train_ts < pd.Timestamp(cut)).all()
    test_pairs = {(r[0], int(r[1][1:])) for r in rows if r[4] is not None and r[4] >= cut.replace(tzinfo=None)
                  and r[2] == "purchase"}
    for uid, truth in split.truth.items():
        assert {(uid, p) for p in truth} <= test_pairs
    assert split.left_out["no_train_history"] == 1  # "late"
    had = split.interactions[split.interactions["had"]].groupby("user_id")["product_idx"].agg(set)
    for uid, truth in split.truth.items():
        assert not truth & had.get(uid, set())
    assert time_bounds(events) == (dt.datetime(2011, 5, 4, tzinfo=dt.UTC), dt.datetime(2011, 7, 4, tzinfo=dt.UTC), 1)


def test_split_interactions_equal_the_builds_spark_aggregation(spark):
    """The evaluation (and the live fold-in) aggregate events with pandas; the build, the whole log with Spark:
    the same rows."""
    from index_builder.core.constants import DEFAULT_EVENT_WEIGHTS
    from index_builder.stages.interactions import aggregate
    from index_builder.stages.transforms import aggregate_interactions, event_weights

    rng = np.random.default_rng(5)
    n = 3000
    events = pd.DataFrame({
        "user_id": [f"u{i}" for i in rng.integers(0, 60, n)],
        "product_id": [f"p{i}" for i in rng.integers(0, 40, n)],
        "event_type": rng.choice(["view", "cart", "purchase", "rating", "return"], n),
        "value": rng.choice([0.0, 1.0, 2.0, 3.5, 12.0], n),
        "ts": pd.Timestamp("2011-01-01") + pd.to_timedelta(rng.integers(0, 10**7, n), unit="s"),
    })
    had = ("purchase", "rating")
    expected = aggregate_interactions(event_weights(spark.createDataFrame(events), DEFAULT_EVENT_WEIGHTS), had).toPandas()
    got = aggregate(events, DEFAULT_EVENT_WEIGHTS, had)
    key = ["user_id", "product_id"]
    expected, got = (f.sort_values(key).reset_index(drop=True) for f in (expected, got))
    assert len(got) == len(expected) and got[key].equals(expected[key])
    np.testing.assert_allclose(got["weight"], expected["weight"], rtol=1e-12, atol=1e-12)
    for col in ("n_events", "purchased", "had"):
        assert (got[col].astype(int) == expected[col].astype(int)).all(), col
    assert (pd.to_datetime(got["last_ts"]) == pd.to_datetime(expected["last_ts"])).all()


def test_cutoffs_default_to_the_last_tenth_and_validation_precedes_test():
    lo, hi = dt.datetime(2011, 1, 1, tzinfo=dt.UTC), dt.datetime(2011, 11, 1, tzinfo=dt.UTC)
    val, test = choose_cutoffs(lo, hi, None)
    assert test == lo + (hi - lo) * 0.9 and val == test - (hi - test)
    with pytest.raises(Exception, match="outside the events' time span"):
        choose_cutoffs(lo, hi, "2012-01-01")


def test_coordinate_search_finds_the_best_setting():
    def objective(s):  # per-user scores: every user agrees, so any gain is beyond noise
        return np.full(4, -((s["a"] - 3) ** 2) - (s["b"] - 1) ** 2, dtype=float)

    best, score, trace = coordinate_search(objective, {"a": 0, "b": 0}, {"a": [0, 1, 3, 5], "b": [0, 1, 2]})
    assert best == {"a": 3, "b": 1} and score == 0 and len(trace) > 3
    # a gain smaller than its noise is not taken
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, 50)

    def noisy(s):
        return noise * (1 + s["a"]) + 0.001 * s["a"]

    best, _, _ = coordinate_search(noisy, {"a": 0}, {"a": [0, 1, 2]})
    assert best == {"a": 0}


def test_coordinate_search_scores_each_setting_once():
    """A round that changes nothing revisits the previous round's settings: they are not scored again."""
    calls: list[tuple] = []

    def objective(s):
        calls.append((s["a"], s["b"]))
        return np.full(4, -((s["a"] - 1) ** 2) - s["b"] ** 2, dtype=float)

    best, score, trace = coordinate_search(objective, {"a": 0, "b": 0}, {"a": [0, 1, 2], "b": [0, 1]})
    assert best == {"a": 1, "b": 0} and score == 0
    assert len(calls) == len(set(calls))  # every setting scored once
    visited = {(t["a"], t["b"]) for t in trace}
    assert len(trace) > len(visited) and visited == set(calls)  # the trace still lists the revisits


def test_the_evaluation_scores_the_chats_own_recommender(tmp_path, monkeypatch):
    """The hybrid's ranking is the list the chat shows for "what should I buy next?", via Recommender.recommend."""
    from assistant.chat import Assistant
    from assistant.recommender import Recommender
    from assistant.session import SessionState
    from index_builder.core.bundle_reader import load_bundle
    from tests.support.tiny_bundle import fake_encode, write_tiny_bundle

    b = load_bundle(write_tiny_bundle(tmp_path))
    inter = pd.read_parquet(b.folder / bundle.INTERACTIONS)
    users = pd.read_parquet(b.folder / bundle.USERS)
    split = Split("tiny", dt.datetime(2011, 2, 1), None, inter, users,
                  truth={"u_candle": {1}, "u_mug": {2}}, truth_repeat={}, left_out={})
    from index_builder.evaluation.evaluate import Fitted

    scorer = Scorer(split, b.products, b.embeddings, b.index, Fitted(b.item_factors, b.user_factors, None, None), {}, 42)
    calls = []
    original = Recommender.scored_candidates  # what recommend() ranks; the evaluation re-weights its result

    def spy(self, req):
        calls.append(req.user_id)
        return original(self, req)

    monkeypatch.setattr(Recommender, "scored_candidates", spy)
    chat = Assistant(b, encode=fake_encode)
    for uid in ("u_candle", "u_mug"):
        shown = [p.row for p in chat.turn("what should I buy next?", SessionState(user_id=uid)).products]
        assert scorer.rank("hybrid", uid, 5) == shown
    scorer.score("hybrid")
    assert calls.count("u_candle") == 3 and calls.count("u_mug") == 3  # chat, rank, score (k = 10)
    # another blend weight re-ranks the cached candidates: no new candidate generation, and the same list as
    # a chat configured with those weights
    scorer.configure({"w_als": 1.0, "mmr_lambda": 1.0})
    ranked = scorer.rank("hybrid", "u_candle", 5)
    assert calls.count("u_candle") == 3
    chat.recommender = Recommender(b, fake_encode, scorer.assistant.cfg)
    chat.cfg = chat.recommender.cfg
    assert ranked == [p.row for p in chat.turn("what should I buy next?", SessionState(user_id="u_candle")).products]
    scorer.configure({"history_half_life_days": 3.0})  # changes the item-item term: candidates are computed again
    scorer.rank("hybrid", "u_candle", 5)
    assert calls.count("u_candle") == 5  # the chat's turn above, and this one
    assert np.isfinite(scorer.score("hybrid")["ndcg@10"])


def test_the_content_baseline_scores_users_in_blocks_as_one_by_one(tmp_path, monkeypatch):
    """The content model ranks by each product's best cosine to the user's 5 most recent products; computing a
    block of users in one matrix product must give every user the ranking the definition gives."""
    from index_builder.core.bundle_reader import load_bundle
    from index_builder.evaluation import evaluate as ev
    from tests.support.tiny_bundle import write_tiny_bundle

    b = load_bundle(write_tiny_bundle(tmp_path))
    inter = pd.read_parquet(b.folder / bundle.INTERACTIONS)
    users = pd.read_parquet(b.folder / bundle.USERS)
    ids = sorted(users["user_id"].astype(str))
    split = Split("tiny", dt.datetime(2011, 2, 1), None, inter, users, truth={u: {0} for u in ids},
                  truth_repeat={}, left_out={})
    scorer = Scorer(split, b.products, b.embeddings, b.index, ev.Fitted(None, None, None, None), {}, 42)
    e = b.embeddings
    want = {}
    for u in ids + ["nobody"]:
        recent = scorer._recent(u)
        want[u] = scorer._top((e @ e[recent].T).max(axis=1), u, 3, False) if len(recent) else []
    assert any(want.values())
    monkeypatch.setattr(ev, "CONTENT_BLOCK", ev.RECENT * len(e) * 2)  # two users a block
    got = {u: scorer.rank("content", u, 3) for u in ids + ["nobody"]}
    assert got == want
    from index_builder.evaluation.metrics import summarize

    assert scorer.score("content", ids, k=3, ks=(3,)) == summarize(
        {u: want[u] for u in ids}, {u: {0} for u in ids}, n_catalog=len(e), ks=(3,))
