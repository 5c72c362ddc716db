"""Adapters: turn each supported input into canonical products and events (DESIGN.md schema).

Each adapter returns a :class:`Source`; the common validation in ``transforms`` runs afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pyspark.sql import Window
from pyspark.sql import functions as F

from index_builder.core.constants import (
    CATEGORY,
    DESCRIPTION,
    EVENT_REQUIRED,
    EVENT_TYPE,
    PRICE,
    PRODUCT_ID,
    PRODUCT_REQUIRED,
    REJECT_REASON,
    ROW_ID,
    TITLE,
    TS,
    USER_ID,
    VALUE,
)
from index_builder.core.errors import InputError
from index_builder.stages.readers import read_table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass
class Source:
    """Canonical frames from one input, plus rows the adapter itself could not use."""

    name: str
    products: DataFrame
    events: DataFrame | None
    files: list[str]
    rejects: dict[str, DataFrame] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    currency: str | None = None  # ISO code of the prices, when known
    defaults: dict[str, str] = field(default_factory=dict)  # column -> what was assumed for it (manifest, log)


def from_files(
    spark: SparkSession,
    products: str,
    events: str | None = None,
    *,
    mapping: dict[str, str] | None = None,
    encoding: str = "utf-8",
    name: str = "custom",
    event_type: str = "purchase",
) -> Source:
    """Generic adapter: a products file and an optional events file, columns renamed by ``mapping``.

    Most order exports have no event type: every row of such a file is an ``event_type`` event
    (``--event-type``, purchase by default), and a missing ``value`` counts 1; both are recorded.
    """
    prod = read_table(spark, products, mapping=mapping, required=PRODUCT_REQUIRED, encoding=encoding, role="products")
    ev = None
    defaults: dict[str, str] = {}
    if events:
        ev = read_table(spark, events, mapping=mapping, required=EVENT_REQUIRED, encoding=encoding, role="events")
        if EVENT_TYPE not in ev.columns:
            ev = ev.withColumn(EVENT_TYPE, F.lit(event_type))
            defaults[EVENT_TYPE] = f"no event type column in {events}: every row is a {event_type!r} (--event-type)"
        if VALUE not in ev.columns:
            defaults[VALUE] = f"no value column in {events}: every event counts 1"
        if TS not in ev.columns:
            defaults[TS] = undated_note(events, ev.columns)
    return Source(name=name, products=prod, events=ev, files=[str(p) for p in (products, events) if p],
                  defaults=defaults)


_TIME_LIKE = re.compile(r"time|date|day|when|^ts$|_ts$|^ts_|_at$", re.IGNORECASE)


def undated_note(events: str, columns: list[str]) -> str:
    """What an events file without a ``ts`` column means for the build, and the mapping of a column of it whose
    name looks like a time (it is not read under another name)."""
    note = (f"no {TS} column in {events}: the events are undated (the evaluation has no time split, and recency "
            "weighs nothing)")
    times = [c for c in columns if _TIME_LIKE.search(c) and c != ROW_ID]
    return note + (f"; if {times[0]!r} holds the time, map it: --map {TS}={times[0]}" if times else "")


# UCI stock codes of real products start with five digits (85123A, 22423); the rest are
# postage, fees and manual adjustments: POST, DOT, M, BANK CHARGES, C2, PADS, CRUK, AMAZONFEE, gift_...
UCI_PRODUCT_CODE = r"^[0-9]{5}"
_UCI_RENAMES = {"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"}


def online_retail(spark: SparkSession, path: str | Path) -> Source:
    """UCI Online Retail (I or II) adapter; see :func:`clean_online_retail` for the rules."""
    raw = read_table(spark, str(path), role="UCI Online Retail")
    for old, new in _UCI_RENAMES.items():
        if old in raw.columns and new not in raw.columns:
            raw = raw.withColumnRenamed(old, new)
    products, events, rejects, counts = clean_online_retail(raw)
    return Source(
        name="online-retail", products=products, events=events, files=[str(path)],
        rejects={"online_retail_lines": rejects}, counts=counts,
    )


def clean_online_retail(raw: DataFrame) -> tuple[DataFrame, DataFrame, DataFrame, dict[str, int]]:
    """UCI invoice lines -> (products, events, rejected lines, counts).

    Rules:
    - lines whose StockCode is not a product (does not start with 5 digits) are rejected
      (``non_product_stock_code``); they feed neither catalog nor events;
    - lines of a normal invoice with quantity <= 0 are stock adjustments: rejected (``non_positive_quantity``);
    - invoices starting with "C" are cancellations: ``return`` events of |quantity|;
    - other lines are ``purchase`` events of their quantity; lines without CustomerID are not user
      events but still feed the catalog (counted as ``anonymous_lines``);
    - one title per StockCode: its most frequent description on priced sale lines (ties: alphabetical);
    - price: the median unit price over priced sale lines.
    """
    code = F.upper(F.trim(F.col("StockCode").cast("string")))
    invoice = F.trim(F.col("InvoiceNo").cast("string"))
    qty = F.col("Quantity").cast("double")
    price = F.col("UnitPrice").cast("double")
    desc = F.trim(F.col("Description").cast("string"))
    cust = F.col("CustomerID")
    is_return = invoice.startswith("C")
    lines = raw.select(
        "*",
        code.alias("_code"),
        is_return.alias("_return"),
        F.when(~F.lower(desc).isin("nan", "", "?") & desc.isNotNull(), desc).alias("_desc"),
        qty.alias("_qty"),
        price.alias("_price"),
        F.when(cust.isNotNull() & ~F.isnan(cust.cast("double")), cust.cast("double").cast("long").cast("string")).alias("_cust"),
    ).withColumn(
        REJECT_REASON,
        F.when(~F.col("_code").rlike(UCI_PRODUCT_CODE) | F.col("_code").isNull(), "non_product_stock_code")
        .when(F.col("_qty").isNull(), "unparseable_quantity")
        .when(~F.col("_return") & (F.col("_qty") <= 0), "non_positive_quantity"),
    )
    # Not cached: each reader below takes only its columns from the file again (column pruning). Caching every
    # line (all raw columns plus the derived ones) cost more than the re-reads it saved; validate caches what
    # it reads twice (its checked events and products).
    rejects = lines.filter(F.col(REJECT_REASON).isNotNull()).select(
        F.col(ROW_ID), *[F.col(f"`{c}`").cast("string").alias(c) for c in raw.columns if c != ROW_ID], REJECT_REASON
    )
    good = lines.filter(F.col(REJECT_REASON).isNull())
    sale = ~F.col("_return") & (F.col("_price") > 0)

    titles = (
        good.filter(F.col("_desc").isNotNull())
        .groupBy("_code", "_desc")
        .agg(F.sum(sale.cast("int")).alias("_sales"), F.count(F.lit(1)).alias("_n"))
        .withColumn(
            "_rank",
            F.row_number().over(Window.partitionBy("_code").orderBy(F.desc("_sales"), F.desc("_n"), F.asc("_desc"))),
        )
        .filter(F.col("_rank") == 1)
        .select(F.col("_code").alias(PRODUCT_ID), F.col("_desc").alias(TITLE))
    )
    prices = good.filter(sale).groupBy(F.col("_code").alias(PRODUCT_ID)).agg(F.median("_price").alias(PRICE))
    products = (
        good.select(F.col("_code").alias(PRODUCT_ID))
        .distinct()
        .join(titles, PRODUCT_ID, "left")
        .join(prices, PRODUCT_ID, "left")
        .select(
            PRODUCT_ID, TITLE, F.lit("").alias(DESCRIPTION), F.lit("").alias(CATEGORY), PRICE,
            F.xxhash64(PRODUCT_ID).alias(ROW_ID),
        )
    )
    events = good.filter(F.col("_cust").isNotNull()).select(
        F.col("_cust").alias(USER_ID),
        F.col("_code").alias(PRODUCT_ID),
        F.when(F.col("_return"), "return").otherwise("purchase").alias(EVENT_TYPE),
        F.abs(F.col("_qty")).alias(VALUE),
        F.col("InvoiceDate").alias(TS),
        F.col(ROW_ID),
    )
    # both counts in one pass over the file (one Spark job)
    tally = lines.agg(
        F.count(F.lit(1)).alias("lines"),
        F.count(F.when(F.col(REJECT_REASON).isNull() & F.col("_cust").isNull(), 1)).alias("anonymous_lines"),
    ).first()
    counts = {"lines": int(tally["lines"]), "anonymous_lines": int(tally["anonymous_lines"])}
    return products, events, rejects, counts


def datacamp_products(spark: SparkSession, path: str | Path) -> Source:
    """The tutorials' 2,000-product catalog: product_id, title, description; no events."""
    return from_files(spark, str(path), None, name="datacamp-products")


