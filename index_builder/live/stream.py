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
4. publishes a new bundle version (:mod:`index_builder.live.foldin`) once ``--publish-every`` events are pending
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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from index_builder.core import bundle as fmt
from index_builder.core.constants import (
    CATEGORY,
    CLUSTER,
    DESCRIPTION,
    EVENT_COLUMNS,
    EVENT_ID,
    EVENT_TYPE,
    EVENT_TYPES,
    POPULARITY,
    PRICE,
    PRODUCT_COLUMNS,
    PRODUCT_ID,
    REJECT_REASON,
    ROW_ID,
    TITLE,
    TS,
    USER_ID,
    VALUE,
)
from index_builder.core.errors import InputError
from index_builder.core.flags import flag
from index_builder.stages import rules
from index_builder.stages.session import DEFAULT_MASTER

log = logging.getLogger(__name__)

RAW = "raw"
FIELDS = (USER_ID, PRODUCT_ID, EVENT_TYPE, VALUE, TS, EVENT_ID, TITLE, DESCRIPTION, CATEGORY, PRICE)
GAP = "gap"  # a row the Kafka reader adds where offsets it was at had been removed (see kafka_source)
CRASH_ENV = "CARTWISE_STREAM_CRASH_AFTER_BATCH"  # tests: die after writing this batch, before its commit
FAIL_ENV = "CARTWISE_STREAM_FAIL_BATCH"  # tests: this batch fails as no rule foresaw (it is dead-lettered whole)
BATCH_FILE = re.compile(r"batch-(\d+)\.")


