"""The local embedding cache (index_builder.core.embedders.cache): a rebuild embeds only texts it has not met."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from index_builder.core.embedders.base import Embedder, normalize
from index_builder.core.embedders.cache import CachedEmbedder, EmbeddingCache, default_cache, fingerprint


class Counting(Embedder):
    """A pure-logic stand-in: each text's vector from its hash; counts what it was asked to encode."""

    model, backend = "counting", "sentence-transformers"

    def __init__(self) -> None:
        self.asked: list[str] = []

    @property
    def dim(self) -> int:
        return 8

    def encode(self, texts):
        self.asked += list(texts)
        return normalize(np.stack([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=8) for t in texts]))

    def spec(self):
        return {"kind": "counting"}


def test_a_second_encode_reads_the_cache_and_a_changed_text_alone_is_encoded(tmp_path):
    inner = Counting()
    texts = [f"product {i}" for i in range(50)] + ["product 3"]  # a repeated text is one vector
    first = CachedEmbedder(inner, str(tmp_path / "c.sqlite"), "tag1")
    a = first.encode(texts)
    assert len(inner.asked) == 50 and first.hits == 0
    again = CachedEmbedder(inner, str(tmp_path / "c.sqlite"), "tag1")  # a new build, the same file
    b = again.encode(texts)
    assert np.array_equal(a, b) and len(inner.asked) == 50 and again.hits == 51
    changed = texts[:-2] + ["product 49, now in blue"]
    c = again.encode(changed)
    assert inner.asked[50:] == ["product 49, now in blue"] and again.encoded == 1
    assert np.array_equal(c[:49], a[:49])
    # another model, backend or library version (another tag) never reads these vectors
    other = CachedEmbedder(inner, str(tmp_path / "c.sqlite"), "tag2")
    other.encode(texts[:5])
    assert other.hits == 0 and len(inner.asked) == 56
    assert again.encode([]).shape == (0, 8)


def test_the_fingerprint_follows_the_model_files_the_identity_and_the_libraries(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x00" * 100)
    ident = {"model": "m", "dim": 8, "backend": "sentence-transformers", "device": "cpu"}
    base = fingerprint(ident, model, ("numpy",))
    assert fingerprint(ident, model, ("numpy",)) == base
    assert fingerprint({**ident, "device": "cuda", "dtype": "float16"}, model, ("numpy",)) != base
    assert fingerprint(ident, model, ("numpy", "pandas")) != base
    (model / "weights.bin").write_bytes(b"\x01" * 100)  # retrained weights, same size
    assert fingerprint(ident, model, ("numpy",)) != base


def test_the_cache_file_comes_from_the_environment(tmp_path):
    assert default_cache({"CARTWISE_EMBED_CACHE": str(tmp_path / "x.sqlite")}) == str(tmp_path / "x.sqlite")
    assert default_cache({"CARTWISE_CACHE": str(tmp_path)}) == str(tmp_path / "embeddings.sqlite")


def test_spark_workers_share_one_cache_file(spark, tmp_path):
    """An embedder handed to the executors with its cache: two Python workers read and write one file at once."""
    from index_builder.core.embedders.factory import with_cache
    from index_builder.core.embedders.torch_backend import SentenceTransformerEmbedder
    from index_builder.stages.embedding import embed_column

    texts = [f"hand painted ceramic mug number {i}" for i in range(120)]
    embedder = with_cache(SentenceTransformerEmbedder(threads=1), str(tmp_path / "c.sqlite"))
    assert embedder.spec()["kind"] == "cached" and embedder.identity() == SentenceTransformerEmbedder().identity()
    frame = spark.createDataFrame(pd.DataFrame({"i": range(len(texts)), "text": texts})).repartition(4)

    def run():
        rows = embed_column(frame, embedder, "text", "e").select("i", "e").toPandas()
        return np.stack(rows.sort_values("i")["e"].to_numpy()).astype(np.float32)

    first = run()
    keys = [EmbeddingCache.key(embedder.model, embedder.tag, t) for t in texts]
    stored = EmbeddingCache(embedder.path).get_many(keys)
    assert len(stored) == 120 and np.array_equal(np.stack([stored[k] for k in keys]), first)
    assert np.array_equal(run(), first)


def _catalog(path, n=60, changed=()):
    titles = [f"{c} {k}" for c in ("red", "blue", "green", "white", "black", "pink") for k in
              ("mug", "candle", "lantern", "cushion", "doormat", "teapot", "apron", "bowl", "clock", "vase")][:n]
    titles = [f"{t} (new design)" if i in changed else t for i, t in enumerate(titles)]
    pd.DataFrame({"sku": [f"S{i}" for i in range(n)], "name": titles}).to_csv(path, index=False)


@pytest.mark.parametrize("backend", ["torch", "onnx"])  # torch embeds in the driver, ONNX in the executors
def test_a_rebuild_embeds_only_new_or_changed_texts_and_no_embed_cache_turns_it_off(spark, tmp_path, monkeypatch,
                                                                                      backend):
    from index_builder.core import bundle
    from index_builder.pipeline import BuildConfig, build

    monkeypatch.setenv("CARTWISE_EMBED_CACHE", str(tmp_path / "cache.sqlite"))
    cfg = dict(products=str(tmp_path / "p.csv"), mapping={"product_id": "sku", "title": "name"}, k_min=3, k_max=3,
               embed_backend=backend)

    def once(name, **extra):
        folder = build(BuildConfig(out=str(tmp_path / name), **{**cfg, **extra}), spark=spark)
        rows = pd.read_parquet(folder / bundle.PRODUCTS)["product_id"].tolist()
        return bundle.verify(folder)[1]["embedding"], np.load(folder / bundle.EMBEDDINGS)[np.argsort(rows)]

    _catalog(tmp_path / "p.csv")
    first, v1 = once("a")
    assert first["where"] == ("driver" if backend == "torch" else "executors")
    assert first["cache"] == {"path": str(tmp_path / "cache.sqlite"), "from_cache": 0, "encoded": 60}
    again, v2 = once("b")
    assert again["cache"]["from_cache"] == 60 and again["cache"]["encoded"] == 0
    assert np.array_equal(v1, v2)
    _catalog(tmp_path / "p.csv", changed={7})  # one product's text changed (S7; vectors sorted by product id)
    one, v3 = once("c")
    assert (one["cache"]["from_cache"], one["cache"]["encoded"]) == (59, 1)
    s7 = sorted(f"S{i}" for i in range(60)).index("S7")
    assert np.array_equal(np.delete(v3, s7, axis=0), np.delete(v1, s7, axis=0)) and not np.allclose(v3[s7], v1[s7])
    def rows():  # (not the file's size: a WAL checkpoint when an earlier build's connection closes changes it)
        with sqlite3.connect(tmp_path / "cache.sqlite") as conn:
            return conn.execute("SELECT key, vec FROM vectors ORDER BY key").fetchall()

    before = rows()
    off, v4 = once("d", embed_cache=False)
    assert off["cache"] == "off" and rows() == before
    assert np.allclose(v4, v3, atol=1e-5)
