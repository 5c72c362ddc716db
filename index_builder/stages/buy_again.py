"""Buy-again: how likely each customer is to buy, in the coming window, each product they have bought before.

A wholesale gift shop's customers restock and a grocery's rebuy weekly: on UCI 43% of the (customer,
product) pairs bought in a test month are repeats. This stage learns, from the data alone, which past
products are due: for each pair, features of its own orders (how many, how regular, how long ago), of
the customer (how many orders, how much of what they buy is a repeat) and of the product (how many of its
buyers bought it again: cake cases are restocked, a doormat is not). A logistic regression on the
standardised features maps them to the probability of another order within a window as long as the
evaluation's test window; it is fitted on the window before the one it predicts, so nothing is hand-set.
The product's and the customer's recent activity (buyers and orders in the last quarter, half and whole
window) carry the season: a gift shop's November restocks what sells in November.

Measured on the fixed UCI protocol (NDCG@10 of a customer's past products ranked by the model, against
everything they bought next; ``/tmp`` experiments recorded in the #22 note): their most frequent products
0.327, the model without the recent-activity features 0.360, with them 0.393; a gradient-boosted
classifier 0.381 (the window before is another season, and the simpler model carries over better);
TIFU-KNN's own and neighbour values as two more features 0.390 (similar customers add nothing the
product's recent buyers do not say already, so they are left out: TIFU-KNN stays a baseline).

An order is a distinct timestamp of a "have" event (one invoice holds many lines at one time). The
published table (``buy_again.parquet``) holds every pair's probability at the newest event, with the
figures a reason quotes ("you ordered this 6 times, about every 30 days; the last was 41 days ago").
Pure pandas and scikit-learn on the driver: the build collects the events for the bundle anyway.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from index_builder.core.constants import EVENT_TYPE, PRODUCT_ID, TS, USER_ID

log = logging.getLogger(__name__)

ORDERS = "orders"
USER_ORDERS = "user_orders"
FIRST = "first_ts"
LAST = "last_ts"
INTERVAL_DAYS = "interval_days"  # mean days between the pair's orders (NaN: one order)
LAST_DAYS = "last_days"  # days from the pair's last order to the time the probability is for
PROBABILITY = "probability"
TABLE_COLUMNS = (USER_ID, PRODUCT_ID, PROBABILITY, ORDERS, INTERVAL_DAYS, LAST_DAYS)  # buy_again.parquet
RECENT_FRACTIONS = (0.25, 0.5, 1.0)  # of the window: how recent "recent buyers" and "recent orders" are
FEATURES = ("log_orders", "log_last_days", "log_span_days", "repeated", "log_due", "log_user_orders",
            "order_share", "log_user_last_days", "user_repeat_rate", "log_product_buyers", "product_repeat_rate",
            *[f"log_{who}_{f}" for f in RECENT_FRACTIONS for who in ("product_buyers", "user_orders")])
MIN_POSITIVES = 20  # repeat orders a window needs before a model is fitted on it (a ratings set has none)
DAY = np.timedelta64(1, "D")


def order_lines(events: pd.DataFrame, had_types: tuple[str, ...], end: dt.datetime) -> pd.DataFrame:
    """The distinct (user, product, ts) of the "have" events before ``end``: one row per product per order."""
    ts = pd.to_datetime(events[TS], utc=True)
    keep = (events[EVENT_TYPE].isin(list(had_types)) & (ts < pd.Timestamp(end))).to_numpy()
    ev = pd.DataFrame({USER_ID: events.loc[keep, USER_ID].astype(str).to_numpy(),
                       PRODUCT_ID: events.loc[keep, PRODUCT_ID].astype(str).to_numpy(),
                       TS: ts[keep].dt.tz_localize(None).to_numpy()}).dropna()
    return ev.drop_duplicates(ignore_index=True)


def order_history(lines: pd.DataFrame, at: dt.datetime, window: dt.timedelta) -> pd.DataFrame:
    """One row per (user, product) of :func:`order_lines`: orders (distinct timestamps), first and last order, the
    user's orders of anything, and the recent ones at ``at``: the product's buyers and the user's orders in the
    last quarter, half and whole ``window`` (a seasonal shop's November restocks what sells in November)."""
    pairs = lines.groupby([USER_ID, PRODUCT_ID], as_index=False, sort=True).agg(
        **{ORDERS: (TS, "size"), FIRST: (TS, "min"), LAST: (TS, "max")})
    recent = {USER_ORDERS: pairs[USER_ID].map(lines.groupby(USER_ID)[TS].nunique()).to_numpy(dtype=np.int64)}
    at_naive = _naive(at)
    for frac in RECENT_FRACTIONS:
        last = lines[lines[TS] >= at_naive - window * frac]
        recent[f"product_buyers_{frac}"] = pairs[PRODUCT_ID].map(last.groupby(PRODUCT_ID)[USER_ID].nunique()).fillna(0).to_numpy()
        recent[f"user_orders_{frac}"] = pairs[USER_ID].map(last.groupby(USER_ID)[TS].nunique()).fillna(0).to_numpy()
    return pairs.assign(**recent)


def _naive(at: dt.datetime) -> pd.Timestamp:
    ts = pd.Timestamp(at)
    return ts.tz_convert(None) if ts.tzinfo else ts


def bought_in(events: pd.DataFrame, had_types: tuple[str, ...], start: dt.datetime, end: dt.datetime | None
              ) -> pd.DataFrame:
    """The distinct (user, product) pairs with a "have" event in [start, end)."""
    ts = pd.to_datetime(events[TS], utc=True)
    keep = events[EVENT_TYPE].isin(list(had_types)) & (ts >= pd.Timestamp(start))
    if end is not None:
        keep &= ts < pd.Timestamp(end)
    return events.loc[keep.to_numpy(), [USER_ID, PRODUCT_ID]].astype(str).drop_duplicates()


def pair_figures(history: pd.DataFrame, at: dt.datetime) -> pd.DataFrame:
    """The history with what a reason quotes: mean days between orders and days since the last one at ``at``."""
    at64 = np.datetime64(_naive(at))
    span = (history[LAST] - history[FIRST]).to_numpy() / DAY
    orders = history[ORDERS].to_numpy()
    interval = np.where(orders > 1, span / np.maximum(orders - 1, 1), np.nan)
    return history.assign(**{INTERVAL_DAYS: interval,
                             LAST_DAYS: np.maximum((at64 - history[LAST].to_numpy()) / DAY, 0.0)})


def features(history: pd.DataFrame, at: dt.datetime) -> np.ndarray:
    """The :data:`FEATURES` of every pair of ``history`` (from :func:`order_history`) at time ``at``."""
    h = pair_figures(history, at)
    orders = h[ORDERS].to_numpy(dtype=np.float64)
    last_days = h[LAST_DAYS].to_numpy()
    span = (h[LAST] - h[FIRST]).to_numpy() / DAY
    repeated = orders > 1
    interval = np.nan_to_num(h[INTERVAL_DAYS].to_numpy(), nan=0.0)
    due = np.where(repeated, np.log1p(last_days) - np.log1p(interval), 0.0)
    by_user = h.groupby(USER_ID, sort=False)
    user_orders = h[USER_ORDERS].to_numpy(dtype=np.float64)
    user_last = by_user[LAST_DAYS].transform("min").to_numpy()
    user_pairs = by_user[ORDERS].transform("size").to_numpy(dtype=np.float64)
    user_repeats = h.assign(_r=repeated).groupby(USER_ID, sort=False)["_r"].transform("sum").to_numpy(dtype=np.float64)
    by_product = h.assign(_r=repeated).groupby(PRODUCT_ID, sort=False)
    buyers = by_product[USER_ID].transform("size").to_numpy(dtype=np.float64)
    product_repeats = by_product["_r"].transform("sum").to_numpy(dtype=np.float64)
    return np.column_stack([
        np.log1p(orders), np.log1p(last_days), np.log1p(span), repeated.astype(np.float64), due,
        np.log1p(user_orders), orders / np.maximum(user_orders, 1.0), np.log1p(user_last),
        (user_repeats + 1) / (user_pairs + 2), np.log1p(buyers), (product_repeats + 1) / (buyers + 2),
        *[np.log1p(h[f"{who}_{f}"].to_numpy(dtype=np.float64)) for f in RECENT_FRACTIONS
          for who in ("product_buyers", "user_orders")],
    ])


def labels(history: pd.DataFrame, bought: pd.DataFrame) -> np.ndarray:
    """1 where the pair of ``history`` is among ``bought`` (:func:`bought_in` of the next window), else 0."""
    key = pd.MultiIndex.from_frame(history[[USER_ID, PRODUCT_ID]])
    return key.isin(pd.MultiIndex.from_frame(bought[[USER_ID, PRODUCT_ID]])).astype(np.int8)


@dataclass
class BuyAgainModel:
    """A fitted classifier and what it was fitted on."""

    classifier: object
    window: dt.timedelta  # the window its labels covered (and its predictions are for)
    fitted_on: dict  # {"features_at", "window_end", "pairs", "positives", "coefficients"}

    def predict(self, history: pd.DataFrame, at: dt.datetime) -> np.ndarray:
        """The probability of each pair of ``history`` (:func:`order_history` at ``at``, over this model's window)
        being bought again in the window after ``at``."""
        if not len(history):
            return np.zeros(0)
        return self.classifier.predict_proba(features(history, at))[:, 1]


def fit(events: pd.DataFrame, had_types: tuple[str, ...], start: dt.datetime, end: dt.datetime,
        seed: int = 42) -> BuyAgainModel | None:
    """The model of the window [start, end): features from before ``start``, labels = bought again in it.
    None when that window holds fewer than :data:`MIN_POSITIVES` repeat orders (nothing to learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    history = order_history(order_lines(events, had_types, start), start, end - start)
    if not len(history):
        return None
    y = labels(history, bought_in(events, had_types, start, end))
    if int(y.sum()) < MIN_POSITIVES or int(y.sum()) == len(y):
        log.info("buy-again: %d repeat orders in %s .. %s: no model", int(y.sum()), f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}")
        return None
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    clf.fit(features(history, start), y)
    coef = clf[-1].coef_[0]
    return BuyAgainModel(clf, end - start, {"features_at": pd.Timestamp(start).isoformat(), "window_end": pd.Timestamp(end).isoformat(),
                               "pairs": len(y), "positives": int(y.sum()),
                               "coefficients": {f: round(float(c), 4) for f, c in zip(FEATURES, coef, strict=True)}})


def predict_table(model: BuyAgainModel, events: pd.DataFrame, had_types: tuple[str, ...], at: dt.datetime
                  ) -> pd.DataFrame:
    """Every (user, product) had before ``at`` with its probability and its figures, most likely first per user."""
    history = order_history(order_lines(events, had_types, at), at, model.window)
    table = pair_figures(history, at).assign(**{PROBABILITY: model.predict(history, at)})
    return table.sort_values([USER_ID, PROBABILITY, LAST], ascending=[True, False, False], kind="stable",
                             ignore_index=True)
