"""Live updates, for real: fold-ins against Spark's own ALS, a folder stream, a Kafka stream (real broker)
killed mid-way, and the assistant swapping versions without a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from index_builder import bundle as fmt

ROOT = Path(__file__).resolve().parents[1]


def _events(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / fmt.EVENTS)


def _lines(records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def _far_products(folder: Path, user: str, n: int) -> list[str]:
    """Best sellers of a cluster the user never bought from: buying them must change the user's answer."""
    products = pd.read_parquet(folder / fmt.PRODUCTS)
    inter = pd.read_parquet(folder / fmt.INTERACTIONS)
    mine = set(inter.loc[inter["user_id"] == user, "product_id"])
    their_clusters = set(products.loc[products["product_id"].isin(mine), "cluster"])
    other = products[~products["cluster"].isin(their_clusters)].sort_values("popularity", ascending=False)
    return other["product_id"].head(n).tolist()


def test_fold_in_reproduces_spark_user_factors(uci_bundle):
    """Spark's implicit ALS ends on a user half-step: re-solving a user against the final item factors with
    the fold-in's equations must give back that user's factors."""
    from index_builder.foldin import solve_users

    folder, manifest = uci_bundle
    items = fmt.load_array(folder, fmt.ITEM_FACTORS)
    users = fmt.load_array(folder, fmt.USER_FACTORS)
    inter = pd.read_parquet(folder / fmt.INTERACTIONS)
    p = manifest["als"]["params"]
    sample = sorted(inter.loc[inter["weight"] > 0, "user_idx"].unique())[:25]
    groups = [inter[inter["user_idx"] == u] for u in sample]
    got = solve_users(items, [g["product_idx"].to_numpy() for g in groups],
                      [g["weight"].to_numpy(dtype=float) for g in groups], p["reg_param"], p["alpha"])
    want = users[sample]
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() > 0.999, cos


def test_fold_in_publishes_new_users_purchases_and_products(live_root):
    from assistant.chat import Assistant
    from assistant.session import SessionState
    from index_builder.foldin import fold_in

    base = fmt.resolve(live_root)
    user = str(pd.read_parquet(base / fmt.USERS)["user_id"].iloc[0])
    buy = _far_products(base, user, 3)
    before = Assistant.from_path(base)
    old_answer = [p.product_id for p in before.recommender.recommend(before.next_request(SessionState(user_id=user)))]
    now = pd.Timestamp("2011-12-20")
    events = pd.DataFrame({
        "user_id": [user] * 3 + ["new-shopper", "new-shopper"],
        "product_id": buy + [buy[0], "NEW-1"],
        "event_type": ["purchase"] * 5, "value": [3.0] * 5, "ts": [now] * 5})
    new_products = pd.DataFrame({"product_id": ["NEW-1"], "title": ["SCENTED LAVENDER CANDLE JAR"],
                                 "description": [""], "category": [""], "price": [4.5]})
    done = fold_in(live_root, events, new_products, through_batch=7)
    folder = fmt.resolve(live_root)
    assert folder == done.folder != base
    manifest = fmt.read_manifest(folder)
    s = manifest["stream"]
    assert (s["through_batch"], s["events_folded"], s["new_users"], s["updated_users"], s["new_products"]) == (7, 5, 1, 2, 1)
    fmt.verify(folder)  # checksums of every file, hard-linked ones included

    after = Assistant.from_path(folder)
    b = after.bundle
    assert set(buy) <= {b.product_ids[r] for r in b.had[user]}
    assert b.user_factors[b.user_rows["new-shopper"]].any()
    untouched = [u for u in list(before.bundle.user_rows)[1:50] if u != user]
    assert all(np.array_equal(before.bundle.user_factors[before.bundle.user_rows[u]], b.user_factors[b.user_rows[u]])
               for u in untouched)
    # the new product: embedded with the bundle's model, in a candle cluster, found by FAISS as itself
    row = b.row_of["NEW-1"]
    sims, ids = after.recommender._search(b.vectors([row]), 3)
    assert ids[0][0] == row and sims[0][0] > 0.99
    neighbours = [b.titles[i] for i in ids[0][1:]]
    assert any("CANDLE" in t or "LAVENDER" in t for t in neighbours), neighbours
    assert b.products["popularity"].iat[row] == 1
    new_answer = [p.product_id for p in after.recommender.recommend(after.next_request(SessionState(user_id=user)))]
    assert new_answer != old_answer
    assert not set(buy) & set(new_answer)  # bought now: never recommended again


