"""A hand-made bundle where the right answer is obvious, written with the real bundle writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from index_builder.core import bundle as fmt

THEME_AXIS = {"candle": 0, "mug": 1, "bag": 2, "tea": 3}

# product_id, title, price, theme, vector (before normalisation), buyers
CATALOG = [
    ("C1", "WHITE PILLAR CANDLE", 2.00, "candle", [1, 0.1, 0, 0], 9),
    ("C2", "VANILLA SCENTED CANDLE", 3.00, "candle", [1, 0.05, 0, 0.05], 5),
    ("C3", "LAVENDER CANDLE JAR", 6.00, "candle", [0.95, 0, 0.1, 0], 4),
    ("C4", "BEESWAX CANDLE SET", 12.00, "candle", [0.9, 0, 0, 0.12], 1),
    ("M1", "RED SPOTTY MUG", 4.00, "mug", [0, 1, 0, 0.1], 7),
    ("M2", "BLUE SPOTTY MUG", 4.50, "mug", [0.05, 1, 0, 0.05], 3),
    ("M3", "CERAMIC TEA MUG", 5.00, "mug", [0, 0.8, 0, 0.6], 2),
    ("B1", "JUMBO BAG RED RETROSPOT", 2.00, "bag", [0, 0, 1, 0], 20),
    ("B2", "JUMBO BAG PINK POLKADOT", 2.10, "bag", [0, 0.1, 1, 0], 8),
    ("B3", "LUNCH BAG BLACK SKULL", 1.65, "bag", [0.1, 0, 0.95, 0], 6),
    ("T1", "ENGLISH BREAKFAST TEA TIN", 3.50, "tea", [0, 0.1, 0, 1], 4),
    ("T2", "TEAPOT WITH STRAINER", 8.00, "tea", [0, 0.3, 0, 0.95], 2),
]
# user -> products bought (u_candle also likes bags; u_mug buys mugs)
PURCHASES = {"u_candle": ["C1", "B1"], "u_mug": ["M1", "M2"]}


def fake_encode(texts):
    """Pure-logic stand-in for MiniLM: a text points along the axes of the themes it names."""
    out = np.full((len(texts), 4), 0.05, dtype=np.float32)
    for i, t in enumerate(texts):
        for word, axis in THEME_AXIS.items():
            if word in t.lower():
                out[i, axis] = 1.0
    return out / np.linalg.norm(out, axis=1, keepdims=True)


# a buy-again table (what the build's buy_again stage writes): u_candle restocks the candle, the bag is not due
BUY_AGAIN = pd.DataFrame({"user_id": ["u_candle", "u_candle", "u_mug"], "product_id": ["C1", "B1", "M1"],
                          "probability": [0.8, 0.1, 0.05], "orders": [6, 1, 2], "interval_days": [30.0, float("nan"), 5.0],
                          "last_days": [41.0, 20.0, 200.0]})


def write_tiny_bundle(root: Path, buy_again: pd.DataFrame | None = None, vectors: np.ndarray | None = None,
                      embedding: dict | None = None, manifest: dict | None = None, float16: bool = False) -> Path:
    """The bundle under ``root``; ``buy_again``: also a buy-again table (e.g. :data:`BUY_AGAIN`); ``vectors``
    and ``embedding`` (the manifest's model, dim, backend): other product vectors than the themes' axes;
    ``manifest``: more manifest fields; ``float16``: the vectors stored as a big bundle stores them."""
    import faiss

    n = len(CATALOG)
    emb = np.array([c[4] for c in CATALOG] if vectors is None else vectors, dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    products = pd.DataFrame({
        "product_id": [c[0] for c in CATALOG], "title": [c[1] for c in CATALOG], "description": "",
        "category": "", "price": [c[2] for c in CATALOG],
        "cluster": [THEME_AXIS[c[3]] for c in CATALOG], "popularity": [c[5] for c in CATALOG],
    })
    users = sorted(PURCHASES)
    rows = []
    for u, items in PURCHASES.items():
        for j, pid in enumerate(items):
            rows.append({"user_id": u, "product_id": pid, "weight": 5.0, "n_events": 1, "purchased": True, "had": True,
                         "last_ts": pd.Timestamp("2011-01-01") + pd.Timedelta(days=j),
                         "product_idx": [c[0] for c in CATALOG].index(pid), "user_idx": users.index(u)})
    item_f = np.array([np.eye(4)[THEME_AXIS[c[3]]] for c in CATALOG], dtype=np.float32)
    user_f = np.array([[1.0, 0, 0.6, 0], [0, 1.0, 0, 0.3]], dtype=np.float32)  # u_candle, u_mug

    def fill(folder: Path) -> dict:
        products.to_parquet(folder / fmt.PRODUCTS, index=False)
        fmt.save_array(folder, fmt.EMBEDDINGS, emb.astype(np.float16) if float16 else emb)
        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(emb)
        faiss.write_index(index, str(folder / fmt.FAISS_INDEX))
        pd.DataFrame({"user_id": users, "user_idx": range(len(users))}).to_parquet(folder / fmt.USERS, index=False)
        pd.DataFrame(rows).to_parquet(folder / fmt.INTERACTIONS, index=False)
        fmt.save_array(folder, fmt.ITEM_FACTORS, item_f)
        fmt.save_array(folder, fmt.USER_FACTORS, user_f)
        if buy_again is not None:
            buy_again.to_parquet(folder / fmt.BUY_AGAIN, index=False)
        return {"dataset": "tiny", "params": {"embedder": "fake"}, "counts": {"products": n, "users": 2},
                "embedding": embedding or {"model": "fake-themes", "dim": 4, "backend": "test"},
                "kmeans": {"k": 4}, "als": {"params": {"rank": 4}}, **(manifest or {})}

    return fmt.publish(root, fill)
