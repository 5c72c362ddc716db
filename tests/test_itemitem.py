"""The item-item model: the Gram matrix (known counts, the max_items cut, column blocks that add up) and EASE."""

from __future__ import annotations

import numpy as np
import pandas as pd

from index_builder.stages.itemitem import ease_weights, gram_matrix


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
