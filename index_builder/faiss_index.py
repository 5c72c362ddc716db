"""FAISS index over the unit-norm product embeddings (inner product = cosine similarity)."""

from __future__ import annotations

import numpy as np

KINDS = ("flat", "hnsw")


def build_index(embeddings: np.ndarray, kind: str = "flat", *, hnsw_m: int = 32, ef_construction: int = 80):
    """Exact ``IndexFlatIP`` by default; ``hnsw`` (IndexHNSWFlat, inner product) for big catalogs.

    Parameters
    ----------
    embeddings : np.ndarray, shape (n, d), float32, unit-norm rows; row i becomes FAISS id i.
    """
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    d = x.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = 64
    else:
        raise ValueError(f"unknown FAISS index kind {kind!r}; use one of {KINDS}")
    index.add(x)
    return index
