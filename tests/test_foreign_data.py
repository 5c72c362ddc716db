"""Data as real shops and public datasets write it: no event type, epoch-second ratings, ids that differ by
leading zeros, and inputs whose events are all unusable (which must fail, never publish an empty bundle)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from index_builder.core import bundle
from index_builder.core.errors import InputError
from index_builder.pipeline import BuildConfig, build
from index_builder.stages.transforms import _timestamp
from tests.test_build_small import THEMES

UTC = dt.UTC


def _catalog(d, id_of=lambda theme, i: f"{theme}{i}", id_col="sku"):
    rows = [{id_col: id_of(theme, i), "name": title} for theme, titles in THEMES.items() for i, title in enumerate(titles)]
    pd.DataFrame(rows).to_csv(d / "products.csv", index=False)
    return d / "products.csv"


def _build(spark, tmp_path, products, events, mapping, **kw):
    cfg = BuildConfig(out=str(tmp_path / "out"), products=str(products), events=str(events),
                      mapping={"product_id": "sku", "title": "name", **mapping}, k_min=3, k_max=3, als_rank=4,
                      evaluate=False, **kw)
    return bundle.verify(build(cfg, spark=spark))


def _shoppers():
    """Candle and bike shoppers, each buying three of their theme."""
    return ([(f"c{u}", f"candle{i}") for u in range(4) for i in range(3)]
            + [(f"b{u}", f"bike{i}") for u in range(3) for i in range(3)])


def test_timestamp_shapes(spark):
    texts = ["964980499", "964980499000", "2011-12-09 12:50:00", "2011-12-09T12:50:00Z", "2011-12-09",
             "25/12/2011 10:30", "9/12/2011 8:26", "12/25/2011 10:30", "25.12.2011", "not a time", ""]
    df = spark.createDataFrame([(t,) for t in texts], "ts string")
    got = [r[0] for r in df.select(_timestamp(df, "ts")).collect()]
    want = [dt.datetime(2000, 7, 30, 18, 8, 19), dt.datetime(2000, 7, 30, 18, 8, 19), dt.datetime(2011, 12, 9, 12, 50),
            dt.datetime(2011, 12, 9, 12, 50), dt.datetime(2011, 12, 9), dt.datetime(2011, 12, 25, 10, 30),
            dt.datetime(2011, 12, 9, 8, 26), dt.datetime(2011, 12, 25, 10, 30), dt.datetime(2011, 12, 25), None, None]
    assert got == want
    nums = spark.createDataFrame([(964980499,), (964980499000,)], "ts long")
    assert [r[0] for r in nums.select(_timestamp(nums, "ts")).collect()] == want[:2]


def test_ratings_with_epoch_seconds_and_no_event_type_build_with_als(spark, tmp_path):
    """A MovieLens-shaped ratings.csv: userId,movieId,rating,timestamp (epoch seconds), no event type."""
    products = _catalog(tmp_path, id_col="movieId")
    rows = [{"userId": u, "movieId": p, "rating": 4.5, "timestamp": 964980499 + 60 * i}
            for i, (u, p) in enumerate(_shoppers())]
    pd.DataFrame(rows).to_csv(tmp_path / "ratings.csv", index=False)
    folder, m = _build(spark, tmp_path, products, tmp_path / "ratings.csv",
                       {"user_id": "userId", "value": "rating", "ts": "timestamp", "product_id": "movieId"},
                       event_type="rating")
    assert m["counts"]["users"] == 7 and "skipped" not in m["als"], m["counts"]
    assert m["counts"]["rejected"]["events"] == {}
    assert "'rating'" in m["assumed"]["event_type"]
    events = pd.read_parquet(folder / bundle.EVENTS)
    assert set(events.event_type) == {"rating"} and events.ts.min() == pd.Timestamp("2000-07-30 18:08:19")


def test_purchase_log_without_event_type_or_value_builds_with_als_and_prices(spark, tmp_path):
    """An order export: customer, sku and the price paid; the catalog has no price column."""
    products = _catalog(tmp_path)
    orders = pd.DataFrame(_shoppers(), columns=["customer", "sku"])
    orders["price"] = [2.0 + (i % 3) for i in range(len(orders))]  # candle0 sells at 2.0 (x4), bike0 at 2.0 (x3)
    orders.to_csv(tmp_path / "orders.csv", index=False)
    folder, m = _build(spark, tmp_path, products, tmp_path / "orders.csv", {"user_id": "customer"})
    assert m["counts"]["users"] == 7 and "skipped" not in m["als"]
    assert "'purchase'" in m["assumed"]["event_type"] and "counts 1" in m["assumed"]["value"]
    assert m["assumed"]["price"].startswith("12 products had no price in the catalog: 6 of them take the median")
    prices = pd.read_parquet(folder / bundle.PRODUCTS).set_index("product_id").price
    assert prices["candle0"] == 2.0 and prices["candle2"] == 4.0 and pd.isna(prices["tea0"]), "unsold: no price"


def test_ids_with_leading_zeros_fail_with_the_hint_then_build_normalized(spark, tmp_path):
    numbers = {theme: 100 * (k + 1) for k, theme in enumerate(THEMES)}
    products = _catalog(tmp_path, lambda theme, i: f"0{numbers[theme] + i:09d}")  # '0000000100'
    rows = [(u, str(numbers[p[:-1]] + int(p[-1]))) for u, p in _shoppers()]  # '100'
    pd.DataFrame(rows, columns=["customer", "sku"]).to_csv(tmp_path / "orders.csv", index=False)
    with pytest.raises(InputError) as err:
        _build(spark, tmp_path, products, tmp_path / "orders.csv", {"user_id": "customer"})
    text = str(err.value)
    assert "21 of 21 events name a product_id that is not in the catalog" in text
    assert "events: '100'" in text and "catalog: '0000000" in text and "--normalize-ids" in text
    assert not (tmp_path / "out" / "current").exists(), "nothing is published"
    kept = pd.read_csv(tmp_path / "out" / "rejects-of-failed-build" / "events.csv")
    assert len(kept) == 21 and set(kept.reject_reason) == {"unknown_product_id"}

    folder, m = _build(spark, tmp_path, products, tmp_path / "orders.csv", {"user_id": "customer"}, normalize_ids=True)
    assert m["counts"]["users"] == 7 and "skipped" not in m["als"]
    assert set(pd.read_parquet(folder / bundle.PRODUCTS).product_id) >= {"100", "101", "300"}


def test_events_that_are_all_rejected_fail_the_build(spark, tmp_path):
    products = _catalog(tmp_path)
    pd.DataFrame({"customer": ["a", "b"], "sku": ["candle0", "bike1"], "type": ["teleport", "levitate"]}).to_csv(
        tmp_path / "events.csv", index=False)
    with pytest.raises(InputError, match=r"all 2 events were rejected \(unknown_event_type 2\)"):
        _build(spark, tmp_path, products, tmp_path / "events.csv", {"user_id": "customer", "event_type": "type"})
    assert not (tmp_path / "out" / "current").exists()


def test_mostly_unreadable_timestamps_name_the_column(spark, tmp_path):
    products = _catalog(tmp_path)
    rows = [(u, p, "yesterday-ish") for u, p in _shoppers()]
    pd.DataFrame(rows, columns=["customer", "sku", "when"]).to_csv(tmp_path / "orders.csv", index=False)
    with pytest.raises(InputError, match=r"column 'ts': 21 of 21 timestamps cannot be read \(e\.g\. 'yesterday-ish'\)"):
        _build(spark, tmp_path, products, tmp_path / "orders.csv", {"user_id": "customer", "ts": "when"})


def test_events_without_a_ts_column_say_they_are_undated_and_name_the_time_column(spark, tmp_path):
    """A time column under another name is not read: the build says the events are undated (no time split, no
    recency) and how to map the column that looks like a time, instead of dropping it without a word."""
    products = _catalog(tmp_path)
    rows = [(u, p, f"2024-0{1 + i % 9}-1{i % 10}T10:31:51.652071520+00:00") for i, (u, p) in enumerate(_shoppers())]
    pd.DataFrame(rows, columns=["customer", "sku", "event_time"]).to_csv(tmp_path / "orders.csv", index=False)
    folder, m = _build(spark, tmp_path, products, tmp_path / "orders.csv", {"user_id": "customer"})
    note = m["assumed"]["ts"]
    assert "orders.csv" in note and "undated" in note and "--map ts=event_time" in note, note
    assert pd.read_parquet(folder / bundle.EVENTS).ts.isna().all()

    folder, m = _build(spark, tmp_path, products, tmp_path / "orders.csv", {"user_id": "customer", "ts": "event_time"})
    assert "ts" not in m["assumed"]
    ts = pd.read_parquet(folder / bundle.EVENTS).ts
    assert ts.notna().all() and ts.min() == pd.Timestamp("2024-01-10 10:31:51.652071"), "nanoseconds cut to micro"

    pd.DataFrame(_shoppers(), columns=["customer", "sku"]).to_csv(tmp_path / "plain.csv", index=False)
    _, m = _build(spark, tmp_path, products, tmp_path / "plain.csv", {"user_id": "customer"})
    assert "undated" in m["assumed"]["ts"] and "--map" not in m["assumed"]["ts"]
