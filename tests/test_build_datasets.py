"""Full builds on the real datasets: UCI Online Retail (sampled users) and the catalog-only one."""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd

from index_builder.cli import main
from index_builder.core import bundle


def test_manifest_describes_the_build(uci_bundle):
    folder, m = uci_bundle
    assert m["dataset"] == "online-retail" and m["params"]["sample_users"] == 200
    # auto timed torch on the catalog's titles: seconds, so no ONNX export was tried; a catalog under 50,000
    # products embeds in a local build's driver, with the model it loaded while Spark read the data
    emb = dict(m["embedding"])
    choice, cache = emb.pop("choice"), emb.pop("cache")
    assert emb == {"model": "all-MiniLM-L6-v2", "dim": 384, "backend": "sentence-transformers", "device": "cpu",
                   "where": "driver"}
    assert choice["chosen"] == "torch" and choice["sample"] == 256 and choice["texts"] == m["counts"]["products"]
    if "texts_per_s" in choice:  # timed: torch alone (an earlier build of this run may have filled the cache)
        assert set(choice["texts_per_s"]) == {"torch"} and choice["estimated_s"]["torch"] < 60
    else:
        assert choice["cached_share"]["torch"] >= 0.99
    assert cache["from_cache"] + cache["encoded"] == m["counts"]["products"]
    assert m["kmeans"]["sample"] == m["counts"]["products"] and m["kmeans"]["restarts_used"] == 3
    assert {"python", "spark", "torch", "sentence-transformers", "faiss"} <= set(m["versions"])
    swept, widened = [r["k"] for r in m["kmeans"]["sweep"]], m["kmeans"]["widened"]
    assert swept == list(range(4, (widened[-1][1] if widened else 8) + 1)), "4..8, then (top, 2 x top] while k is the top"
    assert 4 <= m["kmeans"]["k"] <= swept[-1] and (not widened or widened[0] == [9, 16])
    assert "silhouette" in m["kmeans"]["rule"] and "elbow" in m["kmeans"]["rule"]
    assert m["als"]["params"]["rank"] == 16 and m["als"]["implicit_prefs"] is True
    assert {"load", "validate", "embed", "kmeans", "als", "faiss"} <= set(m["timings_s"])
    c = m["counts"]
    assert c["users"] == 200
    assert 3_700 <= c["products"] <= 4_100  # the whole catalog stays, whatever the sample
    assert c["rejected"]["online_retail_lines"]["non_product_stock_code"] > 1_000
    assert c["rejected"]["online_retail_lines"]["non_positive_quantity"] > 100
    assert (folder / "plots" / "kmeans_sweep.png").stat().st_size > 10_000
    expected = {"products.parquet", "embeddings.npy", "faiss.index", "kmeans_centroids.npy", "als_item_factors.npy",
                "als_user_factors.npy", "users.parquet", "interactions.parquet", "plots/kmeans_sweep.png",
                "rejects/online_retail_lines.csv"}
    assert expected <= set(m["files"])
    assert all(len(v) == 64 for v in m["files"].values())


def test_arrays_tables_and_index_agree(uci_bundle):
    folder, m = uci_bundle
    n, k = m["counts"]["products"], m["kmeans"]["k"]
    products = pd.read_parquet(folder / bundle.PRODUCTS)
    assert len(products) == n and products.product_id.is_unique
    assert {"product_id", "title", "description", "category", "price", "cluster", "popularity"} <= set(products.columns)
    assert products.cluster.between(0, k - 1).all() and products.cluster.nunique() == k
    emb = bundle.load_array(folder, bundle.EMBEDDINGS)
    assert emb.dtype == np.float32 and emb.shape == (n, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    index = faiss.read_index(str(folder / bundle.FAISS_INDEX))
    assert index.ntotal == n
    sample = np.arange(0, n, max(1, n // 50))
    _, ids = index.search(emb[sample], 1)
    hits = (ids[:, 0] == sample) | np.isclose(np.einsum("ij,ij->i", emb[ids[:, 0]], emb[sample]), 1.0, atol=1e-5)
    assert hits.all()  # self-lookup (or an exact duplicate text)
    assert bundle.load_array(folder, bundle.CENTROIDS).shape == (k, 384)


def test_als_factors_and_interactions(uci_bundle):
    folder, m = uci_bundle
    users = pd.read_parquet(folder / bundle.USERS)
    item_f = bundle.load_array(folder, bundle.ITEM_FACTORS)
    user_f = bundle.load_array(folder, bundle.USER_FACTORS)
    assert item_f.shape == (m["counts"]["products"], 16) and user_f.shape == (200, 16)
    assert np.isfinite(item_f).all() and np.isfinite(user_f).all()
    assert users.user_idx.tolist() == list(range(200))
    inter = pd.read_parquet(folder / bundle.INTERACTIONS)
    assert set(inter.user_id) == set(users.user_id)
    assert inter.purchased.any() and (inter.weight > 0).mean() > 0.9
    products = pd.read_parquet(folder / bundle.PRODUCTS)
    assert set(inter.product_id) <= set(products.product_id)
    # Products the sample touched have ALS factors; untouched ones are zero rows.
    touched = products.product_id.isin(inter.loc[inter.weight > 0, "product_id"]).to_numpy()
    assert (np.abs(item_f[touched]).sum(axis=1) > 0).all()
    assert (np.abs(item_f[~touched]).sum(axis=1) == 0).all()


def test_catalog_only_dataset(spark, data_dir, tmp_path):
    args = ["build", "--dataset", "datacamp-products", "--out", str(tmp_path), "--k-min", "3", "--k-max", "5"]
    if data_dir:
        args += ["--data-dir", str(data_dir)]
    assert main(args) == 0
    folder, m = bundle.verify(tmp_path)
    assert m["counts"]["products"] == 2000 and m["counts"]["users"] == 0 and m["counts"]["events"] == 0
    assert "skipped" in m["als"] and "no events" in m["als"]["skipped"]
    assert not (folder / bundle.ITEM_FACTORS).exists()
    emb = bundle.load_array(folder, bundle.EMBEDDINGS)
    assert emb.shape == (2000, 384)
    products = pd.read_parquet(folder / bundle.PRODUCTS)
    assert (products.popularity == 0).all() and products.cluster.nunique() == m["kmeans"]["k"]
