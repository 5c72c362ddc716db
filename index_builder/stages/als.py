"""Implicit-feedback ALS on (user, product, weight) and the factor matrices the bundle stores."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from index_builder.core.bundle import check_finite
from index_builder.core.constants import PRODUCT_IDX, USER_IDX, WEIGHT

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


@dataclass(frozen=True)
class ALSParams:
    rank: int = 32
    reg_param: float = 0.1
    alpha: float = 1.0
    max_iter: int = 10
    seed: int = 42

    def as_dict(self) -> dict:
        return asdict(self)


def train_als(interactions: DataFrame, params: ALSParams):
    """Fit Spark ALS (implicitPrefs) on rows with positive ``weight``; returns the fitted model.

    The user and item blocks are as many as the cores (Spark's default of 10 made each of the 10
    iterations run 10-task stages of a few milliseconds each: twice the time on 2 cores).
    """
    from pyspark.ml.recommendation import ALS

    blocks = max(2, interactions.sparkSession.sparkContext.defaultParallelism)
    als = ALS(numUserBlocks=blocks, numItemBlocks=blocks,
        rank=params.rank, regParam=params.reg_param, alpha=params.alpha, maxIter=params.max_iter,
        seed=params.seed, implicitPrefs=True, nonnegative=False, userCol=USER_IDX, itemCol=PRODUCT_IDX,
        ratingCol=WEIGHT, coldStartStrategy="drop", checkpointInterval=-1,
    )
    return als.fit(interactions.filter(interactions[WEIGHT] > 0))


def factor_matrix(factors: DataFrame, n_rows: int, rank: int, *, name: str) -> np.ndarray:
    """ALS ``userFactors``/``itemFactors`` (id, features) -> dense (n_rows, rank) float32; absent ids are 0."""
    pdf = factors.toPandas()
    out = np.zeros((n_rows, rank), dtype=np.float32)
    if len(pdf):
        ids = pdf["id"].to_numpy()
        out[ids] = np.stack(pdf["features"].to_numpy()).astype(np.float32)
    return check_finite(name, out)
