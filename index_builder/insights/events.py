"""What the events say, before any model: counts per period by type, the view -> cart -> purchase funnel, the
long tail of events per customer and per product, and the best sellers of the newest periods.

Spark aggregates the validated events (``groupBy``); only the aggregates reach the driver (rows per day and
type, per distinct count, the top N: never a row per event, customer or product), and they are returned as one
small JSON-able summary (capped: a log-spaced curve, power-of-two bins, top-N lists). The report writes it to
``report/events.json`` and draws it, as the app's Insights tab does, with :func:`index_builder.core.figures.event_figures`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from index_builder.core.constants import EVENT_TYPE, EVENT_TYPES, PRODUCT_ID, TITLE, TS, USER_ID, VALUE

FUNNEL = ("view", "cart", "purchase")  # the shopping path, in order
SELLER_TYPES = ("purchase", "cart", "rating", "view")  # best sellers by the first of these the events have
TOP_SELLERS = 10  # products per period
SELLER_PERIODS = 3  # the newest periods shown
DAILY_BELOW_DAYS = 56  # events spanning fewer days are counted per day, otherwise per week...
WEEKLY_UP_TO = 520  # ...up to ten years of weeks, then per month
CURVE_POINTS = 120  # points of a rank/frequency curve (log-spaced ranks)
TOP_SHARE = 0.2  # "the top 20% of products take x% of the events"
_FREQ = {"day": "D", "week": "W-MON", "month": "MS"}


def summarize_events(events, products=None, *, n_products: int | None = None, top_n: int = TOP_SELLERS,
                     periods: int = SELLER_PERIODS) -> dict[str, Any]:
    """The summary of a validated Spark events frame (``user_id, product_id, event_type, value, ts``).

    ``products`` (a Spark frame with ``product_id, title``, one row per id) names the best sellers; ``n_products``
    is the catalog's size (products without events are the tail's zeros). ``events=None`` (a catalog-only build)
    gives ``{"n_events": 0, "types": {}}``. Three or four Spark jobs: counts per day and type, the tails' count
    frequencies, the funnel (when there is one), the best sellers.
    """
    if events is None:
        return {"n_events": 0, "types": {}}
    days = daily_counts(events)
    n_events = int(days["n"].sum())
    if n_events == 0:
        return {"n_events": 0, "types": {}}
    by_type = days.groupby(EVENT_TYPE)["n"].sum()
    types = {t: int(by_type[t]) for t in EVENT_TYPES if t in by_type.index}
    dated = days[days["day"].notna()]
    out: dict[str, Any] = {"n_events": n_events, "types": types, "undated": n_events - int(dated["n"].sum())}
    if len(dated):
        first, last = pd.Timestamp(dated["first"].min()), pd.Timestamp(dated["last"].max())
        out.update(first=first.isoformat(), last=last.isoformat(), timeline=timeline(dated, grain_of(first, last)))
        kind = next((t for t in SELLER_TYPES if t in set(dated[EVENT_TYPE])), None)
        if kind is not None and products is not None:
            kind_last = pd.Timestamp(dated.loc[dated[EVENT_TYPE] == kind, "last"].max())
            out["best_sellers"] = best_sellers(events, products, kind, first, kind_last, top_n=top_n, periods=periods)
    out["funnel"] = funnel(events, types)
    out.update(long_tails(events, n_products))
    return out


def daily_counts(events) -> pd.DataFrame:
    """``day, event_type, n, first, last``: events per day (UTC; ``day`` missing for the undated) and type."""
    from pyspark.sql import functions as F

    days = (events.groupBy(F.to_date(F.col(TS)).alias("day"), EVENT_TYPE)
            .agg(F.count(F.lit(1)).alias("n"), F.min(TS).alias("first"), F.max(TS).alias("last")).toPandas())
    days["day"] = pd.to_datetime(days["day"])
    return days


def grain_of(first: pd.Timestamp, last: pd.Timestamp) -> str:
    days = (last - first).total_seconds() / 86_400
    return "day" if days < DAILY_BELOW_DAYS else "week" if days / 7 <= WEEKLY_UP_TO else "month"


def timeline(days: pd.DataFrame, grain: str) -> dict[str, Any]:
    """The dated daily counts per period (day, week from Monday, or month) and type; empty periods count 0."""
    day = days["day"]
    period = (day - pd.to_timedelta(day.dt.weekday, unit="D") if grain == "week" else
              day.dt.to_period("M").dt.start_time if grain == "month" else day)
    table = days.assign(period=period).pivot_table(index="period", columns=EVENT_TYPE, values="n", aggfunc="sum",
                                                   fill_value=0)
    table = table.reindex(pd.date_range(table.index.min(), table.index.max(), freq=_FREQ[grain]), fill_value=0)
    order = [t for t in EVENT_TYPES if t in table.columns]
    return {"grain": grain, "periods": [p.strftime("%Y-%m-%d") for p in table.index],
            "counts": {t: [int(v) for v in table[t]] for t in order}}


def funnel(events, types: dict[str, int]) -> dict[str, Any]:
    """Distinct customers at each step of view -> cart -> purchase that the events have: ``customers`` with the
    step's type at all, ``reached`` with it and every step before it (in any order). With fewer than two of the
    three types there is no path to follow: ``absent`` names the missing ones and nothing is counted."""
    from pyspark.sql import functions as F

    steps = [t for t in FUNNEL if t in types]
    out: dict[str, Any] = {"steps": steps, "absent": [t for t in FUNNEL if t not in types]}
    if len(steps) < 2:
        return out
    flags = (events.where(F.col(EVENT_TYPE).isin(*steps)).groupBy(USER_ID)
             .agg(*[F.max((F.col(EVENT_TYPE) == t).cast("int")).alias(t) for t in steps])
             .groupBy(*steps).count().toPandas())  # at most 2^3 rows
    has = flags[steps].astype(bool).to_numpy()
    n = flags["count"].to_numpy(dtype=np.int64)
    out["customers"] = [int(n[has[:, i]].sum()) for i in range(len(steps))]
    out["reached"] = [int(n[has[:, : i + 1].all(axis=1)].sum()) for i in range(len(steps))]
    return out


def long_tails(events, n_products: int | None = None) -> dict[str, dict[str, Any]]:
    """How events spread over ``customers`` and ``products``, from how many of each have each count (one Spark
    job; as many rows as distinct counts): the share the top 20% take, a log-spaced rank/frequency curve and a
    histogram with power-of-two bins."""
    from pyspark.sql import functions as F

    def per(key: str, name: str):
        return events.groupBy(key).count().select(F.lit(name).alias("of"), F.col("count").alias("events"))

    freq = (per(USER_ID, "customers").unionByName(per(PRODUCT_ID, "products"))
            .groupBy("of", "events").agg(F.count(F.lit(1)).alias("entities")).toPandas())
    out = {}
    for name, catalog in (("customers", None), ("products", n_products)):
        f = freq[freq["of"] == name]
        out[name] = tail_from_frequencies(f["events"].to_numpy(dtype=np.int64), f["entities"].to_numpy(dtype=np.int64),
                                          catalog)
    return out


def tail_from_frequencies(counts: np.ndarray, entities: np.ndarray, n_catalog: int | None = None) -> dict[str, Any]:
    """``entities[i]`` customers (or products) have ``counts[i]`` events each: the tail's summary (pure)."""
    order = np.argsort(-counts, kind="stable")
    counts, entities = np.asarray(counts)[order], np.asarray(entities)[order]
    n = int(entities.sum())
    total = int((counts * entities).sum())
    out: dict[str, Any] = {"n": n, "events": total}
    if n_catalog is not None:
        out["catalog"] = int(n_catalog)
    if n == 0:
        return out
    top = max(1, math.ceil(TOP_SHARE * n))
    before = np.concatenate([[0], np.cumsum(entities)[:-1]])  # entities ranked above each count's group
    taken = np.clip(top - before, 0, entities)  # how many of each group are in the top
    cum = np.cumsum(entities)
    ranks = np.unique(np.round(np.geomspace(1, n, num=min(n, CURVE_POINTS))).astype(np.int64))
    at = counts[np.searchsorted(cum, ranks)]  # the count of the entity at each rank (1 = the most events)
    bins = np.floor(np.log2(counts)).astype(np.int64)
    hist = pd.DataFrame({"bin": bins, "entities": entities, "events": counts * entities}).groupby("bin").sum()
    median = int(counts[np.searchsorted(cum, n - math.ceil(n / 2) + 1)])
    out.update(top_fraction=TOP_SHARE, top=top, top_share=round(float((taken * counts).sum()) / total, 4), max=int(counts[0]),
               median=median, curve={"rank": ranks.tolist(), "events": at.astype(int).tolist()},
               hist={"lo": [int(2**b) for b in hist.index], "hi": [int(2 ** (b + 1) - 1) for b in hist.index],
                     "entities": hist["entities"].astype(int).tolist(), "events": hist["events"].astype(int).tolist()})
    return out


