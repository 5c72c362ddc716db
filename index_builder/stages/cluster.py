"""KMeans over product embeddings, with k chosen from a sweep by elbow + silhouette."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

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


SAMPLE_SIZE = 20_000  # the sweep fits on at most this many vectors
MAX_ITER = 30  # Lloyd iterations per fit
RESTARTS = 3  # fits per k (seeds seed..seed+n-1), best WSSSE kept
SILHOUETTE_SIZE = 4_000  # the silhouette of every k is measured on at most this many of them


def restarts_for(n: int, restarts: int) -> int:
    """Fewer restarts as the sample grows: every k-means++ start on thousands of vectors lands close to the others."""
    return max(1, min(restarts, math.ceil(restarts * 5_000 / max(1, n))))


def _fit_one(job: tuple[int, int], sample: np.ndarray, max_iter: int) -> tuple[int, int, float, int, np.ndarray]:
    """One k-means++ fit (single-threaded, it runs inside a Spark task): (k, seed, WSSSE, iterations, centroids)."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    k, seed = job
    with threadpool_limits(limits=1):
        km = KMeans(n_clusters=k, n_init=1, max_iter=max_iter, random_state=seed).fit(sample)
    return k, seed, float(km.inertia_), int(km.n_iter_), km.cluster_centers_.astype(np.float32)


def _counted(result, counter):
    if counter is not None:
        counter.add(1)
    return result


def nearest(vectors: np.ndarray, centroids: np.ndarray, chunk: int = 65_536) -> tuple[np.ndarray, float]:
    """Each row's nearest centroid (squared Euclidean) and the total squared distance (WSSSE)."""
    c_norm = (centroids.astype(np.float32) ** 2).sum(axis=1)
    labels = np.empty(len(vectors), dtype=np.int32)
    cost = 0.0
    for lo in range(0, len(vectors), chunk):
        x = vectors[lo:lo + chunk].astype(np.float32)
        d = c_norm[None, :] - 2.0 * (x @ centroids.T)
        labels[lo:lo + chunk] = d.argmin(axis=1)
        cost += float((d.min(axis=1) + (x ** 2).sum(axis=1)).clip(min=0).sum())
    return labels, cost


def sweep_kmeans(
    spark, vectors: np.ndarray, *, k_min: int, k_max: int, seed: int, max_iter: int = MAX_ITER, restarts: int = RESTARTS,
    sample_size: int = SAMPLE_SIZE, silhouette_size: int = SILHOUETTE_SIZE, counter=None,
) -> tuple[list[dict[str, Any]], dict[int, np.ndarray]]:
    """Fit KMeans for each k in [k_min, k_max] on a sample; return sweep rows (by k) and centroids per k.

    The sample (at most ``sample_size`` vectors, seeded) is broadcast once and every (k, restart) fit runs
    as one task of a single Spark job (k-means++ starts, seeds ``seed``, ``seed+1``, ...; the fit with the
    lowest WSSSE is kept per k). In local mode the executors' cores are the driver's, so the same fits run in
    a thread pool of as many threads on the driver instead (sklearn's Lloyd iterations release the GIL): the
    same results without a job's worker start-up and broadcast (UCI k=2..20: 4.0 s instead of 8.2 s).
    The cosine silhouette of each k is exact on a seeded sub-sample of at most ``silhouette_size`` vectors,
    from one distance matrix shared by every k. :func:`fit_all` then
    fits the chosen k on all vectors.
    """
    from sklearn.metrics import silhouette_score

    from index_builder.core.embedders.base import normalize

    n = len(vectors)
    rng = np.random.default_rng(seed)
    sample = vectors if n <= sample_size else vectors[np.sort(rng.choice(n, sample_size, replace=False))]
    sil_rows = np.sort(rng.choice(len(sample), min(silhouette_size, len(sample)), replace=False))
    ks = list(range(k_min, min(k_max, len(sample) - 1) + 1))
    tries = restarts_for(len(sample), restarts)
    jobs = [(k, seed + r) for k in ks for r in range(tries)]
    sc = spark.sparkContext
    data = np.ascontiguousarray(sample, dtype=np.float32)
    if sc.master.startswith("local"):
        from concurrent.futures import ThreadPoolExecutor

        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=sc.defaultParallelism) as pool:
            fits = list(pool.map(lambda job: _counted(_fit_one(job, data, max_iter), counter), jobs))
    else:
        shared = sc.broadcast(data)
        try:
            fits = (sc.parallelize(jobs, len(jobs))
                    .map(lambda job, mi=max_iter: _counted(_fit_one(job, shared.value, mi), counter)).collect())
        finally:
            shared.unpersist()
    best: dict[int, tuple] = {}
    for fit in fits:  # in job order: ties keep the lower seed
        if fit[0] not in best or fit[2] < best[fit[0]][2]:
            best[fit[0]] = fit
    sil_x = sample[sil_rows]
    unit = normalize(sil_x)
    distances = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    np.fill_diagonal(distances, 0.0)
    rows = []
    for k in ks:
        _, s, cost, iters, centroids = best[k]
        labels, _ = nearest(sil_x, centroids)
        sil = float(silhouette_score(distances, labels, metric="precomputed")) if len(set(labels)) > 1 else -1.0
        rows.append({"k": k, "wssse": cost, "silhouette": sil, "iterations": iters, "seed": s})
        log.debug("k=%d wssse=%.2f silhouette=%.4f", k, cost, sil)
    return rows, {k: best[k][4] for k in ks}


def fit_all(vectors: np.ndarray, centroids: np.ndarray, *, max_iter: int = MAX_ITER,
            tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Lloyd iterations on every vector from the sample's centroids: (labels, centroids, WSSSE, iterations).

    Stops when fewer than ``tol`` of the labels move. An emptied cluster keeps its old centroid.
    """
    from scipy.sparse import csr_matrix

    centroids = centroids.astype(np.float32).copy()
    labels, cost = nearest(vectors, centroids)
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        counts = np.bincount(labels, minlength=len(centroids))
        members = csr_matrix((np.ones(len(labels), dtype=np.float32), (labels, np.arange(len(labels)))),
                             shape=(len(centroids), len(labels)))
        sums = members @ vectors
        filled = counts > 0
        centroids[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
        new, cost = nearest(vectors, centroids)
        moved = int((new != labels).sum())
        labels = new
        if moved <= tol * len(vectors):
            break
    return labels, centroids, cost, iterations
