"""Serving a big catalog: the ivfpq index whose cells are the clusters, float16 vectors kept once, and the
product picker's server-side title search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from assistant.recommender import Recommender
from index_builder.core import bundle_reader
from index_builder.core.bundle_reader import assemble_bundle, load_bundle
from index_builder.core.search import ProductSearch, keyword_pattern
from index_builder.stages.faiss_index import build_index
from tests.support.tiny_bundle import PURCHASES, fake_encode, write_tiny_bundle


def _clustered(n: int = 20_000, k: int = 20, d: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32)
    labels = rng.integers(0, k, n)
    x = centres[labels] + rng.normal(0, 0.8, (n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cents = np.stack([x[labels == c].mean(axis=0) for c in range(k)])
    return x, labels, cents


def _bundle(x, labels, index, kind: str):
    n = len(x)
    products = pd.DataFrame({"product_id": [f"P{i}" for i in range(n)], "title": [f"product {i}" for i in range(n)],
                             "price": 1.0, "cluster": labels, "popularity": np.arange(n)[::-1]})
    return assemble_bundle(folder=Path("."), manifest={"faiss": {"kind": kind}}, products=products,
                           embeddings=x.astype(np.float16) if kind == "ivfpq" else x, index=index,
                           users=pd.DataFrame({"user_id": [], "user_idx": []}), interactions=pd.DataFrame())


def test_every_product_sits_in_its_own_clusters_cell():
    x, labels, cents = _clustered()
    index = build_index(x, "ivfpq", centroids=cents, labels=labels)
    invlists = index.invlists
    import faiss

    for c in range(len(cents)):
        ids = faiss.rev_swig_ptr(invlists.get_ids(c), invlists.list_size(c)).copy()
        assert sorted(ids.tolist()) == np.flatnonzero(labels == c).tolist()
    assert index.code_size == 64 // 8, "one byte per 8 dimensions instead of 4 bytes per dimension"


def test_the_cell_search_finds_the_exact_in_cluster_neighbours():
    x, labels, cents = _clustered()
    exact = Recommender(_bundle(x, labels, build_index(x, "flat"), "flat"), encode=None)
    big = _bundle(x, labels, build_index(x, "ivfpq", centroids=cents, labels=labels), "ivfpq")
    assert big.embeddings.dtype == np.float16 and not big.member_embeddings, "one copy of the vectors"
    approx = Recommender(big, encode=None)
    seeds = list(range(0, 2000, 50))
    want = exact._seed_neighbours(seeds, widen=False)
    got = approx._seed_neighbours(seeds, widen=False)
    recall = np.mean([len(set(w.tolist()) & set(g.tolist())) / len(w) for (w, _), (g, _) in zip(want, got, strict=True)])
    assert recall >= 0.9, recall
    for seed, (rows, sims) in zip(seeds, got, strict=True):
        assert seed not in rows.tolist()
        assert all(labels[r] == labels[seed] for r in rows), "neighbours come from the seed's cluster"
        assert sims.tolist() == sorted(sims.tolist(), reverse=True)
        assert np.allclose(sims, [float(x[r] @ x[seed]) for r in rows], atol=2e-3), "scores are exact"
    # the catalog-wide search re-scores its shortlist exactly too
    sims, ids = approx._search(x[:5], 10)
    assert np.allclose(sims, np.einsum("qd,qkd->qk", x[:5], x[ids]), atol=2e-3)


def test_product_search_by_title_words_and_id():
    titles = ["WHITE HANGING HEART T-LIGHT HOLDER", "Red candle", "Candle holder, blue", "Jumbo bag red", "Red candles x3"]
    rank = np.array([1, 3, 2, 4, 5])  # 1 = best seller
    s = ProductSearch(titles, ["A1", "B2", "C3", "D4", "E5"], rank)
    assert s.search("cand") == [2, 1, 4], "the last word is a prefix; best sellers first"
    assert s.search("candle hol") == [2]
    assert s.search("RED") == [1, 3, 4]
    assert s.search("red cand") == [1, 4]
    assert s.search("t-light") == [0]
    assert s.search("d4") == [3], "a product id typed in full"
    assert s.search("zebra") == [] and s.search("  ") == []
    assert s.search("red", limit=2) == [1, 3]


TITLES = ["WHITE HANGING HEART T-LIGHT HOLDER", "Red candle", "Candle holder, blue", "Jumbo bag red", "Red candles x3",
          "CANDLEHOLDER", "candle_stick", "Crème brûlée candles", "toy box", "Toys for boys", "candy jar",
          "SWEET CANDIES", "glass of glasses", "set of 3 bags", "tea-lover mug", "tea lovers tin", "Teacup",
          "HEART-SHAPED T LIGHTS", "lunch bag  red retrospot", "3 red hearts"]


def test_keyword_title_matches_read_off_the_index_equal_the_regex():
    """The keyword filters read the picker's index; what they find must be exactly what the regex finds."""
    s = ProductSearch(TITLES, [f"P{i}" for i in range(len(TITLES))], np.arange(1, len(TITLES) + 1))
    keywords = ["candle", "candles", "CANDLE", "holder", "toy", "toys", "candy", "candies", "glass", "bag", "bags",
                "tea lover", "tea lovers", "t-light", "t light", "crème", "brûlée candle", "heart", "hearts", "3",
                "red", "red retrospot", "lunch bag red", "cup", "candle_stick", "stick", "zebra", "of"]
    for keyword in keywords:
        pattern = keyword_pattern(keyword)
        want = [i for i, t in enumerate(TITLES) if pattern.search(t)]
        assert s.title_matches(keyword).tolist() == want, keyword
        assert s.title_matches(keyword) is s.title_matches(keyword), "kept for the next turn"
    assert s.title_matches("toy").tolist() == [8, 9], "singular finds the plural of a -y word"
    assert s.title_matches("candies").tolist() == [10, 11]
    assert s.title_matches("candle").tolist() == [1, 2, 4, 7], "whole words: not CANDLEHOLDER nor candle_stick"


