"""KMeans over product embeddings, with k chosen from a sweep by elbow + silhouette."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

K_RULE = (
    "elbow = the k of the WSSSE curve farthest below the straight line from its first to its last point "
    "(kneedle, on min-max normalised axes); chosen k = the highest cosine silhouette among k >= elbow "
    "(ties: the smaller k)"
)


def elbow_k(ks: list[int], wssse: list[float]) -> int:
    """The knee of a decreasing cost curve: the point farthest below the chord from first to last."""
    if len(ks) <= 2:
        return ks[0]
    k0, k1 = ks[0], ks[-1]
    c0, c1 = wssse[0], wssse[-1]
    span_c = (c0 - c1) or 1.0
    best, best_gap = ks[0], float("-inf")
    for k, c in zip(ks, wssse, strict=False):
        x = (k - k0) / (k1 - k0)
        y = (c - c1) / span_c  # 1 at the first point, 0 at the last
        gap = (1.0 - x) - y  # distance below the chord y = 1 - x (up to a constant factor)
        if gap > best_gap:
            best, best_gap = k, gap
    return best


def choose_k(sweep: list[dict[str, Any]]) -> tuple[int, int]:
    """(chosen k, elbow k) from sweep rows ``{k, wssse, silhouette}`` by :data:`K_RULE`."""
    rows = sorted(sweep, key=lambda r: r["k"])
    knee = elbow_k([r["k"] for r in rows], [r["wssse"] for r in rows])
    past = [r for r in rows if r["k"] >= knee]
    best = max(past, key=lambda r: (r["silhouette"], -r["k"]))
    return int(best["k"]), int(knee)


def widen_while_at_edge(sweep_fn: Callable[[int, int], tuple[list[dict[str, Any]], dict[int, Any]]],
                        k_min: int, k_max: int, n_items: int, *, max_widenings: int = 2,
                        say: Callable[..., None] = log.info) -> tuple[list[dict[str, Any]], dict[int, Any], int, int, list]:
    """Sweep [k_min, k_max]; while the chosen k is the top of what was swept, sweep (top, 2 x top] too.

    A chosen k at the edge means the catalog wants more clusters than the range allowed (18k fashion
    articles chose k = 20 = k_max). Returns (rows, models, chosen k, elbow k, the ranges added).
    """
    rows, models = sweep_fn(k_min, k_max)
    k, elbow = choose_k(rows)
    added: list[list[int]] = []
    top = k_max
    while k_min < k_max and k == top and top < n_items - 1 and len(added) < max_widenings:  # k_min == k_max: k is fixed
        lo, hi = top + 1, min(n_items - 1, 2 * top)
        say("kmeans: the best k (%d) is the top of the range, so the sweep widens to k=%d..%d", k, lo, hi)
        more, more_models = sweep_fn(lo, hi)
        rows, top = sorted(rows + more, key=lambda r: r["k"]), hi
        models.update(more_models)
        added.append([lo, hi])
        k, elbow = choose_k(rows)
    return rows, models, k, elbow, added


def sweep_kmeans(
    df: DataFrame, *, features_col: str, k_min: int, k_max: int, seed: int, max_iter: int = 30,
    restarts: int = 3, concurrency: int = 12, progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[int, Any]]:
    """Fit KMeans for each k in [k_min, k_max]; return sweep rows (by k) and the best model per k.

    Each k is fitted ``restarts`` times (seeds ``seed``, ``seed+1``, ...) and the fit with the lowest
    WSSSE is kept: a single k-means|| start often lands in a poor local optimum on small catalogs.
    Fits are small Spark jobs dominated by scheduling overhead, so ``concurrency`` of them run at
    once from driver threads (every fit is seeded, so the result does not depend on it).
    ``df`` should be cached: it is read by every fit and once more per k for the silhouette.
    """
    from concurrent.futures import ThreadPoolExecutor

    from pyspark.ml.clustering import KMeans
    from pyspark.ml.evaluation import ClusteringEvaluator
    from tqdm import tqdm

    ks = list(range(k_min, k_max + 1))
    jobs = [(k, seed + r) for k in ks for r in range(max(1, restarts))]
    bar = tqdm(total=len(jobs) + len(ks), desc="kmeans sweep", unit="fit", disable=not progress, leave=False)

    def fit(job: tuple[int, int]):
        k, s = job
        model = KMeans(k=k, seed=s, maxIter=max_iter, featuresCol=features_col, predictionCol="_cluster").fit(df)
        bar.update(1)
        return k, model

    def silhouette(k: int) -> float:
        evaluator = ClusteringEvaluator(featuresCol=features_col, predictionCol="_cluster", distanceMeasure="cosine")
        value = float(evaluator.evaluate(models[k].transform(df)))
        bar.update(1)
        return value

    models: dict[int, Any] = {}
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool, bar:
        for k, model in pool.map(fit, jobs):  # in job order: ties keep the lower seed
            if k not in models or model.summary.trainingCost < models[k].summary.trainingCost:
                models[k] = model
        sil = dict(zip(ks, pool.map(silhouette, ks), strict=True))
    rows = []
    for k in ks:
        summary = models[k].summary
        rows.append({"k": k, "wssse": float(summary.trainingCost), "silhouette": sil[k],
                     "iterations": int(summary.numIter)})
        log.debug("k=%d wssse=%.2f silhouette=%.4f", k, rows[-1]["wssse"], sil[k])
    return rows, models
