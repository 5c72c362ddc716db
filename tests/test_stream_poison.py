"""The live stream against every kind of bad record, through a real Kafka-protocol broker: the job keeps
running, every good record is in the event log exactly once, every bad one is in the dead letters with its
reason, and the next publish succeeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from index_builder.core import bundle as fmt
from tests.support.poison_corpus import good_records, poison_records

ROOT = Path(__file__).resolve().parents[1]


def send(bootstrap: str, topic: str, payloads: list[bytes], partitions: int = 2) -> None:
    from confluent_kafka import Producer

    from index_builder.live.produce import ensure_topic

    ensure_topic(bootstrap, topic, partitions)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, value in enumerate(payloads):
        producer.produce(topic, key=str(i % 7).encode(), value=value)
    assert producer.flush(30) == 0


def ledger_records(state: Path) -> tuple[int, int]:
    from index_builder.live.stream import EventLog

    entries = EventLog(state).entries()
    return (sum(e["events"] + e["products"] + e["dead_letters"] for e in entries),
            max((e["batch_id"] for e in entries), default=-1))


def wait_until_published(root: Path, proc, n_records: int, timeout: float = 240) -> dict:
    """Until the ledger holds ``n_records`` records and a version folds in its last batch."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the stream job stopped"
        seen, last = ledger_records(root / "stream")
        stream = fmt.read_manifest(fmt.resolve(root)).get("stream", {})
        if seen >= n_records and stream.get("through_batch", -1) >= last:
            return stream
        time.sleep(0.5)
    raise AssertionError(f"not published in {timeout:.0f} s: {ledger_records(root / 'stream')} of {n_records} records")


@pytest.fixture
def stream_job(live_root, kafka, tmp_path):
    procs = []

    def start(topic: str, *extra: str):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        log = open(tmp_path / f"stream-{topic}.log", "w")  # noqa: SIM115 (closed with the process)
        cmd = [sys.executable, "-m", "index_builder", "stream", "--bundle", str(live_root), "--source", "kafka",
               "--bootstrap", kafka, "--topic", topic, "--trigger-seconds", "0.5", "--publish-every", "100000",
               "--publish-interval", "1", *extra]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append((proc, log))
        return proc

    yield start
    for proc, log in procs:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_poison_records_are_dead_lettered_and_the_stream_goes_on(live_root, kafka, stream_job, tmp_path):
    from index_builder.live.stream import EventLog

    base = fmt.resolve(live_root)
    events = pd.read_parquet(base / fmt.EVENTS).tail(40).reset_index(drop=True)
    user, product = "poison-shopper", str(events["product_id"].iloc[-1])
    goods = good_records(events, user, "NEW-POISON-1")
    duplicate = json.dumps({"user_id": user, "product_id": product, "ts": "2011-12-06T09:00:00", "event_id": "E-1"}).encode()
    poisons = poison_records(product, "NEW-POISON-1", user)
    assert len({p.kind for p in poisons}) >= 30 and len({p.raw for p in poisons}) == len(poisons)
    mixed = []
    for i, g in enumerate(goods):  # bad records between good ones, in the same micro-batches
        mixed.append(g)
        if i < len(poisons):
            mixed.append(poisons[i].payload)
    mixed += [p.payload for p in poisons[len(goods):]] + [duplicate, duplicate]
    send(kafka, "poison", mixed)

    proc = stream_job("poison")
    stream = wait_until_published(live_root, proc, len(mixed))
    assert proc.poll() is None

    log = EventLog(live_root / "stream")
    stored = log.read_events()
    n_good_events = len(events) + 4  # the new product's purchase, the view beside a price record, the BOM record, E-1
    assert len(stored) == n_good_events, stored.tail(10)
    key = ["user_id", "product_id", "event_type", "ts"]
    assert not stored.duplicated(key + ["value"]).any()
    sent = events.assign(user_id=events["user_id"].astype(str), ts=pd.to_datetime(events["ts"]))
    got = stored.assign(ts=pd.to_datetime(stored["ts"]))
    assert len(sent.merge(got, on=key)) == len(events)  # every replayed event, once
    assert (stored["event_id"] == "E-1").sum() == 1

    dead = log.read_dead_letters()
    by_raw = dict(zip(dead["raw"], dead["reject_reason"], strict=True))
    wrong = {p.kind: (by_raw.get(p.raw), p.reason) for p in poisons if by_raw.get(p.raw) != p.reason}
    assert not wrong, wrong
    assert by_raw[duplicate.decode()] == "duplicate_event_id"
    assert len(dead) == len(poisons) + 1  # nothing else was dead-lettered

    # the publish folded exactly the good events in, once each; the new product and the price update landed
    assert stream["events_total"] == n_good_events
    folder = fmt.resolve(live_root)
    fmt.verify(folder)
    products = pd.read_parquet(folder / fmt.PRODUCTS).set_index("product_id")
    assert "NEW-POISON-1" in products.index and products.loc["NEW-POISON-1", "popularity"] == 1
    assert products.loc[str(events["product_id"].iloc[0]), "price"] == 3.25

    # the next records are published too: nothing is stuck behind the poison
    more = good_records(events.head(5), f"{user}-2", "NEW-POISON-2", tag="-2", ts="2011-12-07T10:00:00")
    send(kafka, "poison", more)
    stream = wait_until_published(live_root, proc, len(mixed) + len(more))
    assert stream["events_total"] == n_good_events + 5 + 3
    assert proc.poll() is None
