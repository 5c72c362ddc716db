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

from index_builder.core import bundle as fmt

ROOT = Path(__file__).resolve().parents[1]


def _events(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / fmt.EVENTS)


def _lines(records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def _records(folder: Path, n: int) -> list[dict]:
    """The bundle's last ``n`` events as stream records."""
    return [{"user_id": r.user_id, "product_id": r.product_id, "event_type": r.event_type, "value": r.value,
             "ts": str(r.ts)} for r in _events(folder).tail(n).itertuples()]


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
    from index_builder.live.foldin import solve_users

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
    from index_builder.live.foldin import fold_in

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
    from index_builder.core.bundle_reader import load_bundle
    from index_builder.live.foldin import fold_in

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
    from index_builder.live.stream import EventLog, StreamConfig, run_stream

    base = fmt.resolve(live_root)
    good = _records(base, 300)
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
    # the live panel's numbers: the dead letters by reason, when the newest event arrived, its own time stamp
    assert first["dead_letters"] == {"malformed_json": 1, "unknown_event_type": 1, "unknown_product_id": 1}
    assert first["full_build"] == base.name and first["base_version"] == base.name
    arrived, published = pd.Timestamp(first["arrived_at"], unit="s", tz="UTC"), pd.Timestamp(first["published_at"])
    assert pd.Timedelta(0) <= published.floor("s") - arrived.floor("s") < pd.Timedelta(minutes=2)
    stamps = pd.to_datetime(EventLog(live_root / "stream").read_events()["ts"], utc=True)
    assert pd.Timestamp(first["newest_event_ts"]) == stamps.max()  # the walk-in's: it had none, so arrival time

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
    assert second["full_build"] == base.name != second["base_version"]  # folded onto the first publish
    assert second["dead_letters"] == first["dead_letters"] and second["arrived_at"] > first["arrived_at"]
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
    from index_builder.live.produce import produce
    from index_builder.live.stream import CRASH_ENV, EventLog
    from index_builder.storage.db import Database

    base = fmt.resolve(live_root)
    ev = _events(base).tail(3000).reset_index(drop=True)
    ev["ts"] = pd.Timestamp("2012-01-01") + pd.to_timedelta(np.arange(len(ev)), unit="s")  # each event unique
    ev["event_id"] = [f"e{i}" if i % 2 else None for i in range(len(ev))]  # a replayed batch is not its own duplicate
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
    assert log.read_dead_letters().empty
    assert Database(db_url).count_events() == len(ev)
    manifest = fmt.read_manifest(fmt.resolve(live_root))
    assert manifest["stream"]["events_total"] == len(ev)
    assert manifest["counts"]["events"] == fmt.read_manifest(base)["counts"]["events"] + len(ev)


def test_assistant_swaps_in_new_versions_and_refuses_broken_ones(live_root):
    from assistant.chat import Assistant
    from assistant.live import LiveAssistant
    from assistant.session import SessionState
    from index_builder.live.foldin import fold_in

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


def _with_brand(root: Path) -> Path:
    """The live bundle with an extra catalog column (the README: extra columns are kept as attributes)."""
    folder = fmt.resolve(root)
    products = pd.read_parquet(folder / fmt.PRODUCTS)
    products.insert(5, "brand", [f"brand-{i % 7}" for i in range(len(products))])
    products.to_parquet(folder / fmt.PRODUCTS, index=False)
    fmt.update_manifest(folder, files=fmt.list_files(folder))
    return folder


def test_folder_stream_price_updates_extra_columns_and_one_count_per_event(spark, live_root, tmp_path):
    """In one micro-batch: two price records for a product (the newer wins, neither is a dead letter), an event
    next to a price record of its product (one event, not two), and a new product in a catalog with a
    ``brand`` column (it takes the record's brand)."""
    from index_builder.live.stream import EventLog, StreamConfig, run_stream

    base = _with_brand(live_root)
    known = str(pd.read_parquet(base / fmt.PRODUCTS)["product_id"].iloc[0])
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    records = [
        {"product_id": known, "title": "x", "price": 9.99},
        {"user_id": "u-price", "product_id": known, "event_type": "view", "ts": "2011-12-10T10:00:00"},
        {"product_id": known, "title": "x", "price": 7.5},  # the correction, later in the batch
        {"product_id": "NEW-BRANDED", "title": "Brass candle snuffer", "price": 6.0, "brand": "Acme"},
        {"user_id": "u-price", "product_id": "NEW-BRANDED", "event_type": "purchase", "ts": "2011-12-10T10:01:00"},
    ]
    part = tmp_path / "part.jsonl"
    part.write_text(_lines(records))
    part.rename(inbox / part.name)
    job = run_stream(StreamConfig(bundle=str(live_root), source="dir", path=str(inbox), until_idle_s=3,
                                  publish_every=10_000, publish_interval_s=1, trigger_s=0.5), spark)
    log = EventLog(live_root / "stream")
    assert log.read_dead_letters().empty
    assert len(log.read_events()) == 2
    s = fmt.read_manifest(fmt.resolve(live_root))["stream"]
    assert s["events_folded"] == 2 and s["events_total"] == 2 and job.published
    products = pd.read_parquet(fmt.resolve(live_root) / fmt.PRODUCTS).set_index("product_id")
    assert products.loc[known, "price"] == 7.5
    assert products.loc["NEW-BRANDED", "brand"] == "Acme" and products.loc[known, "brand"] == "brand-0"


def test_a_batch_that_fails_unforeseen_is_dead_lettered_whole_and_the_stream_goes_on(spark, live_root, tmp_path,
                                                                                    monkeypatch):
    """A failure no rule foresaw (injected into batch 0) dead-letters that batch with its error; batch 1 is
    stored and published. Then a fold-in that fails for one batch quarantines only that batch."""
    import index_builder.live.foldin as foldin
    from index_builder.live.stream import FAIL_ENV, EventLog, StreamConfig, run_stream

    base = fmt.resolve(live_root)
    good = _records(base, 30)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = StreamConfig(bundle=str(live_root), source="dir", path=str(inbox), until_idle_s=3, publish_every=10_000,
                       publish_interval_s=0.5, trigger_s=0.5, max_files=1)

    def drop(name: str, records) -> None:
        part = tmp_path / name
        part.write_text(_lines(records))
        part.rename(inbox / name)

    monkeypatch.setenv(FAIL_ENV, "0")
    drop("a.jsonl", good[:10])
    run_stream(cfg, spark)
    drop("b.jsonl", good[10:20])
    run_stream(cfg, spark)
    log = EventLog(live_root / "stream")
    dead = log.read_dead_letters()
    assert len(dead) == 10 and set(dead["reject_reason"]) == {"batch_failed"}
    assert dead["error"].str.contains("injected failure").all()
    assert log.entries()[0]["failed"] and len(log.read_events()) == 10
    assert fmt.read_manifest(fmt.resolve(live_root))["stream"]["events_total"] == 10

    # a fold-in that fails whenever one batch's events are in it: that batch alone is quarantined
    real = foldin.fold_in

    def fussy(root, events, products, **kw):
        if (events["user_id"] == "poison-foldin").any():
            raise ValueError("cannot fold this shopper in")
        return real(root, events, products, **kw)

    monkeypatch.setattr(foldin, "fold_in", fussy)
    monkeypatch.delenv(FAIL_ENV)
    cfg.publish_interval_s = 3600  # both batches wait, then are published together
    drop("c.jsonl", [{**g, "user_id": "poison-foldin"} for g in good[20:25]])
    drop("d.jsonl", good[25:30])
    run_stream(cfg, spark)  # the final forced publish
    s = fmt.read_manifest(fmt.resolve(live_root))["stream"]
    assert s["events_total"] == 15
    entries = {e["batch_id"]: e for e in log.entries()}
    quarantined = [e for e in entries.values() if e.get("quarantined")]
    assert len(quarantined) == 1 and "cannot fold" in quarantined[0]["quarantined"]
    dead = log.read_dead_letters()
    moved = dead[dead["reject_reason"] == "fold_in_failed"]
    assert len(moved) == 5 and all("poison-foldin" in r for r in moved["raw"])
    assert not (log.read_events()["user_id"] == "poison-foldin").any()  # each record in one place only
    assert len(log.read_events()) == 15


class _Message:
    def __init__(self, partition: int, offset: int, value: bytes | None = None, error=None):
        self._p, self._o, self._v, self._e = partition, offset, value, error

    def error(self):
        return self._e

    def partition(self):
        return self._p

    def offset(self):
        return self._o

    def key(self):
        return None

    def value(self):
        return self._v

    def timestamp(self):
        return (1, 1_700_000_000_000)


class _GoneOffsets:
    """A consumer over a partition whose records before offset ``low`` were deleted by retention, answering
    as librdkafka does with ``auto.offset.reset=error``: an _AUTO_OFFSET_RESET error, then, after a seek,
    the records from there. (The test broker, Tansu, neither deletes records nor reports out-of-range
    offsets, so this one consumer is a stand-in; the reader's other paths run against Tansu.)"""

    def __init__(self, low: int, high: int):
        self.low, self.high, self.at, self.failed = low, high, None, False

    def assign(self, tps):
        self.at = tps[0].offset

    def seek(self, tp):
        self.at = tp.offset

    def unassign(self):
        self.at = None

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        return self.low, self.high

    def consume(self, num_messages=1, timeout=None):
        from confluent_kafka import KafkaError

        if self.at < self.low and not self.failed:
            self.failed = True
            return [_Message(0, -1001, error=KafkaError(KafkaError._AUTO_OFFSET_RESET, "offset out of range"))]
        out = [_Message(0, o, f'{{"n": {o}}}'.encode()) for o in range(max(self.at, self.low), self.high)][:num_messages]
        self.at = max(self.at, self.low) + len(out)
        return out


def test_kafka_offsets_removed_by_retention_are_reported_not_skipped(monkeypatch):
    """The checkpoint says offset 100, retention has removed everything before 250: the reader resumes at
    250 (not at the end), and says so in a gap row that the stream writes into its ledger."""
    from index_builder.live import kafka_source

    monkeypatch.setattr(kafka_source, "partitions", lambda bootstrap, topic, timeout=10.0: [0])
    reader = kafka_source.KafkaStreamReader({"bootstrap": "stand-in:9092", "topic": "events"})
    reader._consumer = _GoneOffsets(low=250, high=260)
    rows, nxt = reader._poll({"0": 100}, None)
    gap = json.loads(rows[0][-1])
    assert gap == {"partition": 0, "expected": 100, "resumed_at": 250, "lost": 150, "earliest": 250, "latest": 260,
                   "why": "retention removed them"}
    assert [r[1] for r in rows[1:]] == list(range(250, 260)) and nxt == {"0": 260}
    # a replay of that batch reads the same rows, gap included
    reader._consumer = _GoneOffsets(low=250, high=260)
    again = list(reader.readBetweenOffsets({"0": 100}, {"0": 260}))
    assert [r[1] for r in again] == [r[1] for r in rows]


def test_the_stream_ledger_keeps_offset_gaps(spark, live_root):
    from index_builder.live.stream import EventLog, StreamConfig, StreamJob

    base = fmt.resolve(live_root)
    ev = _events(base).tail(3)
    good = [json.dumps({"user_id": r.user_id, "product_id": r.product_id, "ts": str(r.ts)}) for r in ev.itertuples()]
    gap = json.dumps({"partition": 2, "expected": 10, "resumed_at": 40, "lost": 30})
    df = spark.createDataFrame([(good[0], 1_700_000_000_000, None), (None, 1_700_000_000_000, gap),
                                (good[1], 1_700_000_000_000, None), (good[2], 1_700_000_000_000, None)],
                               "value string, timestamp_ms long, gap string")
    job = StreamJob(StreamConfig(bundle=str(live_root), publish_interval_s=3600), spark)
    job.process(df, 0)
    entry = EventLog(live_root / "stream").entries()[0]
    assert entry["events"] == 3 and entry["dead_letters"] == 0
    assert entry["offset_gaps"] == [json.loads(gap)]


def test_a_version_refused_while_half_written_is_served_once_complete(live_root):
    """A version copied in by hand (or by rsync) is seen before its last file arrives: it is refused then,
    and swapped in when its files change and it loads (it used to be refused forever)."""
    import shutil

    from assistant.chat import Assistant
    from assistant.live import LiveAssistant

    base = fmt.resolve(live_root)
    live = LiveAssistant(live_root, Assistant.from_path, watch=False)
    late = live_root / "20991231T000000Z"
    shutil.copytree(base, late)
    held = (late / fmt.USERS).read_bytes()
    (late / fmt.USERS).unlink()  # not copied yet
    fmt.set_current(live_root, late.name)
    assert not live.check() and late.name in live.refused and "missing" in live.refused[late.name]
    assert not live.check()  # unchanged: not loaded again on every poll
    (late / fmt.USERS).write_bytes(held)
    assert live.check() and live.version == late.name and late.name not in live.refused


def test_a_database_outage_never_stops_the_stream_and_the_batch_catches_up(spark, live_root, tmp_path, monkeypatch):
    """The event log is the source of truth: a batch the database refused is marked in the ledger and written
    with the next batch once the database answers."""
    from index_builder.live.stream import EventLog, StreamConfig, run_stream
    from index_builder.storage.db import Database

    base = fmt.resolve(live_root)
    ev = _events(base).tail(20)
    good = [{"user_id": r.user_id, "product_id": r.product_id, "ts": str(r.ts)} for r in ev.itertuples()]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    url = f"sqlite:///{tmp_path / 'events.sqlite'}"
    cfg = StreamConfig(bundle=str(live_root), source="dir", path=str(inbox), until_idle_s=3, publish_every=10_000,
                       publish_interval_s=0.5, trigger_s=0.5, db=url)
    real = Database.replace_batch
    down = {"yes": True}

    def flaky(self, batch_id, events):
        if down["yes"]:
            raise ConnectionError("the database server is down")
        return real(self, batch_id, events)

    monkeypatch.setattr(Database, "replace_batch", flaky)
    (tmp_path / "a.jsonl").write_text(_lines(good[:10]))
    (tmp_path / "a.jsonl").rename(inbox / "a.jsonl")
    run_stream(cfg, spark)
    log = EventLog(live_root / "stream")
    assert len(log.read_events()) == 10 and log.entries()[0]["db_error"].startswith("ConnectionError")
    assert fmt.read_manifest(fmt.resolve(live_root))["stream"]["events_total"] == 10  # published all the same
    down["yes"] = False
    (tmp_path / "b.jsonl").write_text(_lines(good[10:]))
    (tmp_path / "b.jsonl").rename(inbox / "b.jsonl")
    run_stream(cfg, spark)
    assert Database(url).count_events() == 20
    assert not any(e.get("db_error") for e in log.entries())