@dataclass
class StreamConfig:
    """A stream job's knobs; each field with a flag is one of ``python -m index_builder stream``'s
    (:mod:`index_builder.core.flags`): its default and help are written here only."""

    bundle: str = flag(help="bundle root to publish new versions into", required=True)
    source: str = flag("kafka", "where the events come from", choices=("kafka", "dir"))
    path: str | None = flag(None, "--source dir: folder that JSON-lines files are moved into")
    bootstrap: str | None = flag(None, "--source kafka: the brokers", metavar="HOST:PORT")
    topic: str = flag("events", "Kafka topic")
    kafka_source: str = flag("python", "python: PySpark's Python Data Source API + confluent-kafka (no jar); "
                             "builtin: Spark's format('kafka') (needs the spark-sql-kafka jar on the cluster)",
                             choices=("python", "builtin"))
    state: str | None = flag(None, "checkpoint, event log and dead letters (default BUNDLE/stream)")
    trigger_s: float = flag(1.0, "micro-batch interval, seconds", name="--trigger-seconds")
    max_records: int = flag(100_000, "records per micro-batch (Kafka); a batch has a fixed cost of ~2 s of Spark "
                            "planning whatever its size, so a backlog reads faster in big ones")
    max_files: int = 100  # per micro-batch (folder)
    publish_every: int = flag(1000, "publish after this many new events")
    publish_interval_s: float = flag(10.0, "...or when the oldest unpublished event is this many seconds old",
                                     name="--publish-interval")
    refit_every: int = flag(0, "a full ALS + EASE refit every N publishes (0: fold-ins only)")
    keep_versions: int = flag(5, "bundle versions kept (older ones are deleted)")
    until_idle_s: float | None = flag(None, "stop after this long without new records (default: run until Ctrl-C)",
                                      name="--until-idle", type=float, metavar="SECONDS")
    event_type: str = flag("purchase", "event_type of events that carry none", choices=EVENT_TYPES)
    oldest_event: str = rules.oldest_event_flag()
    future_hours: float = rules.future_hours_flag()
    db: str | None = flag(None, "also store the events in this database (SQLAlchemy URL)", metavar="URL")
    master: str = flag(DEFAULT_MASTER, "Spark master: local[N] or spark://host:7077")
    driver_memory: str = flag("2g", "Spark driver memory")


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _describe(exc: BaseException) -> str:
    """One line about an error (the first line of its message), for the ledger and the dead letters."""
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class EventLog:
    """The stream's state folder: event log, product log, dead letters and the batch ledger.

    A batch's files are named after its id, so a replayed batch replaces what an earlier attempt wrote; a
    quarantined batch (its events could not be folded into a bundle) has its events and products moved to
    the dead letters, so a record is in exactly one place.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.events = self.folder / "events"
        self.products = self.folder / "products"
        self.dead = self.folder / "dead_letter"
        self.ledger = self.folder / "batches"
        self.checkpoint = self.folder / "checkpoint"

    def _batch_files(self, batch_id: int) -> list[Path]:
        name = f"batch-{batch_id:09d}"
        return [*self.events.glob(f"date=*/{name}.parquet"), *self.products.glob(f"{name}.parquet"),
                *self.dead.glob(f"{name}.jsonl")]

    def write_batch(self, batch_id: int, events: pd.DataFrame, products: pd.DataFrame, dead: pd.DataFrame,
                    started: float | None = None, **extra: Any) -> dict:
        name = f"batch-{batch_id:09d}"
        for old in self._batch_files(batch_id):  # a replayed batch: its files are rewritten, not added to
            old.unlink()
        if len(events):
            days = pd.to_datetime(events[TS]).dt.strftime("%Y-%m-%d").fillna("none")
            for day, part in events.groupby(days, sort=True):
                _atomic_write(self.events / f"date={day}" / f"{name}.parquet", lambda p, d=part: d.to_parquet(p, index=False))
        if len(products):
            _atomic_write(self.products / f"{name}.parquet", lambda p: products.to_parquet(p, index=False))
        if len(dead):
            self._write_dead(name, dead)
        entry = {"batch_id": batch_id, "events": int(len(events)), "products": int(len(products)),
                 "dead_letters": int(len(dead)), "at": time.time(), "started": started,
                 "reasons": _reasons(dead), **extra}
        self.write_entry(entry)
        return entry

    def _write_dead(self, name: str, dead: pd.DataFrame) -> None:
        _atomic_write(self.dead / f"{name}.jsonl",
                      lambda p: dead.to_json(p, orient="records", lines=True, date_format="iso", force_ascii=False))

    def write_entry(self, entry: dict) -> None:
        _atomic_write(self.ledger / f"batch-{entry['batch_id']:09d}.json", lambda p: p.write_text(json.dumps(entry)))

    def quarantine(self, entry: dict, error: str) -> dict:
        """Move a batch's events and products to its dead letters (reason ``fold_in_failed`` and the error)."""
        batch_id = entry["batch_id"]
        name = f"batch-{batch_id:09d}"
        moved = []
        for kind, files in (("event", self.events.glob(f"date=*/{name}.parquet")),
                            ("product", self.products.glob(f"{name}.parquet"))):
            for f in sorted(files):
                part = pd.read_parquet(f)
                part = part.drop(columns=["batch_id"], errors="ignore")
                raw = [json.dumps({k: (None if pd.isna(v) else v) for k, v in r.items()}, default=str, ensure_ascii=False)
                       for r in part.to_dict("records")]
                moved.append(pd.DataFrame({RAW: raw, REJECT_REASON: rules.FOLD_IN_FAILED, "error": error, "kind": kind}))
        dead = [d for d in (self.read_dead_letters(batch_id), *moved) if len(d)]
        if moved:
            self._write_dead(name, pd.concat(dead, ignore_index=True).assign(batch_id=batch_id))
        for f in [*self.events.glob(f"date=*/{name}.parquet"), *self.products.glob(f"{name}.parquet")]:
            f.unlink()
        done = {**entry, "events": 0, "products": 0, "dead_letters": int(sum(len(d) for d in dead)),
                "quarantined": error, "reasons": _reasons(pd.concat(dead, ignore_index=True)) if dead else {}}
        self.write_entry(done)
        return done

    def entries(self) -> list[dict]:
        return sorted((json.loads(p.read_text()) for p in self.ledger.glob("batch-*.json")), key=lambda e: e["batch_id"])

    def _files(self, folder: Path, pattern: str, after: int, through: int) -> list[Path]:
        out = []
        for p in folder.glob(pattern):
            b = int(BATCH_FILE.search(p.name).group(1))
            if after < b <= through:
                out.append(p)
        return sorted(out, key=lambda p: (p.name, p.parent.name))  # batch order, then day

    def read_events(self, after: int = -1, through: int = 1 << 62) -> pd.DataFrame:
        files = self._files(self.events, "date=*/batch-*.parquet", after, through)
        if not files:
            return pd.DataFrame(columns=[*EVENT_COLUMNS, "batch_id"])
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    def read_products(self, after: int = -1, through: int = 1 << 62) -> pd.DataFrame:
        files = self._files(self.products, "batch-*.parquet", after, through)
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()

    def read_dead_letters(self, batch_id: int | None = None) -> pd.DataFrame:
        pattern = f"batch-{batch_id:09d}.jsonl" if batch_id is not None else "batch-*.jsonl"
        files = sorted(self.dead.glob(pattern))
        return (pd.concat([pd.read_json(f, lines=True, dtype=False) for f in files], ignore_index=True)
                if files else pd.DataFrame())

    def event_ids(self) -> dict[str, int]:
        """Every ``event_id`` in the event log and the batch that holds it (events without one are not
        de-duplicated)."""
        import pyarrow.parquet as pq

        ids: dict[str, int] = {}
        for f in self.events.glob("date=*/batch-*.parquet"):
            if EVENT_ID in pq.read_schema(f).names:
                batch = int(BATCH_FILE.search(f.name).group(1))
                col = pd.read_parquet(f, columns=[EVENT_ID])[EVENT_ID]
                ids.update(dict.fromkeys(col.dropna().astype(str), batch))
        return ids