def test_keyword_filters_scan_titles_widely_and_meanings_among_the_best_sellers():
    """Filters that leave too few candidates scan the best sellers: by title all ``catalog_scan`` of them, by
    meaning only the best-selling ``catalog_scan_meaning`` (a vector costs more to read than a title)."""
    from assistant.config import RecommenderConfig
    from assistant.recommender import Request

    x, labels, _ = _clustered(n=2_000)
    titles = [f"product {i}" for i in range(len(x))]
    titles[1500] = "a lantern"  # far down the best-seller list (row 0 sells best), matched by its title
    b = _bundle_titled(x, labels, titles)
    glow = x[1600] + x[40]  # the keyword "glow" means products 1600 and 40, and neither title says so
    glow /= np.linalg.norm(glow)
    nothing = np.linalg.svd(x, full_matrices=True)[2][-1]  # the direction the products vary least in
    assert np.abs(x @ nothing).max() < 0.5, "no product means 'lantern'"

    def encode(texts):
        return np.stack([glow if t == "glow" else nothing for t in texts]).astype(np.float32)

    rec = Recommender(b, encode, RecommenderConfig(catalog_scan=1_800, catalog_scan_meaning=100))
    content: dict[int, float] = {}
    rec._catalog_candidates(Request(include=["lantern"], seeds=[0]), content)
    assert list(content) == [1500]
    content = {}
    rec._catalog_candidates(Request(include=["glow"], seeds=[0]), content)
    assert 40 in content and 1600 not in content, "by meaning: the best-selling 100 only"
    content = {}
    rec._catalog_candidates(Request(include=["lantern"], seeds=[0], max_price=0.5), content)
    assert content == {}, "every price is 1.0"


def _bundle_titled(x, labels, titles):
    n = len(x)
    products = pd.DataFrame({"product_id": [f"P{i}" for i in range(n)], "title": titles, "price": 1.0,
                             "cluster": labels, "popularity": np.arange(n)[::-1]})
    return assemble_bundle(folder=Path("."), manifest={"faiss": {"kind": "flat"}}, products=products, embeddings=x,
                           index=build_index(x, "flat"), users=pd.DataFrame({"user_id": [], "user_idx": []}),
                           interactions=pd.DataFrame())


def test_item_item_arrays_are_stored_for_the_modelled_products_only(tmp_path):
    from index_builder.core import bundle as fmt

    n, k = 1000, 4
    nb = np.full((n, k), -1, dtype=np.int32)
    wt = np.zeros((n, k), dtype=np.float32)
    nb[[3, 500]] = [[1, 2, -1, -1], [3, 7, 9, 11]]
    wt[[3, 500]] = [[0.5, 0.25, 0, 0], [0.1, 0.2, 0.3, 0.4]]
    fmt.save_item_item(tmp_path, nb, wt)
    assert np.load(tmp_path / fmt.ITEM_NEIGHBOURS).shape == (2, k), "2 rows on disk, not 1,000"
    got_nb, got_wt = fmt.load_item_item(tmp_path, n)
    rows = np.array([0, 3, 500, 999, 3])
    assert np.array_equal(got_nb[rows], nb[rows]) and np.array_equal(got_wt[rows], wt[rows])
    assert got_nb.shape == (n, k)
    full = np.arange(8, dtype=np.int32).reshape(2, 4)  # every product modelled: stored as it is
    (tmp_path / "x").mkdir()
    fmt.save_item_item(tmp_path / "x", full, full.astype(np.float32))
    got, _ = fmt.load_item_item(tmp_path / "x", 2)
    assert isinstance(got, np.ndarray) and np.array_equal(got, full)


def test_float16_vectors_are_widened_once_when_they_fit(tmp_path, monkeypatch):
    """A bundle's float16 vectors are read as float32 (the same values) up to FLOAT32_MAX_BYTES, and stay float16
    past it; the recommendations are the same either way."""
    from assistant.recommender import Request

    folder = write_tiny_bundle(tmp_path / "b", float16=True)
    stored = np.load(folder / "embeddings.npy")
    assert stored.dtype == np.float16
    monkeypatch.setattr(bundle_reader, "WIDEN_ROWS", 5)  # three bands for the 12 products
    wide = load_bundle(folder)
    assert wide.embeddings.dtype == np.float32 and np.array_equal(wide.embeddings, stored.astype(np.float32))
    monkeypatch.setattr(bundle_reader, "FLOAT32_MAX_BYTES", stored.size * 4 - 1)
    narrow = load_bundle(folder)
    assert narrow.embeddings.dtype == np.float16
    assert np.array_equal(wide.vectors([3, 0, 7]), narrow.vectors([3, 0, 7]))
    requests = [Request(seeds=[0], seed_kind="viewed"), Request(seeds=[4, 8], seed_kind="viewed", query="tea"),
                *(Request(user_id=u) for u in PURCHASES)]
    for req in requests:
        got = [(r.row, r.score) for r in Recommender(wide, fake_encode).recommend(req)]
        assert got and got == [(r.row, r.score) for r in Recommender(narrow, fake_encode).recommend(req)], req
