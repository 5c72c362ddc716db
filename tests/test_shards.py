"""Per-user work shared out over forked processes: the same results as one process, state kept, errors raised."""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pytest

from index_builder.scoring import shards
from index_builder.scoring.shards import _shares, user_shards

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="the workers are forked (Linux only)")


def test_shares_cover_every_user_once_in_order():
    for n in (0, 1, 5, 100, 101):
        for parts in (1, 2, 3, 7):
            got = [i for lo, hi in _shares(n, parts) for i in range(lo, hi)]
            assert got == list(range(n))
            sizes = [hi - lo for lo, hi in _shares(n, parts)]
            assert max(sizes) - min(sizes) <= 1


@linux_only
def test_workers_return_what_one_process_returns_and_keep_their_state(monkeypatch):
    monkeypatch.setattr(shards, "MIN_SHARE", 1)
    users = [f"u{i}" for i in range(10)]
    seen: dict[str, int] = {}  # each process's own count of the calls it answered per user

    def fn(share, arg):
        out = []
        for u in share:
            seen[u] = seen.get(u, 0) + 1
            out.append((u, arg * 2, seen[u], os.getpid()))
        return out

    with user_shards(fn, users, processes=3) as run:
        first, second = run(1), run(2)
    assert [r[0] for r in first] == users and [r[1] for r in first] == [2] * 10
    assert [r[2] for r in second] == [2] * 10  # every process remembered its users between calls
    pids = [r[3] for r in first]
    assert pids[0] == os.getpid() and len(set(pids)) == 3  # this process and two forked workers
    assert seen == {u: 2 for u in users[:3]}  # the first share (10 // 3 users) is this process's; the others ran in the workers


def test_one_process_or_few_users_run_here(monkeypatch):
    users = list(range(20))
    with user_shards(lambda share, arg: [os.getpid()] * len(share), users, processes=4) as run:
        assert set(run(None)) == {os.getpid()}  # 20 users < 2 x MIN_SHARE: no fork


@linux_only
def test_a_workers_error_is_raised_here_with_its_traceback(monkeypatch):
    monkeypatch.setattr(shards, "MIN_SHARE", 1)

    def fn(share, arg):
        if "bad" in share:
            raise ValueError("user 'bad' has no history")
        return list(share)

    with pytest.raises(RuntimeError, match="user 'bad' has no history"), \
            user_shards(fn, ["a", "b", "bad", "c"], processes=2) as run:
        run(None)


@linux_only
def test_a_worker_that_dies_is_an_error_not_a_hang(monkeypatch):
    monkeypatch.setattr(shards, "MIN_SHARE", 1)

    def fn(share, arg):
        if os.getpid() != parent:
            os._exit(3)
        return list(share)

    parent = os.getpid()
    with pytest.raises(RuntimeError, match="died; exit code"), user_shards(fn, [1, 2, 3, 4], processes=2) as run:
        run(None)


@linux_only
def test_the_evaluation_gives_the_same_metrics_in_one_process_and_in_two(spark, uci_bundle, monkeypatch):
    """Blend search, test scoring: users shared out over forked workers change no number (real UCI bundle)."""
    from index_builder.evaluation.evaluate import EvalSettings, evaluate
    from index_builder.pipeline import bundle_frames

    monkeypatch.setattr(shards, "MIN_SHARE", 5)
    folder, _ = uci_bundle
    products, embeddings, index, events = bundle_frames(folder)

    def run(processes: int):
        s = EvalSettings(processes=processes, als_grid=((0.1, 1.0),), ease_grid=(100.0, 400.0))
        return evaluate(spark, events, products, embeddings, index, s)

    one, two = run(1), run(2)
    assert one.metrics["tuning"]["users"] >= 10  # the blend search ran (and was shared out in the second run)
    assert one.recommender == two.recommender
    assert one.metrics["models"] == two.metrics["models"]
    assert one.metrics["all_items"] == two.metrics["all_items"]
    assert one.metrics["tuning"]["blend"] == two.metrics["tuning"]["blend"]
    assert np.isfinite(pd.Series(one.metrics["models"]["hybrid"])).all()
    # the log and the manifest say what each part cost (a purchase log has no RMSE part)
    parts = {"split", "buy-again models", "tune item-item", "tune ALS", "tune the blend", "tune reorders",
             "tune repeat baselines", "score the test split"}
    assert parts <= set(one.metrics["cost_s"]) and "RMSE of ratings" not in one.metrics["cost_s"]
    assert all(v >= 0 for v in one.metrics["cost_s"].values()) and sum(one.metrics["cost_s"].values()) > 1


@linux_only
def test_a_forked_worker_leaves_the_drivers_jvm_connections_alone(spark, monkeypatch, caplog):
    """A fork frees the objects only other threads held, Py4J connections among them; their __del__ must not
    shut down the socket the driver still uses (seen as "Connection reset by peer" after each fork)."""
    monkeypatch.setattr(shards, "MIN_SHARE", 1)
    client = spark.sparkContext._gateway._gateway_client
    assert spark.range(10).count() == 10
    mine = client.get_thread_connection()
    assert mine is not None

    driver = os.getpid()

    def fn(share, arg):
        if os.getpid() != driver:  # a worker (this process ranks the first share itself)
            connection = client.get_thread_connection()  # the driver's connection, as copied into this child
            connection.__del__()  # what freeing it in the child does
            assert connection.socket is not None, "the child left the socket alone"
        return list(share)

    with user_shards(fn, [1, 2, 3, 4], processes=2) as run:
        assert run(None) == [1, 2, 3, 4]
    with caplog.at_level("INFO", logger="py4j"):
        assert spark.range(20).count() == 20
    assert client.get_thread_connection() is mine, "the driver's connection survived"
    assert not [r for r in caplog.records if "Exception while sending" in r.getMessage()]
