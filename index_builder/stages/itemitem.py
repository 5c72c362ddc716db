"""The item-item collaborative model: EASE (Steck 2019), "shoppers who bought this also bought".

B = I - P diag(1/diag(P)) with P = (X^T X + lambda I)^-1 and X the binary user x product matrix of
positive interactions; a user's scores are x_u B. It runs on the driver, from the (user, product)
pairs the build collects for the bundle: the Gram matrix X^T X (a sparse product) and its inversion
(float32 Cholesky). The model covers at most ``max_items`` products (default 10,000: the Gram takes
8 * n^2 bytes, its inverse 4 * n^2, 1.2 GB at 10k). Above that it keeps the ``max_items`` products
with the most buyers; the rest are served by ALS and content. Each row of B is pruned to its ``top_k``
largest weights by absolute value, which is what the bundle stores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from index_builder.core.constants import PRODUCT_IDX, USER_IDX, WEIGHT

MAX_ITEMS = 10_000
TOP_K = 256
PRUNE_BAND = 256  # rows of B pruned at a time (prune)
DEFAULT_LAMBDA = 200.0  # EASE regularisation of a build; the evaluation tunes it (see evaluation.evaluate)


@dataclass
class Gram:
    """X^T X over the modelled products; ``rows[j]`` is the product row of column j."""

    matrix: np.ndarray  # (m, m) float64
    rows: np.ndarray  # (m,) int64 product rows
    n_users: int


def gram_matrix(interactions: pd.DataFrame, *, max_items: int = MAX_ITEMS) -> Gram:
    """X^T X of the binary matrix of (user_idx, product_idx) pairs with positive weight.

    ``interactions`` is a pandas frame with ``user_idx``, ``product_idx`` and ``weight``: the build's
    interactions, which it collects to the driver for the bundle anyway, or an evaluation split's. The
    ``max_items`` products with the most buyers are kept (ties: the lower product row); the product is a
    sparse matrix product (scipy), built in column blocks so there is never a second dense m x m array.
    """
    from scipy.sparse import csr_matrix

    pos = interactions.loc[interactions[WEIGHT] > 0, [USER_IDX, PRODUCT_IDX]].drop_duplicates()
    items = pos[PRODUCT_IDX].to_numpy(dtype=np.int64)
    products, buyers = np.unique(items, return_counts=True)
    rows = np.sort(products[np.lexsort((products, -buyers))[:max_items]])
    m = len(rows)
    if m == 0:
        return Gram(np.zeros((0, 0)), rows, 0)
    col = np.searchsorted(rows, items)
    kept = (col < m) & (rows[np.minimum(col, m - 1)] == items)
    users, user_pos = np.unique(pos[USER_IDX].to_numpy(dtype=np.int64)[kept], return_inverse=True)
    x = csr_matrix((np.ones(int(kept.sum())), (user_pos, col[kept])), shape=(len(users), m))
    xt, xc = x.T.tocsr(), x.tocsc()
    matrix = np.empty((m, m), dtype=np.float64)
    for lo in range(0, m, 1024):
        matrix[:, lo:lo + 1024] = (xt @ xc[:, lo:lo + 1024]).toarray()
    return Gram(matrix, rows, len(users))


def ease_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    """B = I - P diag(1/diag(P)), P = (G + lam I)^-1; the diagonal is zero. (m, m) float32.

    G + lam I is symmetric positive definite, so P comes from its Cholesky factor (LAPACK potrf + potri:
    a third of the work of a general inverse) in float32, and B overwrites P: ``np.linalg.inv`` in float64
    took 2.5 s on 3,808 products and 29.6 s on 10,000, this 0.5 s and 5.5 s, with one 4 * m^2 array
    instead of two 8 * m^2 ones. With lam >= 1 the matrix is well conditioned: B is within 1e-5 (relative
    to its largest weight) of the float64 result (test).
    """
    from scipy.linalg import lapack

    m = len(gram)
    if m == 0:
        return np.zeros((0, 0), dtype=np.float32)
    a = gram.astype(np.float32)  # a copy (G is reused for the next lambda); symmetric, so a.T is the same matrix
    a[np.diag_indices(m)] += np.float32(lam)
    factor, info = lapack.spotrf(a.T, lower=False, overwrite_a=True, clean=False)  # a.T: Fortran order, no copy
    if info == 0:
        p, info = lapack.spotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: X^T X + {lam} I is not positive definite (LAPACK info {info}); "
                                    "raise the EASE lambda")
    _mirror_upper(p)
    p /= -np.diag(p).copy()  # in place: B is P with each column over minus its diagonal entry
    np.fill_diagonal(p, 0.0)
    return p


def _mirror_upper(p: np.ndarray, block: int = 512) -> None:
    """Copy the upper triangle onto the lower one in place (LAPACK's potri fills only one), by row bands."""
    for lo in range(0, len(p), block):
        hi = lo + block
        p[lo:hi, :lo] = p[:lo, lo:hi].T
        diag = p[lo:hi, lo:hi]
        p[lo:hi, lo:hi] = np.triu(diag) + np.triu(diag, 1).T


def prune(b: np.ndarray, rows: np.ndarray, n_products: int, top_k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """Keep each row's ``top_k`` weights by absolute value, as product rows (``rows``: B's columns, distinct, as
    :func:`gram_matrix` makes them: the bands write their rows from threads).

    Returns (neighbours (n_products, k) int32, -1 where empty; weights (n_products, k) float32).
    Row r of both arrays is what having product r adds to the scores of its neighbours.

    The rows are pruned in bands of :data:`PRUNE_BAND` on a few threads (NumPy's partition lets go of the GIL): each
    row's selection is the same as over the whole matrix at once, which took 2.1 s for 10,000 x 10,000 weights
    (an m x m copy for the absolute values, another for their negation, and m x m int64 indices) against 0.2 s.
    """
    from concurrent.futures import ThreadPoolExecutor

    from index_builder.core.settings import usable_cores

    k = min(top_k, max(len(rows) - 1, 1))
    neighbours = np.full((n_products, k), -1, dtype=np.int32)
    weights = np.zeros((n_products, k), dtype=np.float32)
    if len(rows) < 2:
        return neighbours, weights

    def band(lo: int) -> None:
        part, at = b[lo:lo + PRUNE_BAND], rows[lo:lo + PRUNE_BAND]
        cols = np.argpartition(-np.abs(part), k - 1, axis=1)[:, :k]  # k < m: the row's own column (0) can drop out
        vals = np.take_along_axis(part, cols, axis=1)
        order = np.argsort(-np.abs(vals), axis=1, kind="stable")
        cols, vals = np.take_along_axis(cols, order, axis=1), np.take_along_axis(vals, order, axis=1)
        keep = vals != 0
        neighbours[at] = np.where(keep, rows[cols], -1)
        weights[at] = np.where(keep, vals, 0.0)

    with ThreadPoolExecutor(min(usable_cores(), 4), thread_name_prefix="ease-prune") as pool:
        list(pool.map(band, range(0, len(rows), PRUNE_BAND)))
    return neighbours, weights


def fit_item_item(interactions: pd.DataFrame, n_products: int, lam: float, *, max_items: int = MAX_ITEMS,
                  top_k: int = TOP_K, gram: Gram | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Gram -> EASE -> pruned neighbour arrays, plus the manifest's description (all on the driver)."""
    gram = gram if gram is not None else gram_matrix(interactions, max_items=max_items)
    b = ease_weights(gram.matrix, lam) if len(gram.rows) else np.zeros((0, 0))
    neighbours, weights = prune(b, gram.rows, n_products, top_k)
    info = {"model": "ease", "lambda": lam, "items": int(len(gram.rows)), "max_items": max_items,
            "top_k": int(neighbours.shape[1]), "users": gram.n_users}
    return neighbours, weights, info
