"""Pure DataFrame steps on tiny inline frames; whole frames are compared, not just counts."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from index_builder.core.constants import DEFAULT_EVENT_WEIGHTS, ROW_ID
from index_builder.stages.transforms import (
    aggregate_interactions,
    event_weights,
    product_text,
    sample_users,
    validate_events,
    validate_products,
    with_index,
)


def _products(spark, rows, cols="product_id string, title string, description string, price string, color string"):
    df = spark.createDataFrame(rows, cols)
    from pyspark.sql import functions as F

    return df.withColumn(ROW_ID, F.monotonically_increasing_id())


def _rows(df, *cols):
    rows = [tuple(r[c] for c in cols) for r in df.collect()]
    return sorted(rows, key=lambda row: tuple((v is None, str(v)) for v in row))


def test_validate_products_keeps_first_duplicate_and_names_reasons(spark):
    df = _products(spark, [
        ("A", "Red mug", "big", "£3.50", "red"),
        ("B", " ", "no title", "1", None),
        ("A", "Red mug again", "", "2", None),
        ("", "No id", "", "1", None),
        ("C", "Blue mug", None, "cheap", None),
        ("D", "Green mug", None, "-1", None),
        ("E", "Plain mug", None, None, None),
    ])
    good, rejects = validate_products(df)
    assert _rows(good, "product_id", "title", "description", "category", "price", "color") == [
        ("A", "Red mug", "big", "", 3.5, "red"),
        ("E", "Plain mug", "", "", None, None),
    ]
    assert _rows(rejects, "product_id", "title", "price", "reject_reason") == [
        ("", "No id", "1", "empty_product_id"),
        ("A", "Red mug again", "2", "duplicate_product_id"),
        ("B", " ", "1", "empty_title"),
        ("C", "Blue mug", "cheap", "unparseable_price"),
        ("D", "Green mug", "-1", "negative_price"),
    ]


def test_validate_events_types_values_and_unknown_products(spark):
    from pyspark.sql import functions as F

    products = spark.createDataFrame([("A",), ("B",)], "product_id string")
    events = spark.createDataFrame([
        (1.0, "A", "purchase", "2", "2011-01-02 10:00:00"),
        (2.0, "B", "AddToCart", None, None),
        (3.0, "Z", "view", "1", None),
        (None, "A", "view", "1", None),
        (4.0, "A", "teleport", "1", None),
        (5.0, "A", "rating", None, None),
        (6.0, "A", "view", "lots", None),
        (7.0, "A", "view", "1", "yesterday-ish"),
    ], "user_id double, product_id string, event_type string, value string, ts string")
    events = events.withColumn(ROW_ID, F.monotonically_increasing_id())
    good, rejects = validate_events(events, products)
    assert _rows(good, "user_id", "product_id", "event_type", "value", "ts") == [
        ("1", "A", "purchase", 2.0, dt.datetime(2011, 1, 2, 10, 0)),
        ("2", "B", "cart", 1.0, None),
    ]
    assert _rows(rejects, "user_id", "reject_reason") == [
        ("3.0", "unknown_product_id"),
        ("4.0", "unknown_event_type"),
        ("5.0", "missing_rating"),
        ("6.0", "unparseable_value"),
        ("7.0", "unparseable_timestamp"),
        (None, "empty_user_id"),
    ]


def test_product_text_skips_empty_parts(spark):
    df = spark.createDataFrame([("A", "Red mug", "", "kitchen"), ("B", "Lamp", "warm light", None)],
                               "product_id string, title string, description string, category string")
    assert _rows(product_text(df), "product_id", "text") == [("A", "Red mug kitchen"), ("B", "Lamp warm light")]


def test_event_weights_and_aggregation(spark):
    events = spark.createDataFrame([
        ("u", "A", "purchase", 3.0, None),
        ("u", "A", "return", 1.0, None),
        ("u", "B", "view", 1.0, None),
        ("u", "C", "rating", 4.0, None),
    ], "user_id string, product_id string, event_type string, value double, ts timestamp")
    agg = aggregate_interactions(event_weights(events, DEFAULT_EVENT_WEIGHTS))
    got = {r["product_id"]: (round(r["weight"], 6), r["n_events"], r["purchased"]) for r in agg.collect()}
    assert got == {
        "A": (round(5 * math.log1p(3) - 5 * math.log1p(1), 6), 2, True),
        "B": (round(1 * math.log1p(1), 6), 1, False),
        "C": (4.0, 1, False),
    }
    with pytest.raises(ValueError, match="miss"):
        event_weights(events, {"view": 1.0})
    # "already had": purchases and ratings by default (a rated film is not recommended again), views not
    had = {r["product_id"]: r["had"] for r in agg.collect()}
    assert had == {"A": True, "B": False, "C": True}
    with_views = aggregate_interactions(event_weights(events, DEFAULT_EVENT_WEIGHTS), ("purchase", "view"))
    assert {r["product_id"]: r["had"] for r in with_views.collect()} == {"A": True, "B": True, "C": False}


def test_sample_users_is_deterministic_and_keeps_all_their_events(spark):
    events = spark.createDataFrame([(f"u{i % 10}", f"p{i}") for i in range(50)], "user_id string, product_id string")
    a = sample_users(events, 3, seed=7)
    b = sample_users(events, 3, seed=7)
    assert _rows(a, "user_id", "product_id") == _rows(b, "user_id", "product_id")
    assert a.select("user_id").distinct().count() == 3
    assert a.count() == 15  # every user has 5 events, all kept


def test_with_index_is_dense_and_ordered(spark):
    df = spark.createDataFrame([("b",), ("c",), ("a",)], "product_id string")
    assert _rows(with_index(df, "product_id", "idx"), "product_id", "idx") == [("a", 0), ("b", 1), ("c", 2)]


# -- the bounds every record must meet (index_builder.stages.rules), shared by build and stream ---------------------
NOW = dt.datetime(2026, 12, 2, 12, 0)


def test_validate_events_bounds_every_field(spark):
    """Records that passed before and crashed a later stage (or skewed every shopper's answer) are rejected
    with their reason; the edge values inside the bounds pass."""
    from pyspark.sql import functions as F

    from index_builder.stages.rules import Bounds

    products = spark.createDataFrame([("A",), ("{3F2504E0-4F89}",)], "product_id string")
    rows = [
        ("ok-1", "A", "purchase", "80995", "2011-12-09 12:50:00"),  # UCI's largest line
        ("ok-2", "{3F2504E0-4F89}", "view", "1", "2026-12-03 06:00:00"),  # a GUID-style id; 18 h ahead
        ("ok-3", "A", "rating", "100", "1995-01-01 00:00:00"),
        ("future", "A", "purchase", "1", "9999-12-31T00:00:00Z"),
        ("far-future", "A", "purchase", "1", "2200-01-01"),
        ("tomorrow+", "A", "purchase", "1", "2026-12-03 13:00:00"),
        ("old", "A", "purchase", "1", "1970-01-01 00:00:00"),
        ("epoch-ms-2286", "A", "purchase", "1", "9999999999999"),
        ("inf", "A", "purchase", "1e400", None),
        ("inf-text", "A", "purchase", "Infinity", None),
        ("huge", "A", "purchase", "2e6", None),
        ("rating-huge", "A", "rating", "500", None),
        ("nul\x00byte", "A", "purchase", "1", None),
        ("u" * 192, "A", "purchase", "1", None),
        ('{"a": 1}', "A", "purchase", "1", None),
        ("nested-pid", "[1, 2]", "purchase", "1", None),
        ("nested-value", "A", "purchase", '{"n": 1}', None),
        ("bad\ufffdbytes", "A", "purchase", "1", None),
    ]
    events = spark.createDataFrame(rows, "user_id string, product_id string, event_type string, value string, ts string")
    events = events.withColumn(ROW_ID, F.monotonically_increasing_id())
    good, rejects = validate_events(events, products, bounds=Bounds(now=NOW))
    assert sorted(r["user_id"] for r in good.collect()) == ["ok-1", "ok-2", "ok-3"]
    assert dict(_rows(rejects, "user_id", "reject_reason")) == {
        "future": "timestamp_in_future", "far-future": "timestamp_in_future", "tomorrow+": "timestamp_in_future",
        "old": "timestamp_too_old", "epoch-ms-2286": "timestamp_in_future",
        "inf": "value_out_of_range", "inf-text": "value_out_of_range", "huge": "value_out_of_range",
        "rating-huge": "value_out_of_range", "nul\x00byte": "invalid_id", "u" * 192: "id_too_long",
        '{"a": 1}': "nested_value", "nested-pid": "nested_value", "nested-value": "nested_value",
        "bad\ufffdbytes": "invalid_id",
    }


def test_numeric_timestamps_and_ids_out_of_range_are_rejected_not_a_crash(spark):
    """Spark's ANSI casts raise on overflow: an infinite epoch or a huge float id must be a reject."""
    from pyspark.sql import functions as F

    from index_builder.stages.rules import Bounds

    products = spark.createDataFrame([("A",)], "product_id string")
    events = spark.createDataFrame([(1.0, "A", "view", 1.0, 964980499.0), (1e300, "A", "view", 1.0, float("inf")),
                                    (3.0, "A", "view", 1.0, 1e300), (4.0, "A", "view", float("inf"), None),
                                    (5.0, "A", "view", 1.0, 9999999999999.0)],
                                   "user_id double, product_id string, event_type string, value double, ts double")
    events = events.withColumn(ROW_ID, F.monotonically_increasing_id())
    good, rejects = validate_events(events, products, bounds=Bounds(now=NOW))
    assert [r["user_id"] for r in good.collect()] == ["1"]
    assert dict(_rows(rejects, "user_id", "reject_reason")) == {
        "1.0E300": "unparseable_timestamp", "3.0": "unparseable_timestamp", "4.0": "value_out_of_range",
        "5.0": "timestamp_in_future"}


def test_validate_products_bounds_prices_and_texts(spark):
    from index_builder.stages.rules import Bounds

    df = _products(spark, [
        ("A", "Sofa", "", "1,299.00", None),
        ("B", "Chair", "", "12,50", None),
        ("C", "Table", "", "£1 299", None),
        ("D", "Lamp", "", "Infinity", None),
        ("E", "Yacht", "", "5e12", None),
        ("F", "Bad\x00title", "", "1", None),
        ("G", "T" * 1001, "", "1", None),
        ("H", "Rug", "d" * 100_001, "1", None),
        ("I" * 192, "Vase", "", "1", None),
        ("J", "Line\nbreak", "tab\there", "1", None),
    ])
    good, rejects = validate_products(df, bounds=Bounds())
    assert _rows(good, "product_id", "price") == [("A", 1299.0), ("B", 12.5), ("C", 1299.0), ("J", 1.0)]
    assert dict(_rows(rejects, "product_id", "reject_reason")) == {
        "D": "price_out_of_range", "E": "price_out_of_range", "F": "invalid_text", "G": "text_too_long",
        "H": "text_too_long", "I" * 192: "id_too_long"}


def test_the_stream_keeps_every_valid_product_record_in_order(spark):
    """A price update and its correction in one micro-batch are both valid: nothing is a duplicate to reject
    (the fold-in applies them in order, the newest last)."""
    df = _products(spark, [("A", "Mug", "", "3", None), ("A", "Mug", "", "2.5", None)])
    good, rejects = validate_products(df, dedupe=False)
    assert [r["price"] for r in good.orderBy(ROW_ID).collect()] == [3.0, 2.5]
    assert rejects.count() == 0