def test_full_refit_fits_als_and_ease_again(spark, live_root):
    """The scheduled refit (``refit_every``): Spark ALS and EASE on every interaction, the new purchases included."""
    from assistant.bundle_reader import load_bundle
    from index_builder.foldin import fold_in

    base = fmt.resolve(live_root)
    user = str(pd.read_parquet(base / fmt.USERS)["user_id"].iloc[0])
    buy = _far_products(base, user, 2)
    events = pd.DataFrame({"user_id": [user] * 2, "product_id": buy, "event_type": ["purchase"] * 2,
                           "value": [2.0] * 2, "ts": [pd.Timestamp("2011-12-20")] * 2})
    done = fold_in(live_root, events, None, through_batch=3, refit=True, spark=spark)
    s = fmt.read_manifest(done.folder)["stream"]
    assert s["refit"] and s["refit_params"]["item_item"]
    before, after = load_bundle(base), load_bundle(done.folder)
    assert not np.array_equal(before.item_factors, after.item_factors)
    assert after.item_neighbours.shape == before.item_neighbours.shape  # the same EASE settings, refitted
    assert not np.array_equal(before.item_weights, after.item_weights)  # on a Gram with the new co-purchase


def test_folder_stream_dead_letters_and_publishes(spark, live_root, tmp_path):
    from index_builder.stream import EventLog, StreamConfig, run_stream

    base = fmt.resolve(live_root)
    ev = _events(base).tail(300)
    good = [{"user_id": r.user_id, "product_id": r.product_id, "event_type": r.event_type, "value": r.value,
             "ts": str(r.ts)} for r in ev.itertuples()]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    bad = ["{not json", '{"user_id": "u1", "product_id": "NO-SUCH-PRODUCT"}', '{"user_id": "u1", "product_id": "'
           + good[0]["product_id"] + '", "event_type": "teleport"}']
    part = tmp_path / "part-1.jsonl"
    part.write_text(_lines(good[:200] + bad + [{"user_id": "walk-in", "product_id": good[0]["product_id"]}]))
    part.rename(inbox / part.name)  # files are moved in whole, never written in place
    cfg = StreamConfig(bundle=str(live_root), source="dir", path=str(inbox), until_idle_s=4, publish_every=10_000,
                       publish_interval_s=1, keep_versions=2, trigger_s=0.5)
    job = run_stream(cfg, spark)
    first = fmt.read_manifest(fmt.resolve(live_root))["stream"]
    assert first["events_folded"] == 201 and first["new_users"] == 1  # walk-in: no event type -> a purchase

    log = EventLog(live_root / "stream")
    dead = log.read_dead_letters()
    assert sorted(dead["reject_reason"]) == ["malformed_json", "unknown_event_type", "unknown_product_id"]
    assert set(dead["raw"]) == set(bad)  # the raw text is kept, nothing is lost
    assert len(log.read_events()) == 201

    part = tmp_path / "part-2.jsonl"
    part.write_text(_lines(good[200:]))
    part.rename(inbox / part.name)
    job = run_stream(cfg, spark)  # restarted: the checkpoint skips part-1
    assert len(log.read_events()) == 301
    second = fmt.read_manifest(fmt.resolve(live_root))["stream"]
    assert second["events_total"] == 301 and second["through_batch"] > first["through_batch"]
    assert job.published and job.published[-1]["events_folded"] == 100
    versions = [p for p in live_root.iterdir() if (p / fmt.MANIFEST).is_file() and not p.is_symlink()]
    assert len(versions) == 2  # --keep-versions 2: the base version was pruned


def _stream_cmd(root: Path, bootstrap: str, topic: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "index_builder", "stream", "--bundle", str(root), "--source", "kafka",
            "--bootstrap", bootstrap, "--topic", topic, "--max-records", "400", "--trigger-seconds", "0.5",
            "--publish-every", "100000", "--publish-interval", "3600", *extra]


