"""``python -m index_builder produce``: replay a dataset's events into Kafka (demos, tests, benchmarks).

Each row becomes one JSON message in the canonical event schema, keyed by ``user_id`` so that one
shopper's events stay in order in one partition.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pandas as pd

from index_builder.core.constants import EVENT_COLUMNS, EVENT_ID, TS
from index_builder.core.errors import InputError

log = logging.getLogger(__name__)


def read_events(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--from {p}: no such file (a bundle's events.parquet, or a .csv/.jsonl of events)")
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    if p.suffix in (".jsonl", ".json"):
        return pd.read_json(p, lines=True, dtype=False)
    if p.suffix == ".csv":
        return pd.read_csv(p, dtype=str)
    raise InputError(f"--from {p}: unknown format {p.suffix!r}; use .parquet, .csv or .jsonl")


def messages(events: pd.DataFrame) -> list[tuple[str, str]]:
    """(key, JSON value) per event; timestamps as ISO text."""
    cols = [c for c in (*EVENT_COLUMNS, EVENT_ID) if c in events.columns]
    out = []
    for rec in events[cols].to_dict("records"):
        if TS in rec and rec[TS] is not None and not pd.isna(rec[TS]):
            rec[TS] = pd.Timestamp(rec[TS]).isoformat()
        rec = {k: v for k, v in rec.items() if v is not None and not (isinstance(v, float) and pd.isna(v))}
        out.append((str(rec.get("user_id", "")), json.dumps(rec, default=str)))
    return out


def ensure_topic(bootstrap: str, topic: str, partitions: int = 4) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic in admin.list_topics(timeout=10).topics:
        return
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for f in futures.values():
        try:
            f.result(10)
        except Exception as exc:  # created meanwhile by another producer
            if "already exists" not in str(exc).lower() and "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def produce(path: str | Path, bootstrap: str, topic: str, *, rate: float = 100.0, limit: int | None = None,
            partitions: int = 4) -> int:
    """Send the events of ``path`` to ``topic`` at ``rate`` per second (0: as fast as the broker takes them)."""
    from confluent_kafka import Producer

    events = read_events(path)
    if limit:
        events = events.head(limit)
    ensure_topic(bootstrap, topic, partitions)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": False})
    failed: list[str] = []

    def done(err, _msg):
        if err is not None:
            failed.append(str(err))

    t0 = time.perf_counter()
    sent = 0
    for key, value in messages(events):
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=value.encode(), on_delivery=done)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.1)
        sent += 1
        if rate > 0:
            ahead = sent / rate - (time.perf_counter() - t0)
            if ahead > 0:
                producer.poll(0)
                time.sleep(ahead)
        if sent % 10_000 == 0:
            producer.poll(0)
            log.info("produce: %d of %d events", sent, len(events))
    producer.flush(30)
    if failed:
        raise InputError(f"Kafka {bootstrap} refused {len(failed)} of {sent} events (first: {failed[0]})")
    took = time.perf_counter() - t0
    log.info("produce: %d events to %s/%s in %.1fs (%.0f/s)", sent, bootstrap, topic, took, sent / max(took, 1e-9))
    return sent
