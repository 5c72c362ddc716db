"""Ranking metrics on hand-computed examples, and the same numbers from Spark's RankingEvaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from index_builder.evaluation.metrics import (
    average_precision_at_k,
    hit_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    summarize,
)

# Ranking a b c d e; relevant: a, c and z (z is never recommended).
RANKED = ["a", "b", "c", "d", "e"]
TRUTH = {"a", "c", "z"}


def test_precision_recall_hit_by_hand():
    assert precision_at_k(RANKED, TRUTH, 1) == 1.0
    assert precision_at_k(RANKED, TRUTH, 5) == 2 / 5
    assert recall_at_k(RANKED, TRUTH, 2) == 1 / 3
    assert recall_at_k(RANKED, TRUTH, 5) == 2 / 3
    assert hit_at_k(RANKED, TRUTH, 1) == 1.0
    assert hit_at_k(["b", "d"], TRUTH, 2) == 0.0


def test_ndcg_by_hand():
    # hits at positions 0 and 2: 1/log2(2) + 1/log2(4) = 1.5; ideal (3 relevant, k=5): 1 + 1/log2(3) + 1/2
    ideal = 1 + 1 / math.log2(3) + 0.5
    assert ndcg_at_k(RANKED, TRUTH, 5) == pytest.approx(1.5 / ideal)
    # k=2: one hit at position 0; ideal for min(3, 2) = 2 hits: 1 + 1/log2(3)
    assert ndcg_at_k(RANKED, TRUTH, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(["z", "a", "c"], TRUTH, 3) == pytest.approx(1.0)
    assert ndcg_at_k(["b"], TRUTH, 1) == 0.0


def test_map_by_hand():
    # hits at ranks 1 and 3: precisions 1/1 and 2/3, divided by min(|truth|, k) = 3
    assert average_precision_at_k(RANKED, TRUTH, 5) == pytest.approx((1 + 2 / 3) / 3)
    # k=2: one hit at rank 1, divided by min(3, 2) = 2
    assert average_precision_at_k(RANKED, TRUTH, 2) == pytest.approx(0.5)


def test_summarize_means_and_coverage():
    rankings = {"u1": ["a", "b"], "u2": ["b", "x"]}
    truth = {"u1": {"a"}, "u2": {"y"}, "u3": {"a"}}  # u3 got nothing: counts as an empty list
    out = summarize(rankings, truth, n_catalog=10, ks=(2,))
    assert out["users"] == 3
    assert out["hr@2"] == pytest.approx(1 / 3, abs=1e-5)
    assert out["precision@2"] == pytest.approx((0.5 + 0 + 0) / 3, abs=1e-5)
    assert out["coverage@2"] == pytest.approx(3 / 10)  # a, b, x
    # NDCG@2 per user: 1, 0, 0 -> mean 1/3, standard error sd(ddof=1)/sqrt(3) = 0.57735/1.73205
    assert out["ndcg@2_se"] == pytest.approx(np.std([1.0, 0.0, 0.0], ddof=1) / np.sqrt(3), abs=1e-5)
    assert summarize({"u": ["a"]}, {"u": {"a"}}, n_catalog=1, ks=(1,))["ndcg@1_se"] == 0.0  # one user: no spread


def test_agrees_with_spark_ranking_evaluator(spark):
    from pyspark.ml.evaluation import RankingEvaluator

    rows = [([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 3.0, 9.0]), ([4.0, 2.0, 7.0], [7.0]), ([6.0, 8.0], [1.0, 2.0])]
    df = spark.createDataFrame(rows, "prediction array<double>, label array<double>")
    rankings = {str(i): r for i, (r, _) in enumerate(rows)}
    truth = {str(i): set(t) for i, (_, t) in enumerate(rows)}
    ours = summarize(rankings, truth, n_catalog=10, ks=(2, 3, 5))
    for k in (2, 3, 5):
        for name, spark_name in (("ndcg", "ndcgAtK"), ("precision", "precisionAtK"), ("map", "meanAveragePrecisionAtK"),
                                 ("recall", "recallAtK")):
            expected = RankingEvaluator(metricName=spark_name, k=k).evaluate(df)
            assert ours[f"{name}@{k}"] == pytest.approx(expected, abs=1e-5), (name, k)
