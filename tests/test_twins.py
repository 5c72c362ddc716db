"""Parity of the logic twins that live in two engines: the Spark build and its pandas copies (the live fold-in,
the evaluation's split) must give the same texts, weights and flags for the same input rows."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest

from index_builder.core.constants import (
    CATEGORY,
    DEFAULT_EVENT_WEIGHTS,
    DEFAULT_HAD_TYPES,
    DESCRIPTION,
    EVENT_TYPE,
    HAD,
    LAST_TS,
    N_EVENTS,
    PRODUCT_ID,
    PURCHASED,
    ROW_ID,
    TEXT,
    TITLE,
    TS,
    USER_ID,
    VALUE,
    WEIGHT,
)

TEXT_COLUMNS = (TITLE, DESCRIPTION, CATEGORY)


# -- product text: transforms.product_text (Spark) vs live.foldin.product_texts (pandas) ---------------------

def _spark_texts(spark, products: pd.DataFrame) -> list[str]:
    """``product_text`` on the same rows, in their order; a text column the frame lacks is null, as
    ``validate_products`` adds it."""
    from pyspark.sql import functions as F

    from index_builder.stages.transforms import product_text

    present = [c for c in TEXT_COLUMNS if c in products]
    rows = [(i, *[None if pd.isna(v) else str(v) for v in r])
            for i, r in enumerate(products[present].itertuples(index=False, name=None))]
    df = spark.createDataFrame(rows, ", ".join(["i long", *[f"{c} string" for c in present]]))
    for c in TEXT_COLUMNS:
        if c not in present:
            df = df.withColumn(c, F.lit(None).cast("string"))
    return [r[TEXT] for r in product_text(df).orderBy("i").collect()]


def _text_diffs(spark, products: pd.DataFrame) -> list[tuple]:
    from index_builder.live.foldin import product_texts

    pandas_texts = product_texts(products)
    spark_texts = _spark_texts(spark, products)
    assert len(pandas_texts) == len(spark_texts) == len(products)
    return [(i, products.iloc[i].to_dict(), s, p)
            for i, (s, p) in enumerate(zip(spark_texts, pandas_texts, strict=True)) if s != p]


AWKWARD_PRODUCTS = pd.DataFrame({
    TITLE: ["Red mug", "  Lamp  ", "Chair", "Café crème ☕", None, float("nan"), "", "   ", "Desk", "Ünïcödé  Bowl ",
            "日本の茶碗", "Sofa"],
    DESCRIPTION: ["", None, "   ", " Ünïcödé desc ", "only a description", "nan title", "empty title", "blank title",
                  float("nan"), "two  spaces  inside", " 説明 ", "  padded both  "],
    CATEGORY: ["kitchen", "  lighting ", None, "Küche", "", "cat", None, "   ", "office", "", "食器", " living room"],
})


def test_product_texts_match_spark_product_text(spark):
    assert _text_diffs(spark, AWKWARD_PRODUCTS) == []


@pytest.mark.parametrize("missing", [(DESCRIPTION,), (CATEGORY,), (DESCRIPTION, CATEGORY)])
def test_product_texts_match_spark_without_optional_columns(spark, missing):
    assert _text_diffs(spark, AWKWARD_PRODUCTS.drop(columns=list(missing))) == []


def test_product_texts_match_spark_on_other_whitespace(spark):
    products = pd.DataFrame({
        TITLE: ["Tab\tinside", "\tLamp", "Mug\n", "Vase\u00a0", "Rug"],
        DESCRIPTION: ["\t\n", "warm light", "", "glass", "\u00a0"],
        CATEGORY: ["decor", "\r\n", "kitchen", " \t ", "floor"],
    })
    assert _text_diffs(spark, products) == []


# -- interactions: transforms.event_weights + aggregate_interactions (Spark) vs stages.interactions (pandas) -

T0 = dt.datetime(2023, 3, 1, 9, 30)


def _events(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[USER_ID, PRODUCT_ID, EVENT_TYPE, VALUE, TS]).astype({VALUE: float})


PRESENT_VALUES = _events([
    ("u1", "A", "purchase", 5.0, T0),
    ("u1", "A", "view", 1.0, T0 + dt.timedelta(hours=1)),
    ("u1", "A", "cart", 0.0, T0 - dt.timedelta(days=2)),
    ("u1", "B", "view", 0.0, T0),
    ("u1", "B", "view", 5.0, None),
    ("u1", "C", "rating", 4.0, T0),
    ("u1", "C", "rating", 0.0, T0 + dt.timedelta(seconds=1)),
    ("u2", "A", "purchase", 1.0, T0),
    ("u2", "A", "return", 1.0, T0 + dt.timedelta(days=3)),
    ("u2", "D", "cart", 5.0, None),
    ("u2", "D", "cart", 1.0, None),
    ("u3", "E", "rating", 1.0, T0),
    ("u3", "F", "purchase", 0.0, T0),
    ("u3", "F", "view", 5.0, T0 + dt.timedelta(minutes=5)),
])

MISSING_VALUES = _events([
    ("u1", "A", "view", None, T0),
    ("u1", "A", "purchase", 5.0, T0),
    ("u1", "B", "cart", None, T0),
    ("u2", "C", "purchase", None, T0),
    ("u2", "D", "rating", None, T0),
])


def _spark_events(spark, events: pd.DataFrame):
    rows = [(i, u, p, e, None if pd.isna(v) else float(v), None if pd.isna(t) else t.to_pydatetime())
            for i, (u, p, e, v, t) in enumerate(events[[USER_ID, PRODUCT_ID, EVENT_TYPE, VALUE, TS]]
                                                .itertuples(index=False, name=None))]
    return spark.createDataFrame(rows, "i long, user_id string, product_id string, event_type string, value double, "
                                       "ts timestamp")


def _weight_diffs(spark_weights: list[float | None], pandas_weights: list[float], events: pd.DataFrame) -> list[tuple]:
    return [(i, events.iloc[i].to_dict(), s, p) for i, (s, p) in enumerate(zip(spark_weights, pandas_weights, strict=True))
            if s is None or not math.isclose(s, p, rel_tol=0.0, abs_tol=1e-9)]


def _aggregates(df: pd.DataFrame) -> dict[tuple[str, str], tuple]:
    out = {}
    for r in df.to_dict("records"):
        last = r[LAST_TS]
        last = None if last is None or pd.isna(last) else pd.Timestamp(last).to_pydatetime()
        out[(r[USER_ID], r[PRODUCT_ID])] = (float(r[WEIGHT]), int(r[N_EVENTS]), bool(r[PURCHASED]), bool(r[HAD]), last)
    return out


def _aggregate_diffs(spark_agg: dict, pandas_agg: dict) -> list[tuple]:
    diffs = [(k, spark_agg.get(k), pandas_agg.get(k)) for k in sorted(set(spark_agg) | set(pandas_agg))
             if k not in spark_agg or k not in pandas_agg]
    for k in sorted(set(spark_agg) & set(pandas_agg)):
        s, p = spark_agg[k], pandas_agg[k]
        if not math.isclose(s[0], p[0], rel_tol=0.0, abs_tol=1e-9) or s[1:] != p[1:]:
            diffs.append((k, s, p))
    return diffs


def _interaction_diffs(spark, events: pd.DataFrame, had_types: tuple[str, ...]) -> tuple[list, list]:
    from index_builder.stages.interactions import aggregate, weigh
    from index_builder.stages.transforms import aggregate_interactions, event_weights

    weighted = event_weights(_spark_events(spark, events), DEFAULT_EVENT_WEIGHTS)
    spark_weights = [r[WEIGHT] for r in weighted.orderBy("i").select(WEIGHT).collect()]
    pandas_weights = weigh(events, DEFAULT_EVENT_WEIGHTS).tolist()
    spark_agg = _aggregates(aggregate_interactions(weighted.drop("i"), had_types).toPandas())
    pandas_agg = _aggregates(aggregate(events, DEFAULT_EVENT_WEIGHTS, had_types))
    return _weight_diffs(spark_weights, pandas_weights, events), _aggregate_diffs(spark_agg, pandas_agg)


@pytest.mark.parametrize("had_types", [DEFAULT_HAD_TYPES, ("purchase", "view"), ("cart",)])
def test_interactions_match_spark(spark, had_types):
    weights, aggregates = _interaction_diffs(spark, PRESENT_VALUES, had_types)
    assert weights == [] and aggregates == []


def test_a_missing_value_counts_one_in_the_build(spark):
    """In the build a missing value is 1 before any weight is computed (``validate_events``), as ``weigh``
    assumes; a missing rating is rejected there."""
    from index_builder.stages.interactions import weigh
    from index_builder.stages.rules import Bounds
    from index_builder.stages.transforms import event_weights, validate_events

    events = MISSING_VALUES[MISSING_VALUES[EVENT_TYPE] != "rating"].reset_index(drop=True)
    from pyspark.sql import functions as F

    raw = _spark_events(spark, events).withColumn(ROW_ID, F.col("i"))  # validate_events' rejects name their row
    products = spark.createDataFrame([(p,) for p in sorted(set(events[PRODUCT_ID]))], "product_id string")
    good, rejects = validate_events(raw, products, bounds=Bounds(now=dt.datetime(2024, 1, 1)), keep=("i",))
    assert rejects.count() == 0
    spark_weights = [r[WEIGHT] for r in event_weights(good, DEFAULT_EVENT_WEIGHTS).orderBy("i").collect()]
    assert _weight_diffs(spark_weights, weigh(events, DEFAULT_EVENT_WEIGHTS).tolist(), events) == []


def test_interactions_match_spark_on_missing_values(spark):
    weights, aggregates = _interaction_diffs(spark, MISSING_VALUES, DEFAULT_HAD_TYPES)
    assert weights == [] and aggregates == []
