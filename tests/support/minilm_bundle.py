"""The tiny hand-made catalog of :mod:`tests.support.tiny_bundle`, embedded with the real MiniLM model, so that
``python app.py --bundle`` serves it as it serves a built bundle (the query encoder is checked against the
manifest's model and dimension). No Spark: a few seconds to write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from index_builder.core import bundle as fmt
from tests.support.tiny_bundle import CATALOG, PURCHASES, THEME_AXIS


def write_minilm_bundle(root: Path) -> Path:
    """The tiny catalog under ``root`` (a bundle root with ``current``), its vectors from MiniLM."""
    import faiss

    from index_builder.core.embedders.factory import make_embedder

    embedder = make_embedder("minilm")
    n = len(CATALOG)
    emb = np.asarray(embedder.encode([f"{c[1]} {c[3]}" for c in CATALOG]), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [c[0] for c in CATALOG]
    products = pd.DataFrame({
        "product_id": ids, "title": [c[1] for c in CATALOG], "description": "", "category": "",
        "price": [c[2] for c in CATALOG], "cluster": [THEME_AXIS[c[3]] for c in CATALOG],
        "popularity": [c[5] for c in CATALOG],
    })
    users = sorted(PURCHASES)
    rows = [{"user_id": u, "product_id": pid, "weight": 5.0, "n_events": 1, "purchased": True, "had": True,
             "last_ts": pd.Timestamp("2011-01-01") + pd.Timedelta(days=j), "product_idx": ids.index(pid),
             "user_idx": users.index(u)}
            for u in users for j, pid in enumerate(PURCHASES[u])]
    item_f = np.array([np.eye(4)[THEME_AXIS[c[3]]] for c in CATALOG], dtype=np.float32)
    user_f = np.array([[1.0, 0, 0.6, 0], [0, 1.0, 0, 0.3]], dtype=np.float32)  # u_candle, u_mug

    def fill(folder: Path) -> dict:
        products.to_parquet(folder / fmt.PRODUCTS, index=False)
        fmt.save_array(folder, fmt.EMBEDDINGS, emb)
        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb)
        faiss.write_index(index, str(folder / fmt.FAISS_INDEX))
        pd.DataFrame({"user_id": users, "user_idx": range(len(users))}).to_parquet(folder / fmt.USERS, index=False)
        pd.DataFrame(rows).to_parquet(folder / fmt.INTERACTIONS, index=False)
        fmt.save_array(folder, fmt.ITEM_FACTORS, item_f)
        fmt.save_array(folder, fmt.USER_FACTORS, user_f)
        return {"dataset": "tiny-minilm", "params": {"embedder": "minilm", "currency": "GBP"},
                "counts": {"products": n, "users": len(users)},
                "embedding": {"model": embedder.model, "dim": int(emb.shape[1]), "backend": embedder.backend},
                "kmeans": {"k": len(THEME_AXIS)}, "als": {"params": {"rank": 4}}}

    return fmt.publish(root, fill)
