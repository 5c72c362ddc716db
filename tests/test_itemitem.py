"""The item-item Gram matrix: known counts, the max_items cut, and column blocks that add up."""

from __future__ import annotations

import numpy as np
import pandas as pd

from index_builder.itemitem import gram_matrix


def _frame(spark, pairs, weights=None):
    pdf = pd.DataFrame(pairs, columns=["user_idx", "product_idx"])
    pdf["weight"] = weights if weights is not None else 1.0
    return spark.createDataFrame(pdf)


def test_gram_counts_co_buyers_and_keeps_the_most_bought(spark):
    # u0 bought 0,1,2; u1 bought 1,2; u2 bought 2,3 (and returned 0: weight <= 0 is not a purchase)
    pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2), (2, 3), (2, 0)]
    g = gram_matrix(_frame(spark, pairs, [1, 1, 1, 1, 1, 1, 1, -1]), max_items=3)
    assert g.rows.tolist() == [0, 1, 2], "2 (3 buyers) and 1 (2) first; 0 beats 3 on the tie by product row"
    assert g.matrix.tolist() == [[1, 1, 1], [1, 2, 2], [1, 2, 3]]
    assert g.n_users == 3


def test_column_blocks_match_the_dense_product(spark):
    rng = np.random.default_rng(3)
    pairs = {(int(u), int(p)) for u, p in zip(rng.integers(0, 300, 6000), rng.integers(0, 2500, 6000), strict=True)}
    g = gram_matrix(_frame(spark, sorted(pairs)), max_items=2100)  # > 2 blocks of 1,024 columns
    x = np.zeros((300, 2500))
    for u, p in pairs:
        x[u, p] = 1
    dense = x.T @ x
    assert len(g.rows) == 2100
    assert np.array_equal(g.matrix, dense[np.ix_(g.rows, g.rows)])