def _reasons(dead: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in dead[REJECT_REASON].value_counts().items()} if len(dead) else {}


class StreamJob:
    """The state of one running stream: what is known, what is pending, when to publish."""

    def __init__(self, cfg: StreamConfig, spark: Any):
        import pyarrow.parquet as pq

        self.cfg = cfg
        self.spark = spark
        self.root = Path(cfg.bundle)
        self.log = EventLog(Path(cfg.state) if cfg.state else self.root / "stream")
        self.lock = threading.Lock()
        self.last_data = time.time()
        self.batches_seen = 0
        self.in_batch = False
        self.published: list[dict] = []
        self.publish_errors: list[str] = []
        self.progress: list[Any] = []  # Spark's progress reports of the query's last batches
        self._known: set[str] | None = None
        self._known_df = None
        # the catalog's own extra columns (brand, colour...): a product record may carry them too
        columns = pq.read_schema(fmt.resolve(self.root) / fmt.PRODUCTS).names
        self.attributes = [c for c in columns if c not in (*PRODUCT_COLUMNS, POPULARITY, CLUSTER, *FIELDS, RAW)
                           and not c.startswith("_")]
        # the ledger, read from disk once and then kept as batches are written: the driver's loop asks what is
        # pending twice a second, and a long-running stream's ledger holds thousands of files
        self._ledger: dict[int, dict] = {e["batch_id"]: e for e in self.log.entries()}
        self._event_ids = self.log.event_ids()
        self.db = None
        if cfg.db:
            from index_builder.storage.db import Database

            self.db = Database(cfg.db)
            self.db.create()

    def bounds(self) -> rules.Bounds:
        return rules.Bounds(oldest_event=self.cfg.oldest_event, future_hours=self.cfg.future_hours)

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

    def _forget_known(self) -> None:
        if self._known_df is not None:
            self._known_df.unpersist()
        self._known, self._known_df = None, None

    # -- one micro-batch ------------------------------------------------------------------------------
    def process(self, df, batch_id: int) -> None:
        """One micro-batch. A batch that fails for a reason no rule foresaw is dead-lettered whole, with the
        error, and the stream goes on (only a failure to write even that stops it: Spark then replays the
        batch on restart)."""
        t0 = time.perf_counter()
        self.in_batch = True
        try:
            try:
                self._process(df, batch_id, t0)
            except Exception as exc:  # noqa: BLE001 - isolated to this batch, kept with its error
                log.exception("stream: batch %d failed; its records go to the dead letters whole", batch_id)
                self._fail_batch(df, batch_id, _describe(exc))
        finally:
            self.in_batch = False
            self.last_data = time.time()
        self.maybe_publish()

    def _fail_batch(self, df, batch_id: int, error: str) -> None:
        from pyspark.sql import functions as F

        raw = df.select(F.col("value").cast("string").alias(RAW)).toPandas()
        dead = raw.assign(**{REJECT_REASON: rules.BATCH_FAILED, "error": error, "batch_id": batch_id})
        empty = pd.DataFrame()
        with self.lock:
            entry = self.log.write_batch(batch_id, empty, empty, dead, started=time.time(), failed=error)
            if self.db is not None:
                self._db_write(entry, pd.DataFrame(columns=list(EVENT_COLUMNS)))
            self._ledger[batch_id] = entry
            self.batches_seen += 1

    def _validate(self, df, batch_id: int):
        """Parse and check a batch's raw records in one Spark job: (events, products, dead letters, gaps)."""
        from pyspark.sql import functions as F

        from index_builder.stages.transforms import blank, validate_events, validate_products

        bounds = self.bounds()
        fields = (*FIELDS, *self.attributes)
        schema = ", ".join(f"`{f}` string" for f in fields) + ", `_corrupt` string"
        default_ts = (F.timestamp_millis(F.col("timestamp_ms")).cast("string") if "timestamp_ms" in df.columns
                      else F.lit(pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M:%S.%f")))
        gap = F.col(GAP) if GAP in df.columns else F.lit(None).cast("string")
        raw = F.regexp_replace(F.col("value").cast("string"), "^\ufeff", "")  # a byte-order mark is not data
        parsed = df.select(raw.alias(RAW), default_ts.alias("_default_ts"), gap.alias(GAP))
        too_big = F.length(RAW) > bounds.max_record_chars
        record_reason = (F.when(F.col(GAP).isNotNull(), F.lit(None))
                         .when(F.col(RAW).isNull() | F.col(RAW).rlike(r"^\s*$"), rules.EMPTY_RECORD)
                         .when(too_big, rules.RECORD_TOO_LARGE)
                         .when(F.col(RAW).contains("\ufffd"), rules.INVALID_ENCODING))
        parsed = parsed.withColumn("_record", record_reason).withColumn(
            "_j", F.when(F.col("_record").isNull() & F.col(GAP).isNull(),
                         F.from_json(RAW, schema, {"columnNameOfCorruptRecord": "_corrupt", "mode": "PERMISSIVE"})))
        parsed = parsed.withColumn("_record", F.coalesce(F.col("_record"), F.when(
            F.col(GAP).isNull() & (F.col("_j").isNull() | F.col("_j._corrupt").isNotNull()), F.lit(rules.MALFORMED_JSON))))
        parsed = parsed.withColumn(ROW_ID, F.monotonically_increasing_id()).cache()
        try:
            dead_records = parsed.filter(F.col("_record").isNotNull()).select(ROW_ID, RAW, F.col("_record").alias(REJECT_REASON))
            gaps = parsed.filter(F.col(GAP).isNotNull()).select(ROW_ID, GAP)
            records = (parsed.filter(F.col("_record").isNull() & F.col(GAP).isNull())
                       .select(ROW_ID, RAW, "_default_ts", *[F.col(f"_j.`{f}`").alias(f) for f in fields]))
            is_product = blank(F.col(USER_ID)) & ~blank(F.col(TITLE))
            products_in = records.filter(is_product).select(ROW_ID, RAW, PRODUCT_ID, TITLE, DESCRIPTION, CATEGORY, PRICE,
                                                            *self.attributes)
            good_products, product_rejects = validate_products(products_in, bounds=bounds, dedupe=False, keep=(ROW_ID, RAW))
            events_in = records.filter(~is_product).select(
                ROW_ID, RAW, USER_ID, PRODUCT_ID,
                F.coalesce(F.when(~blank(F.col(EVENT_TYPE)), F.col(EVENT_TYPE)), F.lit(self.cfg.event_type)).alias(EVENT_TYPE),
                VALUE, F.coalesce(F.when(~blank(F.col(TS)), F.col(TS)), F.col("_default_ts")).alias(TS), EVENT_ID)
            known = self.known_products().unionByName(good_products.select(PRODUCT_ID))  # validate_events de-duplicates
            good_events, event_rejects = validate_events(events_in, known, bounds=bounds, keep=(ROW_ID, RAW, EVENT_ID))
            kind = "_kind"
            parts = [
                good_events.withColumn(kind, F.lit("event")),
                good_products.select(ROW_ID, PRODUCT_ID, TITLE, DESCRIPTION, CATEGORY,
                                     F.col(PRICE).alias("_price"), *self.attributes).withColumn(kind, F.lit("product")),
                dead_records.withColumn(kind, F.lit("dead")),
                event_rejects.select(ROW_ID, RAW, REJECT_REASON).withColumn(kind, F.lit("dead")),
                product_rejects.select(ROW_ID, RAW, REJECT_REASON).withColumn(kind, F.lit("dead")),
                gaps.withColumn(kind, F.lit("gap")),
            ]
            combined = parts[0]
            for part in parts[1:]:
                combined = combined.unionByName(part, allowMissingColumns=True)
            out = combined.toPandas().sort_values(ROW_ID, kind="stable")
        finally:
            parsed.unpersist()
        events = out[out[kind] == "event"][[*EVENT_COLUMNS, EVENT_ID, RAW]].reset_index(drop=True)
        events[VALUE] = events[VALUE].astype(float)
        products = (out[out[kind] == "product"].rename(columns={"_price": PRICE})
                    [[PRODUCT_ID, TITLE, DESCRIPTION, CATEGORY, PRICE, *self.attributes]].reset_index(drop=True))
        products[PRICE] = products[PRICE].astype(float)
        dead = out[out[kind] == "dead"][[RAW, REJECT_REASON]].reset_index(drop=True)
        gap_list = [json.loads(g) for g in out.loc[out[kind] == "gap", GAP]]
        # an event_id seen before (in this batch, or logged by an earlier one) is a duplicate delivery; a replayed
        # batch finds its own first attempt's ids in the log: those are not
        ids = events[EVENT_ID]
        logged = ids.astype(str).map(self._event_ids)
        repeat = ids.notna() & (ids.duplicated() | (logged.notna() & (logged != batch_id)))
        if repeat.any():
            dead = pd.concat([dead, pd.DataFrame({RAW: events.loc[repeat, RAW], REJECT_REASON: rules.DUPLICATE_EVENT_ID})],
                             ignore_index=True)
            events = events[~repeat].reset_index(drop=True)
        return events.drop(columns=[RAW]), products, dead, gap_list

    def _process(self, df, batch_id: int, t0: float) -> None:
        started = time.time()
        if os.environ.get(FAIL_ENV) == str(batch_id):  # fault injection: a failure no rule foresaw
            raise RuntimeError(f"{FAIL_ENV}={batch_id}: an injected failure")
        events_pdf, products_pdf, dead, gaps = self._validate(df, batch_id)
        validated = time.perf_counter()
        events_pdf["batch_id"] = batch_id
        dead["batch_id"] = batch_id
        for g in gaps:
            log.warning("stream: Kafka partition %s: offsets %s..%s were gone when read (%s records lost: retention "
                        "or a recreated topic); resumed at %s", g["partition"], g["expected"], g["resumed_at"] - 1,
                        g["lost"], g["resumed_at"])
        with self.lock:
            entry = self.log.write_batch(batch_id, events_pdf, products_pdf, dead, started=started,
                                         validate_s=round(validated - t0, 3),  # "at" - "started" - this: the writes
                                         **({"offset_gaps": gaps} if gaps else {}))
            if os.environ.get(CRASH_ENV) == str(batch_id):  # fault injection for the exactly-once test
                log.error("stream: %s=%s: exiting before Spark commits this batch", CRASH_ENV, batch_id)
                os._exit(3)
            self._ledger[batch_id] = entry
            if self.db is not None:
                self._db_write(entry, events_pdf)
            self._event_ids.update(dict.fromkeys(events_pdf[EVENT_ID].dropna().astype(str), batch_id))
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

    def _db_write(self, entry: dict, events: pd.DataFrame) -> None:
        """Mirror a batch into the server database; a failure is kept in the ledger and retried with the next
        batch (the event log stays the source of truth, and a database outage never stops the stream)."""
        pending = [e for e in self._ledger.values() if e.get("db_error") and e["batch_id"] != entry["batch_id"]]
        for old in sorted(pending, key=lambda e: e["batch_id"]):
            try:
                self.db.replace_batch(old["batch_id"], self.log.read_events(old["batch_id"] - 1, old["batch_id"]))
            except Exception as exc:  # noqa: BLE001 - still down: try again later
                log.warning("stream: the database is still failing (%s); batch %d waits", _describe(exc), old["batch_id"])
                break
            fixed = {k: v for k, v in old.items() if k != "db_error"}
            self.log.write_entry(fixed)
            self._ledger[old["batch_id"]] = fixed
        try:
            self.db.replace_batch(entry["batch_id"], events)
        except Exception as exc:  # noqa: BLE001
            entry["db_error"] = _describe(exc)
            self.log.write_entry(entry)
            log.error("stream: batch %d is in the event log but not in the database (%s); retried with the next batch",
                      entry["batch_id"], entry["db_error"])

    # -- publishing -----------------------------------------------------------------------------------
    def pending(self) -> tuple[list[dict], int]:
        through = self.through_batch()
        waiting = [self._ledger[b] for b in sorted(self._ledger) if b > through]
        return waiting, through

    def maybe_publish(self, force: bool = False) -> dict | None:
        """Publish when due. A fold-in that fails is retried batch by batch: a batch that cannot be folded in
        is quarantined (its records move to the dead letters with the error) and the others are published."""
        with self.lock:
            try:
                waiting, through = self.pending()
            except Exception as exc:  # noqa: BLE001 - the bundle root cannot be read now: try again later
                self._publish_error(f"cannot read the bundle root {self.root}: {_describe(exc)}")
                return None
            n_events = sum(e["events"] for e in waiting)
            n_products = sum(e["products"] for e in waiting)
            if not n_events and not n_products:
                return None
            oldest = min(e["at"] for e in waiting)
            due = force or n_events >= self.cfg.publish_every or time.time() - oldest >= self.cfg.publish_interval_s
            if not due:
                return None
            try:
                return self._publish(through, waiting[-1]["batch_id"])
            except Exception as exc:  # noqa: BLE001
                error = _describe(exc)
                log.exception("stream: publishing batches %d..%d failed; folding them in one by one",
                              waiting[0]["batch_id"], waiting[-1]["batch_id"])
            done = None
            for entry in waiting:
                if not entry["events"] and not entry["products"]:
                    continue
                try:
                    done = self._publish(self.through_batch(), entry["batch_id"])
                except Exception as exc:  # noqa: BLE001 - this batch is the one (or one of those) that fails
                    error = _describe(exc)
                    self._ledger[entry["batch_id"]] = self.log.quarantine(entry, error)
                    self._event_ids = self.log.event_ids()
                    self._forget_known()
                    log.error("stream: batch %d could not be folded in (%s): quarantined in the dead letters",
                              entry["batch_id"], error)
            return done

    def _publish(self, through: int, last: int) -> dict:
        from index_builder.live.foldin import fold_in

        events = self.log.read_events(through, last)
        products = self.log.read_products(through, last)
        n_pub = len(self.published) + 1
        refit = bool(self.cfg.refit_every) and n_pub % self.cfg.refit_every == 0
        done = fold_in(self.root, events, products, through_batch=last, refit=refit, spark=self.spark,
                       keep_versions=self.cfg.keep_versions, feed=self.feed(through, last))
        self.published.append(done.info)
        return done.info

    def feed(self, through: int, last: int) -> dict:
        """What a publish of batches ``through+1..last`` adds to the manifest: when the newest of their events
        reached the stream, and every dead letter so far by reason (the Insights tab's live panel shows both)."""
        arrived = [e["at"] for b, e in self._ledger.items() if through < b <= last and e["events"]]
        dead = Counter()
        for e in self._ledger.values():
            dead.update(e.get("reasons") or {})
        return {"arrived_at": round(max(arrived), 3) if arrived else None,
                "dead_letters": {str(k): int(v) for k, v in sorted(dead.items(), key=lambda kv: (-kv[1], kv[0]))}}

    def _publish_error(self, error: str) -> None:
        if not self.publish_errors or self.publish_errors[-1] != error:
            log.error("stream: %s", error)
        self.publish_errors.append(error)
        del self.publish_errors[:-100]


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
    from index_builder.live.kafka_source import NAME, partitions, register

    partitions(cfg.bootstrap, cfg.topic)  # a missing topic or broker: one clear error now, not a stack trace later
    register(spark)
    return (spark.readStream.format(NAME).option("bootstrap", cfg.bootstrap).option("topic", cfg.topic)
            .option("maxRecordsPerBatch", cfg.max_records).load())


def run_stream(cfg: StreamConfig, spark=None) -> StreamJob:
    """Run until stopped (Ctrl-C), or until ``until_idle_s`` passes with no new records; returns the job."""
    from index_builder.stages.session import make_spark

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
        job.progress = [p for p in query.recentProgress if p]  # Spark's per-batch timings (benchmarks read them)
        query.stop()
    job.maybe_publish(force=True)
    return job
