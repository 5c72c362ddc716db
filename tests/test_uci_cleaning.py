"""The UCI Online Retail cleaning rules on a hand-made invoice log."""

from __future__ import annotations

from pyspark.sql import functions as F

from index_builder.core.constants import ROW_ID
from index_builder.stages.adapters import clean_online_retail

COLS = ("InvoiceNo string, StockCode string, Description string, Quantity long, InvoiceDate string, "
        "UnitPrice double, CustomerID double, Country string")

LINES = [
    ("536365", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 6, "2010-12-01 08:26:00", 2.55, 17850.0, "UK"),
    ("536366", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 2, "2010-12-01 09:00:00", 2.95, 13047.0, "UK"),
    ("536367", "85123a", "CREAM HANGING HEART T-LIGHT HOLDER", 1, "2010-12-01 09:10:00", 3.25, None, "UK"),
    ("C536368", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", -2, "2010-12-02 10:00:00", 2.55, 17850.0, "UK"),
    ("536369", "POST", "POSTAGE", 3, "2010-12-01 08:26:00", 18.0, 12583.0, "France"),
    ("536370", "22423", "REGENCY CAKESTAND 3 TIER", 2, "2010-12-03 11:00:00", 12.75, 13047.0, "UK"),
    ("536371", "22423", "damaged", -5, "2010-12-04 11:00:00", 0.0, None, "UK"),
    ("536372", "21777", "nan", 4, "2010-12-05 11:00:00", 0.0, None, "UK"),
    ("536373", "21777", "RECIPE BOX WITH METAL HEART", 4, "2010-12-05 12:00:00", 0.0, None, "UK"),
]


def test_online_retail_rules(spark):
    raw = spark.createDataFrame(LINES, COLS).withColumn(ROW_ID, F.monotonically_increasing_id())
    products, events, rejects, counts = clean_online_retail(raw)

    assert sorted((r.product_id, r.title, r.price) for r in products.collect()) == [
        ("21777", "RECIPE BOX WITH METAL HEART", None),  # no priced sale: no price, title from any line
        ("22423", "REGENCY CAKESTAND 3 TIER", 12.75),
        ("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 2.95),  # most frequent title; median of 2.55, 2.95, 3.25
    ]
    assert sorted((r.user_id, r.product_id, r.event_type, r.value) for r in events.collect()) == [
        ("13047", "22423", "purchase", 2.0),
        ("13047", "85123A", "purchase", 2.0),
        ("17850", "85123A", "purchase", 6.0),
        ("17850", "85123A", "return", 2.0),
    ]
    assert sorted((r.StockCode, r.reject_reason) for r in rejects.collect()) == [
        ("22423", "non_positive_quantity"),
        ("POST", "non_product_stock_code"),
    ]
    assert counts == {"lines": 9, "anonymous_lines": 3}