def _period_start(ts: pd.Timestamp, grain: str) -> pd.Timestamp:
    day = ts.normalize()
    if grain == "month":
        return day.replace(day=1)
    return day - pd.Timedelta(days=day.weekday()) if grain == "week" else day


def best_sellers(events, products, kind: str, first: pd.Timestamp, last: pd.Timestamp, *, top_n: int = TOP_SELLERS,
                 periods: int = SELLER_PERIODS) -> dict[str, Any]:
    """The ``top_n`` products by ``kind`` events in each of the newest ``periods`` months up to ``last`` (weeks when
    the events span under 90 days from ``first``, days under 21), ties broken by customers then id; each with its
    catalog title."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    days = (last - first).total_seconds() / 86_400
    grain = "month" if days >= 90 else "week" if days >= 21 else "day"
    step = pd.DateOffset(months=1) if grain == "month" else pd.Timedelta(days=7 if grain == "week" else 1)
    cutoff = _period_start(last, grain) - (periods - 1) * step
    agg = (events.where((F.col(EVENT_TYPE) == kind) & (F.col(TS) >= F.lit(cutoff.isoformat(sep=" ")).cast("timestamp")))
           .groupBy(F.date_trunc(grain, F.col(TS)).alias("period"), PRODUCT_ID)
           .agg(F.count(F.lit(1)).alias("events"), F.countDistinct(USER_ID).alias("customers"),
                F.sum(VALUE).alias("units")))
    ranked = agg.withColumn("rank", F.row_number().over(
        Window.partitionBy("period").orderBy(F.desc("events"), F.desc("customers"), PRODUCT_ID)))
    top = (F.broadcast(ranked.where(F.col("rank") <= top_n))  # periods x top_n rows: the catalog is not shuffled
           .join(products.select(PRODUCT_ID, TITLE), PRODUCT_ID, "left").toPandas()
           .drop_duplicates(["period", PRODUCT_ID]))
    top["period"] = pd.to_datetime(top["period"])
    out = []
    for start, rows in sorted(top.groupby("period"), key=lambda g: g[0]):
        end = min(start + step - pd.Timedelta(days=1), last.normalize())
        rows = rows.sort_values("rank")
        out.append({"start": start.strftime("%Y-%m-%d"), "end": end.strftime("%Y-%m-%d"), "rows": [
            {"product_id": str(r[PRODUCT_ID]), "title": str(r[TITLE]), "events": int(r["events"]),
             "customers": int(r["customers"]), **({"units": round(float(r["units"]), 2)} if kind != "rating" else {})}
            for r in rows.to_dict("records")]})
    return {"type": kind, "grain": grain, "top": top_n, "periods": out}