def test_kafka_stream_counts_every_event_once_across_crashes(live_root, kafka, tmp_path):
    """A crash after a batch's files are written but before Spark commits it, then a kill -9 at a random
    moment: after a restart every event is in the log, the database and the bundle exactly once."""
    from index_builder.db import Database
    from index_builder.produce import produce
    from index_builder.stream import CRASH_ENV, EventLog

    base = fmt.resolve(live_root)
    ev = _events(base).tail(3000).reset_index(drop=True)
    ev["ts"] = pd.Timestamp("2012-01-01") + pd.to_timedelta(np.arange(len(ev)), unit="s")  # each event unique
    src = tmp_path / "events.parquet"
    ev.to_parquet(src)
    topic = "events-once"
    assert produce(src, kafka, topic, rate=0) == len(ev)
    db_url = f"sqlite:///{tmp_path / 'events.sqlite'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    log_path = tmp_path / "stream.log"
    cmd = _stream_cmd(live_root, kafka, topic, "--db", db_url)

    crashed = subprocess.run(cmd + ["--until-idle", "30"], cwd=ROOT, env={**env, CRASH_ENV: "2"},
                             capture_output=True, text=True, timeout=300)
    assert crashed.returncode == 3, crashed.stderr[-2000:]
    log = EventLog(live_root / "stream")
    assert len(log.entries()) == 3  # batches 0-2 written; batch 2 never committed

    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd + ["--until-idle", "30"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 240
        while len(log.entries()) < 5 and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(np.random.default_rng().uniform(0, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(log.entries()) < 8, "the stream finished before it could be killed"

    done = subprocess.run(cmd + ["--until-idle", "8"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    stored = log.read_events()
    assert len(stored) == len(ev)
    assert not stored.duplicated(["user_id", "product_id", "ts"]).any()
    assert Database(db_url).count_events() == len(ev)
    manifest = fmt.read_manifest(fmt.resolve(live_root))
    assert manifest["stream"]["events_total"] == len(ev)
    assert manifest["counts"]["events"] == fmt.read_manifest(base)["counts"]["events"] + len(ev)


def test_assistant_swaps_in_new_versions_and_refuses_broken_ones(live_root):
    from assistant.chat import Assistant
    from assistant.live import LiveAssistant
    from assistant.session import SessionState
    from index_builder.foldin import fold_in

    base = fmt.resolve(live_root)
    user = str(pd.read_parquet(base / fmt.USERS)["user_id"].iloc[3])
    live = LiveAssistant(live_root, Assistant.from_path, watch=False)
    state = SessionState(user_id=user)
    in_flight = live.turn("what should I buy next?", state)  # begun on the old version
    old = live.current
    assert not live.check()

    buy = _far_products(base, user, 4)
    fold_in(live_root, pd.DataFrame({"user_id": [user] * 4, "product_id": buy, "event_type": ["purchase"] * 4,
                                     "value": [2.0] * 4, "ts": [pd.Timestamp("2011-12-30")] * 4}), None, through_batch=0)
    assert live.check() and live.current is not old
    old_answer = [p.product_id for p in old.recommender.recommend(old.next_request(SessionState(user_id=user)))]
    "".join(in_flight.chunks)  # the turn that began before the swap finishes on the version it began with
    assert [p.product_id for p in in_flight.products] == old_answer
    fresh = live.turn("what should I buy next?", SessionState(user_id=user))
    "".join(fresh.chunks)
    assert fresh.products and not {p.product_id for p in fresh.products} & set(buy)
    assert [p.product_id for p in fresh.products] != old_answer
    assert live.bundle.version == fmt.resolve(live_root).name
    assert set(buy) <= {live.bundle.product_ids[r] for r in live.bundle.had[user]}

    # a broken version: a file that does not match its checksum
    good_version = live.version
    broken = fold_in(live_root, pd.DataFrame({"user_id": [user], "product_id": [buy[0]], "event_type": ["view"],
                                              "value": [1.0], "ts": [pd.Timestamp("2011-12-31")]}), None,
                     through_batch=1).folder
    (broken / fmt.USER_FACTORS).write_bytes(b"not an array")
    assert not live.check()
    assert live.version == good_version and broken.name in live.refused
    assert "checksum" in live.refused[broken.name]
    assert live.turn("what should I buy next?", SessionState(user_id=user)).products  # still serving
