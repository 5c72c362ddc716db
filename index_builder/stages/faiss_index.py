"""FAISS index over the unit-norm product embeddings (inner product = cosine similarity)."""

from __future__ import annotations

import numpy as np

KINDS = ("flat", "ivf", "ivfpq", "hnsw")
LARGE = 50_000  # from this many products: auto = ivfpq, and the bundle keeps the vectors as float16
PQ_MIN = 256  # vectors an ivfpq index needs to train its 8-bit codebooks (256 centroids per sub-vector)


def effective_kind(kind: str, n: int, k: int) -> tuple[str, str | None]:
    """The index a request for ``kind`` builds over ``n`` vectors in ``k`` clusters, and why when it differs."""
    if kind not in KINDS:
        raise ValueError(f"unknown FAISS index kind {kind!r}; use one of {KINDS}")
    if kind in ("ivf", "ivfpq") and k < 2:
        return "flat", f"{kind} asked for, but the catalog is one cluster (k = 1): its one cell is a flat index"
    if kind == "ivfpq" and n < PQ_MIN:
        return "ivf", f"ivfpq asked for, but its codebooks need at least {PQ_MIN} products to train ({n} here)"
    return kind, None


def build_index(embeddings: np.ndarray, kind: str = "flat", *, centroids: np.ndarray | None = None,
                labels: np.ndarray | None = None, nprobe: int = 3, hnsw_m: int = 32, ef_construction: int = 80,
                pq_train: int = 50_000, seed: int = 42):
    """Build the product index; row i of ``embeddings`` becomes FAISS id i.

    - ``flat``: exact ``IndexFlatIP`` (default; fine up to ~50k products).
    - ``ivf``: ``IndexIVFFlat`` whose coarse cells are the KMeans clusters (``centroids``, normalised),
      so a search visits the ``nprobe`` nearest clusters: fast on big catalogs, exact within them.
    - ``ivfpq``: the same cells holding product-quantized residuals (d/8 bytes per product instead of 4d):
      approximate scores that pick candidates, which the assistant re-scores exactly from the vectors (stored
      as float16; read as float32 up to ``bundle_reader.FLOAT32_MAX_BYTES``).
      With ``labels`` (the KMeans cluster of each row) every product sits in its own cluster's cell, so a
      search of one cell is a search of one cluster.
    - ``hnsw``: ``IndexHNSWFlat`` graph (approximate, slow to build, fast to query).

    Parameters
    ----------
    embeddings : np.ndarray, shape (n, d), float32, unit-norm rows.
    centroids : np.ndarray, shape (k, d), required for ``ivf``.
    """
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    d = x.shape[1]
    kind, _ = effective_kind(kind, len(x), 0 if centroids is None else len(centroids))
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind in ("ivf", "ivfpq"):
        cells = np.ascontiguousarray(centroids, dtype=np.float32)
        cells = cells / np.maximum(np.linalg.norm(cells, axis=1, keepdims=True), 1e-12)
        quantizer = faiss.IndexFlatIP(d)
        quantizer.add(cells)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, len(cells), faiss.METRIC_INNER_PRODUCT)
            index.is_trained = True  # the cells are the KMeans clusters: nothing to train
        else:
            m = next(m for m in (d // 8, d // 4, d // 2, d) if d % m == 0)
            index = faiss.IndexIVFPQ(quantizer, d, len(cells), m, 8, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            sample = x if len(x) <= pq_train else x[np.sort(rng.choice(len(x), pq_train, replace=False))]
            index.train(sample)  # the coarse cells are given; this trains the residual codebooks only
        index.nprobe = min(nprobe, len(cells))  # the faiss wrapper keeps `quantizer` referenced
        if labels is not None:
            assign = np.ascontiguousarray(labels, dtype=np.int64)
            ids = np.arange(len(x), dtype=np.int64)
            index.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(assign))
            return index
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = 64
    else:
        raise ValueError(f"unknown FAISS index kind {kind!r}; use one of {KINDS}")
    index.add(x)
    return index


def add_vectors(index, vectors: np.ndarray, labels: np.ndarray | None = None) -> None:
    """Append products to an index: their FAISS ids continue from ``index.ntotal``; in an ivf index built
    with cluster cells, each goes into its own cluster's cell (``labels``)."""
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if not len(x):
        return
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and labels is not None:
        ids = np.arange(index.ntotal, index.ntotal + len(x), dtype=np.int64)
        assign = np.ascontiguousarray(labels, dtype=np.int64)
        ivf.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(assign))
    else:
        index.add(x)
