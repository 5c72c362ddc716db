"""Pure ``DataFrame -> DataFrame`` steps: validation with rejects, product text, event weights, indexing.

Nothing here reads or writes files; the pipeline passes frames in and takes frames out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import Column, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from index_builder.core.constants import (
    CATEGORY,
    DEFAULT_HAD_TYPES,
    DESCRIPTION,
    EVENT_TYPE,
    EVENT_TYPES,
    HAD,
    LAST_TS,
    N_EVENTS,
    POPULARITY,
    PRICE,
    PRODUCT_COLUMNS,
    PRODUCT_ID,
    PURCHASED,
    REJECT_REASON,
    ROW_ID,
    TEXT,
    TITLE,
    TS,
    USER_ID,
    VALUE,
    WEIGHT,
)
from index_builder.stages import rules

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyspark.sql import DataFrame

    Persist = Callable[[DataFrame], DataFrame]

# Common spellings of event types in public interaction logs, mapped onto ours.
EVENT_SYNONYMS = {
    "addtocart": "cart",
    "add_to_cart": "cart",
    "add-to-cart": "cart",
    "transaction": "purchase",
    "order": "purchase",
    "buy": "purchase",
    "click": "view",
    "pageview": "view",
    "page_view": "view",
    "refund": "return",
    "rate": "rating",
}


def blank(col: Column) -> Column:
    """True where a column is null or only white space."""
    return col.isNull() | (F.trim(col.cast("string")) == "")


def _id_string(df: DataFrame, name: str, normalize: bool = False) -> Column:
    """An id column as a trimmed string; whole floats (12346.0, as pandas writes ids) lose the '.0'.

    ``normalize`` (``--normalize-ids``) also makes digit ids comparable across files that wrote them
    differently: '0108775044', '108775044' and '108775044.0' all become '108775044'.
    """
    dtype = df.schema[name].dataType
    col = F.col(name)
    if isinstance(dtype, (T.FloatType, T.DoubleType, T.DecimalType)):
        whole = col.try_cast("long")  # null past the long range (a 1e300 id): then the text of the float
        col = F.when(whole.isNotNull() & (col == F.floor(col)), whole.cast("string")).otherwise(col.cast("string"))
    out = F.trim(col.cast("string"))
    if normalize:
        digits = F.regexp_extract(out, r"^([0-9]+)(\.0+)?$", 1)
        out = F.when(digits != "", F.coalesce(F.nullif(F.regexp_replace(digits, "^0+", ""), F.lit("")), F.lit("0")))\
            .otherwise(out)
    return out


def _number(df: DataFrame, name: str) -> Column:
    """A numeric column as double; strings may carry currency signs or spaces ('£3.50'), thousands
    separators ('1,299.00') or a decimal comma ('12,50')."""
    if isinstance(df.schema[name].dataType, T.NumericType):
        return F.col(name).cast("double")
    cleaned = F.regexp_replace(F.trim(F.col(name).cast("string")), r"[£$€\s]", "")
    thousands = cleaned.rlike(r"^[+-]?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]+)?$")
    decimal_comma = cleaned.rlike(r"^[+-]?[0-9]+,[0-9]{1,2}$")
    cleaned = (F.when(thousands, F.regexp_replace(cleaned, ",", ""))
               .when(decimal_comma, F.regexp_replace(cleaned, ",", ".")).otherwise(cleaned))
    return cleaned.try_cast("double")


def _finite(col: Column) -> Column:
    return col.isNotNull() & ~F.isnan(col) & (F.abs(col) != float("inf"))


def nested(col: Column) -> Column:
    """True where a text value is a JSON object or array (a record nesting where one value belongs);
    '{3F2504E0-4F89}' is an id, not JSON."""
    text = F.trim(col.cast("string"))
    obj = text.startswith("{") & F.from_json(text, "map<string,string>").isNotNull()
    arr = text.startswith("[") & F.from_json(text, "array<string>").isNotNull()
    return F.coalesce(obj | arr, F.lit(False))


def _bad_id(col: Column, bounds: rules.Bounds) -> Column:
    """The reason an id cannot be used (beyond being empty), or null."""
    return (F.when(nested(col), rules.NESTED_VALUE)
            .when(F.length(col) > bounds.max_id_chars, rules.ID_TOO_LONG)
            .when(col.rlike(rules.ID_FORBIDDEN), rules.INVALID_ID))


def _nested_type(df: DataFrame, name: str) -> bool:
    return isinstance(df.schema[name].dataType, (T.StructType, T.ArrayType, T.MapType))


# Text timestamps tried in order after ISO 8601 (Spark's default parser): day-first before month-first,
# as most of the world writes dates ("25/12/2011 10:30"); a day over 12 falls through to month-first.
TIMESTAMP_FORMATS = ("d/M/yyyy H:mm[:ss]", "d/M/yyyy", "M/d/yyyy H:mm[:ss]", "M/d/yyyy", "d.M.yyyy H:mm[:ss]",
                     "d.M.yyyy", "d-M-yyyy H:mm[:ss]", "d-M-yyyy", "yyyy/M/d H:mm[:ss]", "yyyy/M/d",
                     "yyyyMMdd HHmmss", "yyyyMMdd")


def _epoch(col: Column) -> Column:
    """Epoch seconds, or milliseconds when too large for seconds (after the year 5138); null beyond any
    plausible time (an infinite or 1e300 number would overflow Spark's casts, which raise in ANSI mode)."""
    col = col.try_cast("double")
    sane = _finite(col) & (F.abs(col) < 1e15)
    return (F.when(sane & (col > 1e11), F.timestamp_millis(col.try_cast("long")))
            .when(sane, F.timestamp_seconds(col)))


def _timestamp(df: DataFrame, name: str) -> Column:
    """A timestamp column from timestamps, dates, epoch numbers, epoch digit strings or common text shapes."""
    dtype = df.schema[name].dataType
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return F.col(name).cast("timestamp")
    if isinstance(dtype, T.NumericType):
        return _epoch(F.col(name))
    text = F.trim(F.col(name).cast("string"))
    epoch = F.when(text.rlike(r"^[0-9]{9,13}(\.[0-9]+)?$"), _epoch(text.try_cast("double")))
    return F.coalesce(epoch, F.try_to_timestamp(text),
                      *[F.try_to_timestamp(text, F.lit(fmt)) for fmt in TIMESTAMP_FORMATS])


def _rejects(flagged: DataFrame, original_columns: list[str]) -> DataFrame:
    """Rejected rows with every original column as text plus the reason."""
    return flagged.filter(F.col(REJECT_REASON).isNotNull()).select(
        F.col(ROW_ID),
        *[F.col(f"`{c}`").cast("string").alias(c) for c in original_columns if c != ROW_ID],
        F.col(REJECT_REASON),
    )


def _with_optional(df: DataFrame, names: tuple[str, ...]) -> DataFrame:
    for name in names:
        if name not in df.columns:
            df = df.withColumn(name, F.lit(None).cast("string"))
    return df


def validate_products(df: DataFrame, normalize_ids: bool = False, persist: Persist | None = None,
                      bounds: rules.Bounds | None = None, dedupe: bool = True, keep: tuple[str, ...] = ()
                      ) -> tuple[DataFrame, DataFrame]:
    """Split a product frame into (valid canonical rows, rejected rows with ``reject_reason``).

    Reasons: empty_product_id, nested_value, id_too_long, invalid_id, empty_title, invalid_text,
    text_too_long, unparseable_price, price_out_of_range, negative_price (``bounds``: :mod:`.rules`), and
    with ``dedupe`` duplicate_product_id (the first row of an id in file order is kept; the stream keeps
    every record, in order: a later one updates the earlier). Unknown columns are kept as attributes.
    ``persist`` (e.g. the caller's cache) is applied to the checked rows both outputs are read from, so
    that reading the valid rows and then the rejects does not run the checks twice. ``keep``: input
    columns the valid rows carry as they are (not as attributes).
    """
    bounds = bounds or rules.Bounds()
    original = df.columns
    df = _with_optional(df, (DESCRIPTION, CATEGORY, PRICE))
    price_raw = F.col(PRICE)
    canon = df.select(
        *[F.col(f"`{c}`") for c in df.columns if c not in PRODUCT_COLUMNS],
        _id_string(df, PRODUCT_ID, normalize_ids).alias(PRODUCT_ID),
        F.trim(F.col(TITLE).cast("string")).alias(TITLE),
        F.coalesce(F.trim(F.col(DESCRIPTION).cast("string")), F.lit("")).alias(DESCRIPTION),
        F.coalesce(F.trim(F.col(CATEGORY).cast("string")), F.lit("")).alias(CATEGORY),
        _number(df, PRICE).alias(PRICE),
        blank(price_raw).alias("_price_blank"),
        *[F.col(f"`{c}`").alias(f"__orig_{c}") for c in original if c in PRODUCT_COLUMNS],
    )
    nested_field = F.lit(any(_nested_type(df, c) for c in (TITLE, DESCRIPTION, CATEGORY, PRICE)))
    for c in (TITLE, DESCRIPTION, CATEGORY, PRICE):
        nested_field = nested_field | nested(F.col(f"__orig_{c}") if c in original else F.lit(None))
    too_long = ((F.length(TITLE) > bounds.max_title_chars) | (F.length(DESCRIPTION) > bounds.max_description_chars)
                | (F.length(CATEGORY) > bounds.max_category_chars))
    price = F.col(PRICE)
    reason = (
        F.when(blank(F.col(PRODUCT_ID)), "empty_product_id")
        .otherwise(_bad_id(F.col(PRODUCT_ID), bounds))
    )
    reason = F.coalesce(reason, F.when(nested_field, rules.NESTED_VALUE)
                        .when(blank(F.col(TITLE)), "empty_title")
                        .when(F.col(TITLE).rlike(rules.TEXT_FORBIDDEN), rules.INVALID_TEXT)
                        .when(too_long, rules.TEXT_TOO_LONG)
                        .when(~F.col("_price_blank") & (price.isNull() | F.isnan(price)), "unparseable_price")
                        .when(price.isNotNull() & (~_finite(price) | (price > bounds.max_price)), rules.PRICE_OUT_OF_RANGE)
                        .when(price < 0, "negative_price"))
    flagged = canon.withColumn(REJECT_REASON, reason)
    if dedupe:
        # Valid rows sort first, so the earliest valid row of an id is kept and later ones are duplicates.
        first = Window.partitionBy(PRODUCT_ID).orderBy(F.col(REJECT_REASON).isNotNull(), ROW_ID)
        flagged = flagged.withColumn(
            REJECT_REASON,
            F.when(F.col(REJECT_REASON).isNull() & (F.row_number().over(first) > 1), F.lit("duplicate_product_id"))
            .otherwise(F.col(REJECT_REASON)),
        )
    if persist is not None:
        flagged = persist(flagged)
    attrs = [c for c in canon.columns if c not in PRODUCT_COLUMNS and not c.startswith("_") and c not in keep]
    good = flagged.filter(F.col(REJECT_REASON).isNull()).select(*PRODUCT_COLUMNS, *[F.col(f"`{c}`") for c in (*attrs, *keep)])
    # Rejects show the values as the user gave them.
    restored = flagged
    for c in original:
        if c in PRODUCT_COLUMNS:
            restored = restored.withColumn(c, F.col(f"__orig_{c}"))
    return good, _rejects(restored, original)


def validate_events(df: DataFrame, products: DataFrame, normalize_ids: bool = False, persist: Persist | None = None,
                    bounds: rules.Bounds | None = None, keep: tuple[str, ...] = ()) -> tuple[DataFrame, DataFrame]:
    """Split an event frame into (valid canonical events, rejected rows with ``reject_reason``).

    Reasons: empty_user_id, empty_product_id, nested_value, id_too_long, invalid_id, unknown_event_type,
    unparseable_value, value_out_of_range, negative_value, missing_rating, unparseable_timestamp,
    timestamp_too_old, timestamp_in_future (``bounds``: :mod:`.rules`), unknown_product_id. A missing value
    counts as 1; a missing timestamp stays missing. ``products`` may list an id more than once.
    ``persist``: as in :func:`validate_products`; ``keep``: input columns the valid rows carry as they are.
    """
    bounds = bounds or rules.Bounds()
    oldest, newest = bounds.window()
    original = df.columns
    df = _with_optional(df, (VALUE, TS))
    etype_raw = F.lower(F.trim(F.col(EVENT_TYPE).cast("string")))
    synonyms = F.create_map(*[F.lit(x) for kv in EVENT_SYNONYMS.items() for x in kv])
    etype = F.coalesce(synonyms[etype_raw], etype_raw)
    value = _number(df, VALUE)
    ts = _timestamp(df, TS)
    canon = df.select(
        "*",
        _id_string(df, USER_ID, normalize_ids).alias("_uid"),
        _id_string(df, PRODUCT_ID, normalize_ids).alias("_pid"),
        etype.alias("_etype"),
        value.alias("_value"),
        ts.alias("_ts"),
    )
    known = products.select(F.col(PRODUCT_ID).alias("_pid")).distinct().withColumn("_known", F.lit(True))
    canon = canon.join(F.broadcast(known), "_pid", "left")
    nested_field = F.lit(any(_nested_type(df, c) for c in (EVENT_TYPE, VALUE, TS)))
    for c in (EVENT_TYPE, VALUE, TS):
        nested_field = nested_field | nested(F.col(f"`{c}`"))
    v = F.col("_value")
    top = F.when(F.col("_etype") == "rating", F.lit(bounds.max_rating)).otherwise(F.lit(bounds.max_quantity))
    reason = (
        F.when(blank(F.col("_uid")), "empty_user_id")
        .when(blank(F.col("_pid")), "empty_product_id")
        .otherwise(F.coalesce(_bad_id(F.col("_uid"), bounds), _bad_id(F.col("_pid"), bounds)))
    )
    reason = F.coalesce(reason, (
        F.when(nested_field, rules.NESTED_VALUE)
        .when(~F.col("_etype").isin(*EVENT_TYPES) | F.col("_etype").isNull(), "unknown_event_type")
        .when(~blank(F.col(VALUE)) & (v.isNull() | F.isnan(v)), "unparseable_value")
        .when(v.isNotNull() & ((F.abs(v) == float("inf")) | (v > top)), rules.VALUE_OUT_OF_RANGE)
        .when(v < 0, "negative_value")
        .when((F.col("_etype") == "rating") & v.isNull(), "missing_rating")
        .when(~blank(F.col(TS)) & F.col("_ts").isNull(), "unparseable_timestamp")
        .when(F.col("_ts") < F.lit(oldest), rules.TIMESTAMP_TOO_OLD)
        .when(F.col("_ts") > F.lit(newest), rules.TIMESTAMP_IN_FUTURE)
        .when(F.col("_known").isNull(), "unknown_product_id")
    ))
    flagged = canon.withColumn(REJECT_REASON, reason)
    if persist is not None:
        flagged = persist(flagged)
    good = flagged.filter(F.col(REJECT_REASON).isNull()).select(
        F.col("_uid").alias(USER_ID),
        F.col("_pid").alias(PRODUCT_ID),
        F.col("_etype").alias(EVENT_TYPE),
        F.coalesce(F.col("_value"), F.lit(1.0)).alias(VALUE),
        F.col("_ts").alias(TS),
        *[F.col(f"`{c}`") for c in keep],
    )
    return good, _rejects(flagged, original)


def prices_from_events(products: DataFrame, events: DataFrame, normalize_ids: bool = False) -> DataFrame:
    """Products without a price take the median price paid for them in the events (an events ``price``
    column, as order exports have); products with a catalog price keep it."""
    paid = events.select(_id_string(events, PRODUCT_ID, normalize_ids).alias("_pid"), _number(events, PRICE).alias("_paid"))
    paid = paid.filter(F.col("_paid").isNotNull() & ~F.isnan("_paid") & (F.col("_paid") >= 0))
    median = paid.groupBy("_pid").agg(F.percentile_approx("_paid", 0.5, 10_000).alias("_median"))
    joined = products.join(median, products[PRODUCT_ID] == median["_pid"], "left")
    return joined.withColumn(PRICE, F.coalesce(F.col(PRICE), F.col("_median"))).drop("_pid", "_median")


def product_text(df: DataFrame) -> DataFrame:
    """Add ``text`` = title + description + category joined by spaces, as the tutorials do (concat_ws)."""
    parts = [F.when(~blank(F.col(c)), F.trim(F.col(c))) for c in (TITLE, DESCRIPTION, CATEGORY)]
    return df.withColumn(TEXT, F.concat_ws(" ", *parts))


def sample_users(events: DataFrame, n: int, seed: int) -> DataFrame:
    """Keep every event of a deterministic sample of ``n`` users (ordered by a seeded hash)."""
    users = (
        events.select(USER_ID)
        .distinct()
        .withColumn("_h", F.xxhash64(F.col(USER_ID), F.lit(seed)))
        .orderBy("_h", USER_ID)
        .limit(n)
        .select(USER_ID)
    )
    return events.join(users, USER_ID, "left_semi")


def event_weights(events: DataFrame, weights: dict[str, float]) -> DataFrame:
    """Add ``weight`` per event: type weight x log1p(quantity); a rating counts weight x rating.

    Returns carry a negative type weight, so a returned purchase cancels out.
    """
    unknown = set(EVENT_TYPES) - set(weights)
    if unknown:
        raise ValueError(f"event weights miss {sorted(unknown)}")
    type_weight = F.create_map(*[F.lit(x) for kv in weights.items() for x in kv])[F.col(EVENT_TYPE)]
    # a missing quantity counts 1, as validate_events fills it and the pandas twin (stages.interactions.weigh) does
    value = F.greatest(F.coalesce(F.col(VALUE), F.lit(1.0)), F.lit(0.0))
    damped = F.when(F.col(EVENT_TYPE) == "rating", value).otherwise(F.log1p(value))
    return events.withColumn(WEIGHT, type_weight * damped)


def aggregate_interactions(weighted: DataFrame, had_types: tuple[str, ...] = DEFAULT_HAD_TYPES) -> DataFrame:
    """One row per (user, product): summed weight, event count, purchased and "already had" flags, last timestamp.

    ``had`` is true when any event of the user on the product is one of ``had_types`` (by default a
    purchase or a rating): the chat and the evaluation never recommend such a product to that user again.
    """
    return weighted.groupBy(USER_ID, PRODUCT_ID).agg(
        F.sum(WEIGHT).alias(WEIGHT),
        F.count(F.lit(1)).alias(N_EVENTS),
        F.max((F.col(EVENT_TYPE) == "purchase").cast("boolean")).alias(PURCHASED),
        F.max(F.col(EVENT_TYPE).isin(*had_types)).cast("boolean").alias(HAD),
        F.max(TS).alias(LAST_TS),
    )


def add_popularity(products: DataFrame, interactions: DataFrame) -> DataFrame:
    """Add ``popularity`` = number of distinct users with a positive interaction (0 when none).

    ``interactions`` holds one row per (user, product) (:func:`aggregate_interactions`), so its rows are counted:
    a distinct count would add an expand and a second shuffle for the same number."""
    pop = (
        interactions.filter(F.col(WEIGHT) > 0)
        .groupBy(PRODUCT_ID)
        .agg(F.count(F.lit(1)).cast("long").alias(POPULARITY))
    )
    return products.join(pop, PRODUCT_ID, "left").fillna({POPULARITY: 0})


def with_index(df: DataFrame, key: str, index_col: str) -> DataFrame:
    """Add a dense 0-based index ordered by ``key`` (the row number in the bundle's tables)."""
    return df.withColumn(index_col, (F.row_number().over(Window.orderBy(key)) - 1).cast("int"))