def movielens(spark: SparkSession, path: str | Path) -> Source:
    """MovieLens 100K (GroupLens): ``u.item`` -> products (title with year; the genres, comma-joined, as the
    category: product text = title + genres), ``u.data`` -> one ``rating`` event per row, the stars as its
    value and unix seconds as its time. The files are read as they ship (no header; Latin-1 titles)."""
    folder = Path(path).parent
    genres = [line.split("|")[0] for line in (folder / "u.genre").read_text(encoding="latin-1").splitlines()
              if line.strip()]
    items = spark.read.option("sep", "|").option("encoding", "ISO-8859-1").option("quote", "\u0000").csv(
        str(folder / "u.item"))
    if len(items.columns) < 5 + len(genres):
        raise InputError(f"{folder / 'u.item'}: {len(items.columns)} '|'-separated fields, expected 5 + {len(genres)} "
                         "genre flags (id|title|release|video release|IMDb URL|flags...): is it MovieLens 100K's u.item?")
    flags = [F.when(F.col(f"_c{5 + i}") == "1", F.lit(g)) for i, g in enumerate(genres)]
    products = items.select(F.col("_c0").alias(PRODUCT_ID), F.col("_c1").alias(TITLE),
                            F.concat_ws(", ", *flags).alias(CATEGORY))
    # read as lines: a line without exactly 4 tab-separated fields is rejected with its text (the CSV reader
    # dropped a 5th field and padded a missing one without a word)
    lines = spark.read.text(str(path)).withColumn(ROW_ID, F.monotonically_increasing_id()) \
        .withColumn("_f", F.split(F.col("value"), "\t"))
    fields = F.size(F.col("_f")) == 4
    if lines.filter(fields).limit(1).count() == 0:
        raise InputError(f"{path}: no line has 4 tab-separated fields (user id, item id, rating, unix time): "
                         "is it MovieLens 100K's u.data?")
    events = lines.filter(fields).select(
        ROW_ID, *[F.col("_f")[i].alias(c) for i, c in enumerate((USER_ID, PRODUCT_ID, VALUE, TS))]
    ).withColumn(EVENT_TYPE, F.lit("rating"))
    malformed = lines.filter(~fields).select(ROW_ID, F.col("value").alias("line"),
                                             F.lit("wrong_field_count").alias(REJECT_REASON))
    return Source(
        name="movielens-100k", files=[str(folder / "u.item"), str(path)],
        products=products.withColumn(ROW_ID, F.monotonically_increasing_id()), events=events,
        rejects={"movielens_lines": malformed},
        defaults={EVENT_TYPE: "MovieLens: every row of u.data is a 'rating' event, its stars the value"},
    )
