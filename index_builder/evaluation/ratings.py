"""Rating prediction error (RMSE) for datasets with explicit ratings, as the ALS tutorials report it.

On the evaluation's own time split: train = the ``rating`` events before the cut-off, test = those from it
on whose user and product both have a train rating (the others are cold starts: counted, not scored).
Three predictors, one table:

- ``global_mean``: the mean train rating;
- ``bias``: the mean plus damped item and user offsets, ``b_i = sum(r - mu) / (n_i + d)`` then
  ``b_u = sum(r - mu - b_i) / (n_u + d)`` (the baseline predictor of Koren's Netflix-prize papers);
- ``explicit_als``: Spark ALS with ``implicitPrefs=False`` on the stars, as the tutorials fit it;
- ``bias_plus_als``: the same ALS fitted on what the bias baseline leaves unexplained, added to it (a
  biased matrix factorisation: plain ALS spends its factors on the offsets the baseline already has).

The damping ``d`` and each ALS's rank and ``regParam`` are chosen on the validation window (the stretch of train
before the test cut-off that the ranking evaluation validates on), then each model is refitted on all of train.
Rank and ``regParam`` are searched one at a time: the ranks of :data:`RANK_GRID` at the tutorials' ``regParam``,
then :data:`REG_GRID` at the best rank (7 fits, not 16; each round's fits run at once). A time split's test users
have few ratings before it, so a low rank can predict them best: the tutorials' fixed rank 10 does worse than the
bias baseline on MovieLens 100K's time split, rank 2 chosen on validation better.

The ranking metrics stay the product's measure; RMSE says how well the ratings themselves are modelled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from index_builder.core.constants import EVENT_TYPE, PRODUCT_ID, TS, USER_ID, VALUE
from index_builder.stages.als import factor_matrix

log = logging.getLogger(__name__)

MIN_RATINGS = 100  # fewer rating events than this: no RMSE (a purchase log has none)
DAMPING_GRID = (0.0, 5.0, 10.0, 25.0)  # ratings' worth of pull towards the mean of the offsets, tried on validation
RANK = 10  # the tutorials' latent factors: where the rank search starts
RANK_GRID = (2, 5, 10, 20)  # ranks tried on validation (at the tutorials' regParam REG)
REG = 0.1  # the tutorials' regParam
REG_GRID = (0.05, 0.1, 0.2, 0.5)  # regParam values tried on validation, at the best rank
MAX_ITER = 10


def ratings_of(events: pd.DataFrame) -> pd.DataFrame:
    """The usable explicit ratings: ``rating`` events with a finite value and a timestamp."""
    r = events[events[EVENT_TYPE] == "rating"]
    out = pd.DataFrame({USER_ID: r[USER_ID].astype(str), PRODUCT_ID: r[PRODUCT_ID].astype(str),
                        VALUE: pd.to_numeric(r[VALUE], errors="coerce").astype("float64"),
                        TS: pd.to_datetime(r[TS], utc=True, errors="coerce")})
    return out[np.isfinite(out[VALUE]) & out[TS].notna()].reset_index(drop=True)


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, dtype=np.float64) - actual) ** 2))) if len(actual) else float("nan")


def warm(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """The test ratings whose user and product both rated / were rated in train."""
    return test[test[USER_ID].isin(set(train[USER_ID])) & test[PRODUCT_ID].isin(set(train[PRODUCT_ID]))]


def bias_predictor(train: pd.DataFrame, damping: float) -> Callable[[pd.DataFrame], np.ndarray]:
    """The damped item-then-user offset baseline fitted on ``train``."""
    mu = float(train[VALUE].mean())
    item = train.assign(d=train[VALUE] - mu).groupby(PRODUCT_ID)["d"].agg(["sum", "count"])
    b_i = item["sum"] / (item["count"] + damping)
    rest = train[VALUE] - mu - train[PRODUCT_ID].map(b_i).fillna(0.0)
    user = train.assign(d=rest).groupby(USER_ID)["d"].agg(["sum", "count"])
    b_u = user["sum"] / (user["count"] + damping)

    def predict(rows: pd.DataFrame) -> np.ndarray:
        return (mu + rows[PRODUCT_ID].map(b_i).fillna(0.0) + rows[USER_ID].map(b_u).fillna(0.0)).to_numpy()

    return predict


def als_predictor(spark: Any, train: pd.DataFrame, reg: float, seed: int,
                  base: Callable[[pd.DataFrame], np.ndarray] | None = None, rank: int = RANK
                  ) -> Callable[[pd.DataFrame], np.ndarray]:
    """Explicit Spark ALS fitted on ``train``'s stars (or, with ``base``, on what ``base`` leaves unexplained,
    and added to it); predicts the rows it can (the others get the mean, or ``base``)."""
    from pyspark.ml.recommendation import ALS

    users = {u: i for i, u in enumerate(sorted(set(train[USER_ID])))}
    items = {p: i for i, p in enumerate(sorted(set(train[PRODUCT_ID])))}
    target = train[VALUE] - base(train) if base is not None else train[VALUE]
    frame = pd.DataFrame({"u": train[USER_ID].map(users).astype("int32"), "i": train[PRODUCT_ID].map(items).astype("int32"),
                          "r": target.astype("float32")})
    blocks = max(2, spark.sparkContext.defaultParallelism)
    model = ALS(rank=rank, maxIter=MAX_ITER, regParam=reg, implicitPrefs=False, userCol="u", itemCol="i", ratingCol="r",
                coldStartStrategy="nan", seed=seed, numUserBlocks=blocks, numItemBlocks=blocks,
                checkpointInterval=-1).fit(spark.createDataFrame(frame))
    U = factor_matrix(model.userFactors, len(users), rank, name="explicit ALS user factors").astype(np.float64)
    V = factor_matrix(model.itemFactors, len(items), rank, name="explicit ALS item factors").astype(np.float64)
    mu = float(train[VALUE].mean())

    def predict(rows: pd.DataFrame) -> np.ndarray:
        u = rows[USER_ID].map(users)
        i = rows[PRODUCT_ID].map(items)
        known = (u.notna() & i.notna()).to_numpy()
        out = base(rows).astype(np.float64) if base is not None else np.full(len(rows), mu)
        out[known] = (out[known] if base is not None else 0.0) + np.einsum("ij,ij->i", U[u[known].astype(int).to_numpy()], V[i[known].astype(int).to_numpy()])
        return out

    return predict


def tune_als(spark: Any, fit: pd.DataFrame, val: pd.DataFrame, seed: int,
             base: Callable[[pd.DataFrame], np.ndarray] | None = None) -> tuple[int, float, list[dict[str, float]]]:
    """(rank, regParam, every fit's validation RMSE): the ranks of :data:`RANK_GRID` at :data:`REG`, then the
    values of :data:`REG_GRID` at the best rank; ties go to the earlier (smaller) value."""
    actual = val[VALUE].to_numpy()
    tried: dict[tuple[int, float], float] = {}

    def round_of(pairs: list[tuple[int, float]]) -> None:
        pairs = [p for p in pairs if p not in tried]
        with ThreadPoolExecutor(max_workers=max(1, len(pairs)), thread_name_prefix="rmse-als") as pool:
            errs = pool.map(lambda p: rmse(als_predictor(spark, fit, p[1], seed, base, rank=p[0])(val), actual), pairs)
            tried.update(zip(pairs, errs, strict=True))

    round_of([(r, REG) for r in RANK_GRID])
    rank = min(RANK_GRID, key=lambda r: tried[(r, REG)])
    round_of([(rank, g) for g in REG_GRID])
    reg = min(REG_GRID, key=lambda g: tried[(rank, g)])
    return rank, reg, [{"rank": r, "reg_param": g, "rmse": round(e, 5)} for (r, g), e in tried.items()]


def rating_errors(spark: Any, events: pd.DataFrame, val_cut, test_cut, *, seed: int = 42,
                  say: Callable[..., None] = lambda *a: None) -> dict[str, Any] | None:
    """The manifest's ``metrics.ratings`` (see the module docstring), or None without enough ratings."""
    r = ratings_of(events)
    if len(r) < MIN_RATINGS or r[VALUE].nunique() < 2:
        return None
    train, test = r[r[TS] < test_cut], r[r[TS] >= test_cut]
    scored = warm(train, test)
    if train.empty or scored.empty:
        return None
    fit, val = train[train[TS] < val_cut], warm(train[train[TS] < val_cut], train[train[TS] >= val_cut])
    rank, reg, errors = RANK, REG, []
    damped: dict[float, float] = {}
    rank_residual, reg_residual, residual = RANK, REG, []
    if len(fit) and len(val):
        rank, reg, errors = tune_als(spark, fit, val, seed)
        damped = {d: rmse(bias_predictor(fit, d)(val), val[VALUE].to_numpy()) for d in DAMPING_GRID}
    damping = min(damped, key=damped.get) if damped else DAMPING_GRID[2]
    if len(fit) and len(val):
        rank_residual, reg_residual, residual = tune_als(spark, fit, val, seed, bias_predictor(fit, damping))
    base = bias_predictor(train, damping)
    actual = scored[VALUE].to_numpy()
    models = {
        "global_mean": rmse(np.full(len(scored), train[VALUE].mean()), actual),
        "bias": rmse(base(scored), actual),
        "explicit_als": rmse(als_predictor(spark, train, reg, seed, rank=rank)(scored), actual),
        "bias_plus_als": rmse(als_predictor(spark, train, reg_residual, seed, base, rank=rank_residual)(scored), actual),
    }
    say("evaluate: RMSE on %d test ratings (%d cold left out): %s; chosen on validation: ALS rank %s regParam %s, "
        "bias damping %s, ALS on the residuals rank %s regParam %s", len(scored), len(test) - len(scored),
        {k: round(v, 4) for k, v in models.items()}, rank, reg, damping, rank_residual, reg_residual)
    return {"test_ratings": len(scored), "cold_left_out": len(test) - len(scored), "train_ratings": len(train),
            "models": {k: round(v, 5) for k, v in models.items()},
            "explicit_als": {"rank": rank, "max_iter": MAX_ITER, "reg_param": reg, "validation_rmse": errors},
            "bias_plus_als": {"rank": rank_residual, "reg_param": reg_residual, "validation_rmse": residual},
            "bias": {"damping": damping, "validation_rmse": {str(k): round(v, 5) for k, v in damped.items()}}}
