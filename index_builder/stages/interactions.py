"""User-product interactions in pandas: each event's weight and the (user, product) aggregate, as the Spark
build computes them (:func:`index_builder.stages.transforms.event_weights` and ``aggregate_interactions``;
``tests/test_twins.py`` holds the two engines to the same numbers). The evaluation's split and the live
fold-in use these."""

from __future__ import annotations

import numpy as np
import pandas as pd

from index_builder.core.constants import (
    EVENT_TYPE,
    HAD,
    LAST_TS,
    N_EVENTS,
    PRODUCT_ID,
    PURCHASED,
    TS,
    USER_ID,
    VALUE,
    WEIGHT,
)


def weigh(events: pd.DataFrame, weights: dict[str, float]) -> pd.Series:
    """Each event's weight, as :func:`index_builder.stages.transforms.event_weights`: type weight x log1p(quantity),
    a rating counts type weight x rating."""
    value = events[VALUE].astype(float).fillna(1.0).clip(lower=0.0)
    damped = np.where(events[EVENT_TYPE] == "rating", value, np.log1p(value))
    return events[EVENT_TYPE].map(weights).astype(float) * damped


def aggregate(events: pd.DataFrame, weights: dict[str, float], had_types: tuple[str, ...]) -> pd.DataFrame:
    """One row per (user, product), as :func:`index_builder.stages.transforms.aggregate_interactions`."""
    ev = events.assign(**{WEIGHT: weigh(events, weights), PURCHASED: events[EVENT_TYPE] == "purchase",
                          HAD: events[EVENT_TYPE].isin(had_types), N_EVENTS: 1,
                          TS: pd.to_datetime(events[TS], utc=True).dt.tz_localize(None)})
    return ev.groupby([USER_ID, PRODUCT_ID], as_index=False).agg(
        **{WEIGHT: (WEIGHT, "sum"), N_EVENTS: (N_EVENTS, "sum"), PURCHASED: (PURCHASED, "any"),
           HAD: (HAD, "any"), LAST_TS: (TS, "max")})
