"""Kafka as a Spark streaming source with no jar: PySpark 4's Python Data Source API + confluent-kafka.

Spark's own ``format("kafka")`` needs the spark-sql-kafka jar from a Maven repository; where a cluster
has it, ``stream --kafka-source builtin`` uses it instead. This reader keeps one offset per partition in
the query's checkpoint (``{"0": 120, "1": 98, ...}``: the next offset to read), so a restarted query
reads every record after the last committed batch exactly once, and a replayed batch
(``readBetweenOffsets``) reads the same records again.

Offsets are found by reading, not from the broker's high watermarks: some Kafka-protocol brokers
report them wrong when a batch holds many records.

Offsets that are gone (retention deleted them before they were read, or the topic was deleted and made
again): the broker says the offset is out of range, and the reader resumes at the partition's earliest
offset, never silently at its end. It logs the gap and adds a row with a ``gap`` (JSON: partition, the
offset expected, the one resumed at, the records lost when known) that the stream job writes into its
ledger (``offset_gaps``) instead of treating as a record. Spark's own Kafka source
(``--kafka-source builtin``) fails the query instead (its ``failOnDataLoss``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from pyspark.sql.datasource import DataSource, SimpleDataSourceStreamReader
from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

log = logging.getLogger(__name__)

NAME = "cartwise_kafka"
SCHEMA = StructType([
    StructField("partition", IntegerType()),
    StructField("offset", LongType()),
    StructField("key", StringType()),
    StructField("value", StringType()),
    StructField("timestamp_ms", LongType()),
    StructField("gap", StringType()),  # JSON, on the row that stands for offsets that were gone; else null
])
POLL_S = 0.5  # a read ends when no record came for this long (or at maxRecordsPerBatch)


def consumer(bootstrap: str):
    from confluent_kafka import Consumer

    return Consumer({
        "bootstrap.servers": bootstrap, "group.id": "cartwise-stream", "enable.auto.commit": False,
        "enable.partition.eof": False, "session.timeout.ms": 6000, "max.poll.interval.ms": 7000,
        # an offset that is gone is reported (and handled in KafkaStreamReader._poll), never skipped to the end
        "auto.offset.reset": "error",
    })


def partitions(bootstrap: str, topic: str, timeout: float = 10.0) -> list[int]:
    """The topic's partition numbers (an error naming the broker and topic when there is no such topic)."""
    c = consumer(bootstrap)
    try:
        meta = c.list_topics(topic, timeout=timeout)
        found = meta.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise RuntimeError(f"Kafka topic {topic!r} on {bootstrap} was not found ({found.error if found else 'no metadata'}); "
                               "create it or check --topic / --bootstrap")
        return sorted(found.partitions)
    finally:
        c.close()


class KafkaStreamReader(SimpleDataSourceStreamReader):
    def __init__(self, options: dict[str, str]):
        self.bootstrap = options["bootstrap"]
        self.topic = options["topic"]
        self.max_records = int(options.get("maxRecordsPerBatch", "10000"))
        self._consumer = None

    def _c(self):
        if self._consumer is None:
            self._consumer = consumer(self.bootstrap)
        return self._consumer

    def initialOffset(self) -> dict:
        return {str(p): 0 for p in partitions(self.bootstrap, self.topic)}

    def _poll(self, start: dict[str, int], end: dict[str, int] | None) -> tuple[list[tuple], dict[str, int]]:
        from confluent_kafka import KafkaError, TopicPartition

        nxt = {str(p): int(start.get(str(p), 0)) for p in partitions(self.bootstrap, self.topic)}
        nxt.update({k: int(v) for k, v in start.items()})
        wanted = {p for p in nxt if end is None or nxt[p] < int(end.get(p, 0))}
        if not wanted:
            return [], nxt
        c = self._c()
        c.assign([TopicPartition(self.topic, int(p), nxt[p]) for p in sorted(wanted)])
        rows: list[tuple] = []
        while wanted and (end is not None or len(rows) < self.max_records):
            batch = c.consume(num_messages=min(1000, self.max_records), timeout=POLL_S)
            if not batch:
                if end is None:
                    break
                continue  # a replay waits for the records it read before
            for m in batch:
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    if m.error().code() == KafkaError._AUTO_OFFSET_RESET and m.partition() is not None \
                            and str(m.partition()) in wanted:
                        p = str(m.partition())
                        rows.append(self._resume(c, p, nxt))
                        if end is not None and nxt[p] >= int(end.get(p, 0)):
                            wanted.discard(p)  # a replay: the records it read before are gone too
                        continue
                    raise RuntimeError(f"Kafka {self.bootstrap} topic {self.topic}: {m.error()}")
                p = str(m.partition())
                if p not in wanted or m.offset() < nxt[p]:
                    continue
                if end is not None and m.offset() >= int(end[p]):
                    wanted.discard(p)
                    continue
                if end is None and len(rows) >= self.max_records:
                    break
                key = m.key().decode("utf-8", "replace") if m.key() is not None else None
                value = m.value().decode("utf-8", "replace") if m.value() is not None else None
                rows.append((int(p), int(m.offset()), key, value, int(m.timestamp()[1]), None))
                nxt[p] = m.offset() + 1
                if end is not None and nxt[p] >= int(end[p]):
                    wanted.discard(p)
        c.unassign()
        return rows, nxt

    def _resume(self, c, p: str, nxt: dict[str, int]) -> tuple:
        """The broker says partition ``p``'s next offset is out of range: resume at its earliest offset and
        return the gap row."""
        from confluent_kafka import TopicPartition

        low, high = c.get_watermark_offsets(TopicPartition(self.topic, int(p)), timeout=10, cached=False)
        expected = nxt[p]
        resumed = int(low)
        lost = resumed - expected if expected < resumed else None  # past the end: the topic was made again
        gap = {"partition": int(p), "expected": expected, "resumed_at": resumed, "lost": lost,
               "earliest": int(low), "latest": int(high),
               "why": "retention removed them" if lost is not None else "the topic was deleted and created again"}
        log.warning("Kafka %s topic %s partition %s: offset %d is gone (earliest %d, latest %d): %s; resuming at %d",
                    self.bootstrap, self.topic, p, expected, low, high, gap["why"], resumed)
        nxt[p] = resumed
        c.seek(TopicPartition(self.topic, int(p), resumed))
        return (int(p), -1, None, None, int(time.time() * 1000), json.dumps(gap))

    def read(self, start: dict) -> tuple[Iterator[tuple], dict]:
        rows, nxt = self._poll(start, None)
        return iter(rows), nxt

    def readBetweenOffsets(self, start: dict, end: dict) -> Iterator[tuple]:
        rows, _ = self._poll(start, end)
        return iter(rows)

    def commit(self, end: dict) -> None:  # offsets live in Spark's checkpoint, not in a consumer group
        return None


class KafkaDataSource(DataSource):
    """``spark.readStream.format("cartwise_kafka").option("bootstrap", ...).option("topic", ...)``."""

    @classmethod
    def name(cls) -> str:
        return NAME

    def schema(self) -> StructType:
        return SCHEMA

    def simpleStreamReader(self, schema: StructType) -> KafkaStreamReader:
        return KafkaStreamReader(self.options)


def register(spark: Any) -> None:
    spark.dataSource.register(KafkaDataSource)
