"""Ranking metrics on top-k lists with binary relevance. Pure Python/numpy: no Spark, no bundle.

Definitions (the same as Spark's ``RankingMetrics``, checked against it in the tests):

- precision@k = hits in the first k / k
- recall@k = hits in the first k / |truth|
- hit rate@k (``hr``) = 1 if any of the first k is relevant
- NDCG@k = sum over hits at 0-based position i of 1/log2(i+2), divided by the same sum for
  min(|truth|, k) hits at the top
- MAP@k = sum over hits at position i of precision@(i+1), divided by min(|truth|, k)
- coverage@k = distinct products in all top-k lists / catalog size
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

METRICS = ("precision", "recall", "ndcg", "map", "hr")
KS = (5, 10, 20)


def _hits(ranked: Sequence, truth: set, k: int) -> list[int]:
    return [i for i, item in enumerate(ranked[:k]) if item in truth]


def precision_at_k(ranked: Sequence, truth: set, k: int) -> float:
    return len(_hits(ranked, truth, k)) / k


def recall_at_k(ranked: Sequence, truth: set, k: int) -> float:
    return len(_hits(ranked, truth, k)) / len(truth) if truth else 0.0


def hit_at_k(ranked: Sequence, truth: set, k: int) -> float:
    return 1.0 if _hits(ranked, truth, k) else 0.0


def ndcg_at_k(ranked: Sequence, truth: set, k: int) -> float:
    if not truth:
        return 0.0
    dcg = sum(1.0 / np.log2(i + 2) for i in _hits(ranked, truth, k))
    idcg = sum(1.0 / np.log2(i + 2) for i in range(min(len(truth), k)))
    return float(dcg / idcg)


def average_precision_at_k(ranked: Sequence, truth: set, k: int) -> float:
    if not truth:
        return 0.0
    hits = _hits(ranked, truth, k)
    return float(sum((j + 1) / (i + 1) for j, i in enumerate(hits)) / min(len(truth), k))


_FUNCS = {"precision": precision_at_k, "recall": recall_at_k, "ndcg": ndcg_at_k,
          "map": average_precision_at_k, "hr": hit_at_k}


def summarize(rankings: Mapping[str, Sequence], truth: Mapping[str, set], *, n_catalog: int,
              ks: Iterable[int] = KS) -> dict[str, float]:
    """Mean of every metric at every k over the users in ``truth`` (a missing ranking counts as empty).

    Returns ``{"ndcg@10": ..., "hr@10": ..., "coverage@10": ..., "users": n}``, values rounded to 5 places,
    and ``ndcg@k_se``: the standard error of that mean over the users (how far it moves by who was sampled).
    """
    users = list(truth)
    out: dict[str, float] = {}
    for k in ks:
        for name in METRICS:
            values = [_FUNCS[name](list(rankings.get(u, ())), truth[u], k) for u in users]
            out[f"{name}@{k}"] = round(float(np.mean(values)) if values else 0.0, 5)
            if name == "ndcg":
                se = float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
                out[f"ndcg@{k}_se"] = round(se, 5)
        shown = {item for u in users for item in list(rankings.get(u, ()))[:k]}
        out[f"coverage@{k}"] = round(len(shown) / n_catalog, 5) if n_catalog else 0.0
    out["users"] = len(users)
    return out
