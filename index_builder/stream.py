"""Live updates: ``python -m index_builder stream`` reads events from Kafka or a folder of JSON lines with
Spark Structured Streaming and publishes new bundle versions with the events folded in.

Each micro-batch (``foreachBatch``):

1. parses every record as JSON; a record with a ``title`` and no ``user_id`` is a product (new products
   are embedded at the next publish), anything else an event in the canonical schema (``user_id``,
   ``product_id``, ``event_type`` (default ``--event-type``), ``value`` (default 1), ``ts`` (default: the
   Kafka record's time, or the batch's time for files));
2. validates events and products as the builder does (``transforms``); every rejected record goes to
   the dead-letter folder with its raw text and the reason (``malformed_json``, ``unknown_product_id``...);
3. appends the valid events to the event log (Parquet, ``events/date=YYYY-MM-DD/batch-N.parquet``) and,
   with ``--db``, to the ``events`` table of a server database;
4. publishes a new bundle version (:mod:`index_builder.foldin`) once ``--publish-every`` events are pending
   or the oldest pending event is ``--publish-interval`` seconds old.

Exactly once: every file is named after its batch id and written by an atomic rename, the database rows
of a batch are replaced in one transaction, and a bundle version records the last batch folded into it
(``manifest["stream"]["through_batch"]``). Spark replays an unfinished batch with the same id and the
same records after a crash, which rewrites the same files instead of adding to them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import bundle as fmt
from .constants import (
    CATEGORY,
    DESCRIPTION,
    EVENT_COLUMNS,
    EVENT_TYPE,
    PRICE,
    PRODUCT_ID,
    REJECT_REASON,
    ROW_ID,
    TITLE,
    TS,
    USER_ID,
    VALUE,
)
from .errors import InputError

log = logging.getLogger(__name__)

RAW = "raw"
FIELDS = (USER_ID, PRODUCT_ID, EVENT_TYPE, VALUE, TS, TITLE, DESCRIPTION, CATEGORY, PRICE)
CRASH_ENV = "CARTWISE_STREAM_CRASH_AFTER_BATCH"  # tests: die after writing this batch, before its commit
BATCH_FILE = re.compile(r"batch-(\d+)\.")


@dataclass
class StreamConfig:
    bundle: str  # bundle root: new versions are published here
    source: str = "dir"  # dir | kafka
    path: str | None = None  # --source dir: folder of JSON-lines files
    bootstrap: str | None = None  # --source kafka
    topic: str = "events"
    kafka_source: str = "python"  # python (Data Source API + confluent-kafka) | builtin (needs the spark-sql-kafka jar)
    state: str | None = None  # checkpoint, event log, dead letters; default <bundle>/stream
    trigger_s: float = 1.0
    max_records: int = 20_000  # per micro-batch (Kafka)
    max_files: int = 100  # per micro-batch (folder)
    publish_every: int = 1000  # events
    publish_interval_s: float = 10.0
    refit_every: int = 0  # a full ALS + EASE refit every N publishes (0: never)
    keep_versions: int = 5
    until_idle_s: float | None = None  # stop after this long without new records (demos, tests, backfills)
    event_type: str = "purchase"
    db: str | None = None  # SQLAlchemy URL of the server event store
    master: str = "local[2]"
    driver_memory: str = "2g"


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


class EventLog:
    """The stream's state folder: event log, product log, dead letters and the batch ledger."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.events = self.folder / "events"
        self.products = self.folder / "products"
        self.dead = self.folder / "dead_letter"
        self.ledger = self.folder / "batches"
        self.checkpoint = self.folder / "checkpoint"

    def write_batch(self, batch_id: int, events: pd.DataFrame, products: pd.DataFrame, dead: pd.DataFrame,
                    started: float | None = None) -> dict:
        name = f"batch-{batch_id:09d}"
        for old in self.events.glob(f"date=*/{name}.parquet"):  # a replayed batch: its files are rewritten
            old.unlink()
        if len(events):
            days = pd.to_datetime(events[TS]).dt.strftime("%Y-%m-%d")
            for day, part in events.groupby(days):
                _atomic_write(self.events / f"date={day}" / f"{name}.parquet", lambda p, d=part: d.to_parquet(p, index=False))
        if len(products):
            _atomic_write(self.products / f"{name}.parquet", lambda p: products.to_parquet(p, index=False))
        if len(dead):
            _atomic_write(self.dead / f"{name}.jsonl",
                          lambda p: dead.to_json(p, orient="records", lines=True, date_format="iso", force_ascii=False))
        entry = {"batch_id": batch_id, "events": int(len(events)), "products": int(len(products)),
                 "dead_letters": int(len(dead)), "at": time.time(), "started": started,
                 "reasons": {str(k): int(v) for k, v in dead[REJECT_REASON].value_counts().items()} if len(dead) else {}}
        _atomic_write(self.ledger / f"{name}.json", lambda p: p.write_text(json.dumps(entry)))
        return entry

    def entries(self) -> list[dict]:
        return sorted((json.loads(p.read_text()) for p in self.ledger.glob("batch-*.json")), key=lambda e: e["batch_id"])

    def _files(self, folder: Path, pattern: str, after: int, through: int) -> list[Path]:
        out = []
        for p in folder.glob(pattern):
            b = int(BATCH_FILE.search(p.name).group(1))
            if after < b <= through:
                out.append(p)
        return sorted(out)

    def read_events(self, after: int = -1, through: int = 1 << 62) -> pd.DataFrame:
        files = self._files(self.events, "date=*/batch-*.parquet", after, through)
        if not files:
            return pd.DataFrame(columns=[*EVENT_COLUMNS, "batch_id"])
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    def read_products(self, after: int = -1, through: int = 1 << 62) -> pd.DataFrame:
        files = self._files(self.products, "batch-*.parquet", after, through)
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()

    def read_dead_letters(self) -> pd.DataFrame:
        files = sorted(self.dead.glob("batch-*.jsonl"))
        return pd.concat([pd.read_json(f, lines=True) for f in files], ignore_index=True) if files else pd.DataFrame()


