"""FAISS index over the unit-norm product embeddings (inner product = cosine similarity)."""

from __future__ import annotations

import numpy as np

KINDS = ("flat", "ivf", "hnsw")


def build_index(embeddings: np.ndarray, kind: str = "flat", *, centroids: np.ndarray | None = None,
                nprobe: int = 3, hnsw_m: int = 32, ef_construction: int = 80):
    """Build the product index; row i of ``embeddings`` becomes FAISS id i.

    - ``flat``: exact ``IndexFlatIP`` (default; fine up to ~50k products).
    - ``ivf``: ``IndexIVFFlat`` whose coarse cells are the KMeans clusters (``centroids``, normalised),
      so a search visits the ``nprobe`` nearest clusters: fast on big catalogs, exact within them.
    - ``hnsw``: ``IndexHNSWFlat`` graph (approximate, slow to build, fast to query).

    Parameters
    ----------
    embeddings : np.ndarray, shape (n, d), float32, unit-norm rows.
    centroids : np.ndarray, shape (k, d), required for ``ivf``.
    """
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    d = x.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        if centroids is None or len(centroids) < 2:
            return build_index(x, "flat")
        cells = np.ascontiguousarray(centroids, dtype=np.float32)
        cells = cells / np.maximum(np.linalg.norm(cells, axis=1, keepdims=True), 1e-12)
        quantizer = faiss.IndexFlatIP(d)
        quantizer.add(cells)
        index = faiss.IndexIVFFlat(quantizer, d, len(cells), faiss.METRIC_INNER_PRODUCT)
        index.is_trained = True  # the cells are the KMeans clusters: nothing to train
        index.nprobe = min(nprobe, len(cells))  # the faiss wrapper keeps `quantizer` referenced
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = 64
    else:
        raise ValueError(f"unknown FAISS index kind {kind!r}; use one of {KINDS}")
    index.add(x)
    return index
