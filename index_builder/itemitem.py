"""The item-item collaborative model: EASE (Steck 2019), "shoppers who bought this also bought".

B = I - P diag(1/diag(P)) with P = (X^T X + lambda I)^-1 and X the binary user x product matrix of
positive interactions; a user's scores are x_u B. Spark selects the products and the (user, product)
pairs; the Gram matrix X^T X (a sparse product) and its inversion run on the driver, so the model
covers at most ``max_items`` products (default 10,000: the Gram and its
inverse take 8 * n^2 bytes each, 800 MB at 10k). Above that it keeps the ``max_items`` products with
the most buyers; the rest are served by ALS and content. Each row of B is pruned to its ``top_k``
largest weights by absolute value, which is what the bundle stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .constants import PRODUCT_IDX, USER_IDX, WEIGHT

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

MAX_ITEMS = 10_000
TOP_K = 256


@dataclass
class Gram:
    """X^T X over the modelled products; ``rows[j]`` is the product row of column j."""

    matrix: np.ndarray  # (m, m) float64
    rows: np.ndarray  # (m,) int64 product rows
    n_users: int


def gram_matrix(interactions: DataFrame, *, max_items: int = MAX_ITEMS) -> Gram:
    """X^T X of the binary matrix of (user_idx, product_idx) pairs with positive weight.

    Spark picks the ``max_items`` most bought products and the distinct pairs; the product itself is a sparse
    matrix product (scipy) on the driver, where the dense m x m result is inverted anyway. The pairs are small
    (one per user and product); ``RowMatrix.computeGramianMatrix`` pickled its dense result inside the JVM,
    which ran a 4 GB driver out of heap at 10,000 products.
    """
    from pyspark.sql import functions as F
    from scipy.sparse import csr_matrix

    pos = interactions.filter(F.col(WEIGHT) > 0).select(USER_IDX, PRODUCT_IDX).distinct()
    counts = pos.groupBy(PRODUCT_IDX).count().orderBy(F.desc("count"), PRODUCT_IDX).limit(max_items).toPandas()
    rows = np.sort(counts[PRODUCT_IDX].to_numpy(dtype=np.int64))
    m = len(rows)
    if m == 0:
        return Gram(np.zeros((0, 0)), rows, 0)
    spark = interactions.sparkSession
    mapping = spark.createDataFrame([(int(r), j) for j, r in enumerate(rows)], f"{PRODUCT_IDX} int, _col int")
    pairs = pos.join(F.broadcast(mapping), PRODUCT_IDX).select(USER_IDX, "_col").toPandas()
    users, user_pos = np.unique(pairs[USER_IDX].to_numpy(), return_inverse=True)
    x = csr_matrix((np.ones(len(pairs)), (user_pos, pairs["_col"].to_numpy())), shape=(len(users), m))
    xt, xc = x.T.tocsr(), x.tocsc()
    matrix = np.empty((m, m), dtype=np.float64)
    for lo in range(0, m, 1024):  # column blocks: never a second dense m x m (or users x m) array
        matrix[:, lo:lo + 1024] = (xt @ xc[:, lo:lo + 1024]).toarray()
    return Gram(matrix, rows, len(users))


def ease_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    """B = I - P diag(1/diag(P)), P = (G + lam I)^-1; the diagonal is zero. (m, m) float64."""
    p = np.linalg.inv(gram + lam * np.eye(len(gram)))
    b = p / (-np.diag(p))
    np.fill_diagonal(b, 0.0)
    return b


def prune(b: np.ndarray, rows: np.ndarray, n_products: int, top_k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """Keep each row's ``top_k`` weights by absolute value, as product rows.

    Returns (neighbours (n_products, k) int32, -1 where empty; weights (n_products, k) float32).
    Row r of both arrays is what having product r adds to the scores of its neighbours.
    """
    k = min(top_k, max(len(rows) - 1, 1))
    neighbours = np.full((n_products, k), -1, dtype=np.int32)
    weights = np.zeros((n_products, k), dtype=np.float32)
    if len(rows) < 2:
        return neighbours, weights
    absb = np.abs(b)
    cols = np.argpartition(-absb, k - 1, axis=1)[:, :k]  # k < m: the row's own column (0) can drop out
    vals = np.take_along_axis(b, cols, axis=1)
    order = np.argsort(-np.abs(vals), axis=1, kind="stable")
    cols, vals = np.take_along_axis(cols, order, axis=1), np.take_along_axis(vals, order, axis=1)
    keep = vals != 0
    neighbours[rows] = np.where(keep, rows[cols], -1)
    weights[rows] = np.where(keep, vals, 0.0)
    return neighbours, weights


def fit_item_item(interactions: DataFrame, n_products: int, lam: float, *, max_items: int = MAX_ITEMS,
                  top_k: int = TOP_K, gram: Gram | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Gram (Spark) -> EASE (driver) -> pruned neighbour arrays, plus the manifest's description."""
    gram = gram if gram is not None else gram_matrix(interactions, max_items=max_items)
    b = ease_weights(gram.matrix, lam) if len(gram.rows) else np.zeros((0, 0))
    neighbours, weights = prune(b, gram.rows, n_products, top_k)
    info = {"model": "ease", "lambda": lam, "items": int(len(gram.rows)), "max_items": max_items,
            "top_k": int(neighbours.shape[1]), "users": gram.n_users}
    return neighbours, weights, info