class StreamJob:
    """The state of one running stream: what is known, what is pending, when to publish."""

    def __init__(self, cfg: StreamConfig, spark: Any):
        self.cfg = cfg
        self.spark = spark
        self.root = Path(cfg.bundle)
        self.log = EventLog(Path(cfg.state) if cfg.state else self.root / "stream")
        self.lock = threading.Lock()
        self.last_data = time.time()
        self.batches_seen = 0
        self.in_batch = False
        self.published: list[dict] = []
        self._known: set[str] | None = None
        self._known_df = None
        # the ledger, read from disk once and then kept as batches are written: the driver's loop asks what is
        # pending twice a second, and a long-running stream's ledger holds thousands of files
        self._ledger: dict[int, dict] = {e["batch_id"]: e for e in self.log.entries()}
        self.db = None
        if cfg.db:
            from .db import Database

            self.db = Database(cfg.db)
            self.db.create()

    # -- what the bundle knows ------------------------------------------------------------------------
    def through_batch(self) -> int:
        return int(fmt.read_manifest(fmt.resolve(self.root)).get("stream", {}).get("through_batch", -1))

    def known_products(self):
        if self._known is None:
            folder = fmt.resolve(self.root)
            ids = pd.read_parquet(folder / fmt.PRODUCTS, columns=[PRODUCT_ID])[PRODUCT_ID].astype(str)
            streamed = self.log.read_products()
            self._known = set(ids) | (set(streamed[PRODUCT_ID].astype(str)) if len(streamed) else set())
            self._known_df = None
        if self._known_df is None:
            self._known_df = self.spark.createDataFrame(pd.DataFrame({PRODUCT_ID: sorted(self._known)})).cache()
        return self._known_df

    # -- one micro-batch ------------------------------------------------------------------------------
    def process(self, df, batch_id: int) -> None:
        t0 = time.perf_counter()
        self.in_batch = True
        try:
            self._process(df, batch_id, t0)
        finally:
            self.in_batch = False
            self.last_data = time.time()
        self.maybe_publish()

    def _process(self, df, batch_id: int, t0: float) -> None:
        from pyspark.sql import functions as F

        from .transforms import blank, validate_events, validate_products

        started = time.time()
        schema = ", ".join(f"`{f}` string" for f in FIELDS)
        default_ts = (F.timestamp_millis(F.col("timestamp_ms")).cast("string") if "timestamp_ms" in df.columns
                      else F.lit(pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M:%S.%f")))
        parsed = df.select(F.col("value").alias(RAW), default_ts.alias("_default_ts")).withColumn(
            "_j", F.from_json(RAW, schema + ", `_corrupt` string", {"columnNameOfCorruptRecord": "_corrupt"}))
        parsed = parsed.withColumn("_bad", F.col("_j").isNull() | F.col("_j._corrupt").isNotNull())
        parsed = parsed.cache()
        malformed = parsed.filter(F.col("_bad")).select(RAW, F.lit("malformed_json").alias(REJECT_REASON))
        records = (parsed.filter(~F.col("_bad")).withColumn("_j", F.col("_j").dropFields("_corrupt"))
                   .select(RAW, "_default_ts", "_j.*", F.monotonically_increasing_id().alias(ROW_ID)))
        is_product = blank(F.col(USER_ID)) & ~blank(F.col(TITLE))
        products_in = records.filter(is_product).select(ROW_ID, RAW, PRODUCT_ID, TITLE, DESCRIPTION, CATEGORY, PRICE)
        good_products, product_rejects = validate_products(products_in)
        events_in = records.filter(~is_product).select(
            ROW_ID, RAW, USER_ID, PRODUCT_ID, F.coalesce(F.when(~blank(F.col(EVENT_TYPE)), F.col(EVENT_TYPE)),
                                                 F.lit(self.cfg.event_type)).alias(EVENT_TYPE),
            VALUE, F.coalesce(F.when(~blank(F.col(TS)), F.col(TS)), F.col("_default_ts")).alias(TS))
        batch_products = good_products.select(PRODUCT_ID)
        known = self.known_products().unionByName(batch_products)
        good_events, event_rejects = validate_events(events_in, known)
        events_pdf = good_events.toPandas()
        products_pdf = good_products.select(PRODUCT_ID, TITLE, DESCRIPTION, CATEGORY, PRICE).toPandas()
        dead = pd.concat([d for d in (malformed.toPandas(), event_rejects.select(RAW, REJECT_REASON).toPandas(),
                                      product_rejects.select(RAW, REJECT_REASON).toPandas()) if len(d)]
                         or [pd.DataFrame(columns=[RAW, REJECT_REASON])], ignore_index=True)
        parsed.unpersist()
        events_pdf["batch_id"] = batch_id
        dead["batch_id"] = batch_id
        with self.lock:
            entry = self.log.write_batch(batch_id, events_pdf, products_pdf, dead, started=started)
            self._ledger[batch_id] = entry
            if os.environ.get(CRASH_ENV) == str(batch_id):  # fault injection for the exactly-once test
                log.error("stream: %s=%s: exiting before Spark commits this batch", CRASH_ENV, batch_id)
                os._exit(3)
            if self.db is not None:
                self.db.replace_batch(batch_id, events_pdf)
            if len(products_pdf):
                self._known = (self._known or set()) | set(products_pdf[PRODUCT_ID].astype(str))
                if self._known_df is not None:
                    self._known_df.unpersist()
                self._known_df = None
            self.batches_seen += 1
            self.last_data = time.time()
        took = time.perf_counter() - t0
        n = entry["events"] + entry["products"] + entry["dead_letters"]
        log.info("stream: batch %d: %d events, %d products, %d dead letters%s (%.0f records/s)", batch_id,
                 entry["events"], entry["products"], entry["dead_letters"],
                 f" {entry['reasons']}" if entry["reasons"] else "", n / took if took > 0 else 0.0)

    # -- publishing -----------------------------------------------------------------------------------
    def pending(self) -> tuple[list[dict], int]:
        through = self.through_batch()
        waiting = [self._ledger[b] for b in sorted(self._ledger) if b > through]
        return waiting, through

    def maybe_publish(self, force: bool = False) -> dict | None:
        from .foldin import fold_in

        with self.lock:
            waiting, through = self.pending()
            n_events = sum(e["events"] for e in waiting)
            n_products = sum(e["products"] for e in waiting)
            if not n_events and not n_products:
                return None
            oldest = min(e["at"] for e in waiting)
            due = force or n_events >= self.cfg.publish_every or time.time() - oldest >= self.cfg.publish_interval_s
            if not due:
                return None
            last = waiting[-1]["batch_id"]
            events = self.log.read_events(through, last)
            products = self.log.read_products(through, last)
            n_pub = len(self.published) + 1
            refit = bool(self.cfg.refit_every) and n_pub % self.cfg.refit_every == 0
            done = fold_in(self.root, events, products, through_batch=last, refit=refit, spark=self.spark,
                           keep_versions=self.cfg.keep_versions)
            self.published.append(done.info)
            return done.info


def source_frame(spark, cfg: StreamConfig):
    """The streaming DataFrame of raw records: a ``value`` string column (and ``timestamp_ms`` from Kafka)."""
    from pyspark.sql import functions as F

    if cfg.source == "dir":
        if not cfg.path:
            raise InputError("stream --source dir needs --path DIR (a folder that JSON-lines files are moved into)")
        Path(cfg.path).mkdir(parents=True, exist_ok=True)
        return spark.readStream.format("text").option("maxFilesPerTrigger", cfg.max_files).load(str(cfg.path))
    if cfg.source != "kafka":
        raise InputError(f"unknown --source {cfg.source!r}: use dir or kafka")
    if not cfg.bootstrap:
        raise InputError("stream --source kafka needs --bootstrap HOST:PORT")
    if cfg.kafka_source == "builtin":
        return (spark.readStream.format("kafka").option("kafka.bootstrap.servers", cfg.bootstrap)
                .option("subscribe", cfg.topic).option("startingOffsets", "earliest")
                .option("maxOffsetsPerTrigger", cfg.max_records).load()
                .select(F.col("value").cast("string").alias("value"),
                        (F.unix_millis(F.col("timestamp"))).alias("timestamp_ms")))
    from .kafka_source import NAME, partitions, register

    partitions(cfg.bootstrap, cfg.topic)  # a missing topic or broker: one clear error now, not a stack trace later
    register(spark)
    return (spark.readStream.format(NAME).option("bootstrap", cfg.bootstrap).option("topic", cfg.topic)
            .option("maxRecordsPerBatch", cfg.max_records).load())


def run_stream(cfg: StreamConfig, spark=None) -> StreamJob:
    """Run until stopped (Ctrl-C), or until ``until_idle_s`` passes with no new records; returns the job."""
    from .session import make_spark

    fmt.resolve(cfg.bundle)  # there must be a bundle to fold into
    if spark is None:
        spark = make_spark(master=cfg.master, driver_memory=cfg.driver_memory, app_name="cartwise-stream")
    job = StreamJob(cfg, spark)
    job.log.folder.mkdir(parents=True, exist_ok=True)
    query = (source_frame(spark, cfg).writeStream.foreachBatch(job.process)
             .option("checkpointLocation", str(job.log.checkpoint))
             .trigger(processingTime=f"{max(cfg.trigger_s, 0.1)} seconds").start())
    log.info("stream: reading %s into %s (state %s); publishing every %d events or %.0fs", cfg.source,
             cfg.bundle, job.log.folder, cfg.publish_every, cfg.publish_interval_s)
    polled_at = None  # when the source was first seen polled (a batch, or a progress report): the idle clock
    try:  # never runs while the query is still starting, which can take longer than --until-idle
        while query.isActive:
            query.awaitTermination(0.5)
            job.maybe_publish()  # the interval also passes while no batch comes
            if polled_at is None and (job.batches_seen or query.lastProgress is not None):
                polled_at = time.time()
            if (cfg.until_idle_s is not None and polled_at is not None and not job.in_batch
                    and time.time() - max(polled_at, job.last_data) >= cfg.until_idle_s):
                break
        if query.exception() is not None:
            raise InputError(f"the stream stopped: {query.exception()}")
    except KeyboardInterrupt:
        log.info("stream: stopping")
    finally:
        query.stop()
    job.maybe_publish(force=True)
    return job
