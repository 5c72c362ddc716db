"""The item-item model: the Gram matrix (known counts, the max_items cut, column blocks that add up) and EASE."""

from __future__ import annotations

import numpy as np
import pandas as pd

from index_builder.stages.itemitem import PRUNE_BAND, ease_weights, gram_matrix, prune


def _frame(pairs, weights=None):
    pdf = pd.DataFrame(pairs, columns=["user_idx", "product_idx"])
    pdf["weight"] = weights if weights is not None else 1.0
    return pdf


def test_gram_counts_co_buyers_and_keeps_the_most_bought():
    # u0 bought 0,1,2; u1 bought 1,2; u2 bought 2,3 (and returned 0: weight <= 0 is not a purchase)
    pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2), (2, 3), (2, 0)]
    g = gram_matrix(_frame(pairs, [1, 1, 1, 1, 1, 1, 1, -1]), max_items=3)
    assert g.rows.tolist() == [0, 1, 2], "2 (3 buyers) and 1 (2) first; 0 beats 3 on the tie by product row"
    assert g.matrix.tolist() == [[1, 1, 1], [1, 2, 2], [1, 2, 3]]
    assert g.n_users == 3


def test_column_blocks_match_the_dense_product():
    rng = np.random.default_rng(3)
    pairs = {(int(u), int(p)) for u, p in zip(rng.integers(0, 300, 6000), rng.integers(0, 2500, 6000), strict=True)}
    g = gram_matrix(_frame(sorted(pairs)), max_items=2100)  # > 2 blocks of 1,024 columns
    x = np.zeros((300, 2500))
    for u, p in pairs:
        x[u, p] = 1
    dense = x.T @ x
    assert len(g.rows) == 2100
    assert np.array_equal(g.matrix, dense[np.ix_(g.rows, g.rows)])


def test_ease_weights_equal_the_float64_definition():
    """B = I - P diag(1/diag(P)), P = (G + lambda I)^-1: the float32 Cholesky inverse matches np.linalg.inv."""
    rng = np.random.default_rng(7)
    x = (rng.random((400, 300)) < 0.05).astype(np.float64)
    gram = x.T @ x
    for lam in (1.0, 50.0, 800.0):
        p = np.linalg.inv(gram + lam * np.eye(len(gram)))
        expected = p / -np.diag(p)
        np.fill_diagonal(expected, 0.0)
        got = ease_weights(gram, lam)
        assert got.dtype == np.float32 and np.all(np.diag(got) == 0)
        np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max())
    before = gram.copy()
    ease_weights(gram, 50.0)
    assert np.array_equal(gram, before)  # the Gram is reused for the next lambda
    assert ease_weights(np.zeros((0, 0)), 1.0).shape == (0, 0)


def test_prune_keeps_each_rows_largest_weights_by_absolute_value():
    """Row by row, what prune keeps is the top_k of |B| (best first, zeros dropped), as product rows, whatever the
    bands it works in: more rows than two bands and a partial last one, ties, zeros and negative weights."""
    rng = np.random.default_rng(11)
    m, k, n = 2 * PRUNE_BAND + 37, 20, 3 * PRUNE_BAND
    b = np.round(rng.standard_normal((m, m)), 1).astype(np.float32)  # rounded: many ties
    b[rng.random((m, m)) < 0.4] = 0.0
    b[5, :] = 0.0  # a product with no neighbour
    b[7, :k + 3] = 0.5  # ties at the cut
    np.fill_diagonal(b, 0.0)
    rows = np.sort(rng.choice(n, m, replace=False))
    neighbours, weights = prune(b, rows, n, top_k=k)
    assert neighbours.shape == weights.shape == (n, k)
    assert np.all(neighbours[np.setdiff1d(np.arange(n), rows)] == -1)
    for j, r in enumerate(rows):
        kept = neighbours[r] >= 0
        expect = np.sort(np.abs(b[j]))[::-1][:k]
        assert np.array_equal(np.abs(weights[r]), np.where(expect > 0, expect, 0)), j  # the k largest, best first
        cols = np.searchsorted(rows, neighbours[r][kept])
        assert np.array_equal(b[j, cols], weights[r][kept]), j  # each weight is its own column's
        assert len(set(cols.tolist())) == kept.sum() and np.all(weights[r][~kept] == 0)
    assert np.all(neighbours[rows[5]] == -1)
