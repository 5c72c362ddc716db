"""Embedding backends (torch, ONNX int8, CUDA) and the sampled KMeans sweep, on the real model and real texts."""

from __future__ import annotations

import collections
import time

import numpy as np
import pandas as pd
import pytest

from index_builder.core.embedders.base import resolve_backend, resolve_device
from index_builder.core.embedders.factory import make_embedder
from index_builder.core.embedders.onnx_backend import META_FILE, OnnxEmbedder, export_onnx
from index_builder.core.embedders.torch_backend import SentenceTransformerEmbedder
from index_builder.core.errors import ModelFitError
from index_builder.stages.cluster import choose_k, fit_all, sweep_kmeans


def _real_texts(data_dir, n: int = 300) -> list[str]:
    """Catalog texts as the builder embeds them: long (title + description) and short (UCI titles)."""
    if data_dir is None:
        pytest.skip("needs ../shared/data (set CARTWISE_DATA_DIR)")
    cat = pd.read_csv(data_dir / "datacamp-products" / "products_dataset.csv").head(n)
    long = (cat["title"].fillna("") + " " + cat["description"].fillna("")).str.strip().tolist()
    uci = pd.read_parquet(data_dir / "uci-online-retail" / "online_retail_2010-2011.parquet", columns=["Description"])
    short = uci["Description"].dropna().astype(str).drop_duplicates().head(n).str.title().tolist()
    return long + short


@pytest.fixture(scope="module")
def onnx_embedder(tmp_path_factory):
    cache = tmp_path_factory.mktemp("models")
    return OnnxEmbedder(export_onnx(cache=cache), threads=2)


def test_onnx_vectors_match_torch_on_real_texts(onnx_embedder, data_dir):
    texts = _real_texts(data_dir)
    ref = SentenceTransformerEmbedder().encode(texts)
    got = onnx_embedder.encode(texts)
    assert got.shape == ref.shape == (len(texts), 384) and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine = (got * ref).sum(axis=1)
    assert cosine.mean() >= 0.99, cosine.mean()
    assert cosine.min() >= 0.95, (cosine.min(), texts[int(cosine.argmin())])
    # the int8 products are exact on every CPU: on an x86 CPU without VNNI, ONNX Runtime's u8s8 instruction
    # saturates unless session.x64quantprecision is on (the 300 long texts on an AMD EPYC: mean 0.9909, least
    # 0.9811 without it; 0.9939 and 0.9891 with it, as the exact products give on a CPU with VNNI)
    long = cosine[: len(texts) // 2]
    assert long.mean() >= 0.993 and long.min() >= 0.985, (long.mean(), long.min())
    # the order of the inputs (sorted by length inside) does not leak into the result
    assert np.allclose(onnx_embedder.encode(texts[::-1])[::-1], got, atol=1e-5)


def test_the_export_is_a_cached_build_step(onnx_embedder, tmp_path):
    folder = export_onnx(cache=tmp_path)  # a fresh cache exports again ...
    meta = (folder / META_FILE).read_text()
    assert "int8" in meta and "mean pooling" in meta
    start = time.perf_counter()
    assert export_onnx(cache=tmp_path) == folder  # ... and the second call finds it
    assert time.perf_counter() - start < 2.0
    assert onnx_embedder.identity() == {"model": "all-MiniLM-L6-v2", "dim": 384, "backend": "onnx-int8", "device": "cpu"}


def test_the_runtime_settings_are_part_of_the_embedding_caches_key(onnx_embedder, tmp_path):
    """Vectors of the same model file under other runtime settings (the saturating int8 products) are never read
    back from the cache; the identity in the manifest stays the same."""
    from index_builder.core.embedders.factory import with_cache

    plain = OnnxEmbedder(onnx_embedder.folder, threads=2)
    plain.runtime = {}
    path = str(tmp_path / "embeddings.sqlite")
    assert with_cache(onnx_embedder, path).tag != with_cache(plain, path).tag
    assert with_cache(onnx_embedder, path).identity() == plain.identity()


def test_the_driver_and_the_executors_embed_alike(spark, data_dir):
    """A local build of a small catalog embeds in the driver (model preloaded); a big one in the executors."""
    from index_builder.core.embedders.base import encode_chunks
    from index_builder.core.embedders.factory import Preload, local_cores
    from index_builder.stages.embedding import embed_column

    texts = _real_texts(data_dir, 150)
    preload = Preload("minilm", device="cpu", threads=2)
    done = [0]
    driver = encode_chunks(preload.get(), texts, chunk=100, counter=done)
    assert done == [len(texts)] and driver.shape == (len(texts), 384)
    frame = spark.createDataFrame(pd.DataFrame({"i": range(len(texts)), "text": texts})).repartition(3)
    rows = embed_column(frame, SentenceTransformerEmbedder(threads=1), "text", "e").select("i", "e").toPandas()
    executors = np.stack(rows.sort_values("i")["e"].to_numpy()).astype(np.float32)
    assert (driver * executors).sum(axis=1).min() > 0.99999  # the same model; only the batches differ
    with pytest.raises(ValueError, match="unknown embedder"):
        Preload("no-such-model").get()  # the load's error is raised where the build asks for the model
    assert (local_cores("local[3]"), local_cores("local"), local_cores("spark://host:7077")) == (3, 1, None)


def test_backend_and_device_choice():
    assert resolve_device("cpu") == "cpu"
    assert resolve_backend("torch", "cpu") == "torch"
    assert resolve_backend("auto", "cuda") == "torch"
    assert resolve_backend("auto", "cpu") == "measure"  # onnxruntime is in requirements.txt: the build times both
    with pytest.raises(ModelFitError, match="CPU only"):
        resolve_backend("onnx", "cuda")
    with pytest.raises(ValueError, match="unknown embedding backend"):
        resolve_backend("tensorrt", "cpu")
    import torch

    if not torch.cuda.is_available():
        assert resolve_device("auto") == "cpu"
        with pytest.raises(ModelFitError, match="sees no GPU"):
            resolve_device("cuda")


def test_cuda_float16_matches_cpu(data_dir):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no GPU here: the CUDA path runs where torch sees one")
    texts = _real_texts(data_dir, 200)
    gpu = make_embedder("minilm", device="cuda")
    assert gpu.identity()["dtype"] == "float16" and gpu.batch_size >= 512
    cosine = (gpu.encode(texts) * SentenceTransformerEmbedder().encode(texts)).sum(axis=1)
    assert cosine.min() >= 0.999, cosine.min()


THEMES = {
    "candle": ["white pillar candle", "vanilla scented candle", "lavender candle jar", "beeswax candle",
               "tealight candles", "candle holder", "soy wax candle", "birthday candles", "church candle",
               "floating candles"],
    "tea": ["green tea leaves", "earl grey tea bags", "ceramic teapot", "porcelain tea cup", "tea strainer",
            "chamomile tea", "tea caddy", "jasmine tea", "loose leaf black tea", "tea infuser"],
    "bike": ["mountain bike tyre", "bicycle helmet", "bike chain oil", "bicycle pump", "bike lights",
             "bicycle saddle", "bike lock", "bicycle inner tube", "bike bell", "cycling gloves"],
    "garden": ["garden hose", "terracotta flower pot", "garden trowel", "seed tray", "pruning shears",
               "watering can", "garden gloves", "compost bin", "lawn rake", "plant food"],
    "baby": ["baby bib", "baby rattle", "baby blanket", "baby bottle", "nappy bag", "baby sleepsuit",
             "teething ring", "baby bath", "baby socks", "dummy clip"],
    "dog": ["dog collar", "dog lead", "dog food bowl", "dog chew toy", "dog bed", "dog shampoo", "puppy treats",
            "dog harness", "dog coat", "dog whistle"],
}


def test_the_sampled_sweep_picks_the_same_k_as_the_full_sweep(spark, onnx_embedder):
    texts = [t for titles in THEMES.values() for t in titles]
    truth = [theme for theme, titles in THEMES.items() for _ in titles]
    vectors = onnx_embedder.encode(texts)
    chosen = {}
    for sample in (len(texts), 30):  # all 60 vectors, then half of them
        rows, centroids = sweep_kmeans(spark, vectors, k_min=2, k_max=10, seed=42, sample_size=sample)
        k, _ = choose_k(rows)
        labels, _, _, _ = fit_all(vectors, centroids[k])  # the chosen k, fitted on every vector
        majority = sum(collections.Counter(t for t, c in zip(truth, labels, strict=True) if c == cluster)
                       .most_common(1)[0][1] for cluster in set(labels))
        assert majority / len(texts) >= 0.85, (sample, k, labels)  # the clusters are the themes
        chosen[sample] = k
    # within one of the truth, not on one k: on 60 short titles the elbow/silhouette choice between neighbouring ks
    # moves with the vectors' last bits (all vectors / half on an AMD EPYC: torch 7/7, int8 with exact products
    # 7/7; 6/7 when its products saturated, 8/7 with uint8 weights)
    assert all(abs(k - len(THEMES)) <= 1 for k in chosen.values()), chosen


def test_fit_all_converges_from_the_sample_centroids():
    rng = np.random.default_rng(0)
    centres = np.eye(8, 16, dtype=np.float32) * 5
    x = np.concatenate([c + rng.normal(0, 0.3, (200, 16)).astype(np.float32) for c in centres])
    labels, cents, cost, iters = fit_all(x, x[[0, 200, 400, 600, 800, 1000, 1200, 1400]] + 0.5)
    assert len(set(labels.tolist())) == 8 and iters <= 5
    assert all(len(set(labels[i * 200:(i + 1) * 200].tolist())) == 1 for i in range(8))
    assert np.allclose(cents, centres, atol=0.1)


def test_an_onnx_build_carries_its_encoder_and_the_assistant_embeds_queries_with_it(spark, tmp_path):
    from index_builder.core import bundle
    from index_builder.core.bundle_reader import load_bundle
    from index_builder.core.embedders.query import query_encoder
    from index_builder.pipeline import BuildConfig, build

    titles = [t for ts in THEMES.values() for t in ts]
    pd.DataFrame({"sku": [f"S{i}" for i in range(len(titles))], "name": titles}).to_csv(tmp_path / "p.csv", index=False)
    folder = build(BuildConfig(out=str(tmp_path / "out"), products=str(tmp_path / "p.csv"), embed_backend="onnx",
                               mapping={"product_id": "sku", "title": "name"}, k_min=6, k_max=6), spark=spark)
    _, manifest = bundle.verify(folder)
    assert manifest["embedding"]["backend"] == "onnx-int8" and manifest["embedding"]["folder"] == "embedder"
    assert manifest["embedding"]["where"] == "executors"  # the Spark UDF path
    b = load_bundle(folder)
    encode = query_encoder(b)
    vecs = encode(["dog collar", "green tea leaves"])
    carried = OnnxEmbedder(folder / "embedder").encode(["dog collar", "green tea leaves"])
    assert np.array_equal(vecs, carried), "queries go through the bundle's own graph"
    row = b.row_of[f"S{titles.index('dog collar')}"]
    assert float(vecs[0] @ b.embeddings[row]) > 0.9999, "a title typed in the chat lands on its product"
    assert float(vecs[0] @ SentenceTransformerEmbedder().encode(["dog collar"])[0]) < 0.99999, "not torch's vector"


class _Timed:
    """A pure-logic stand-in for a backend: ``seconds`` a text, vectors = ``basis`` plus ``noise``."""

    def __init__(self, backend, seconds, noise=0.0):
        self.model, self.backend, self.seconds, self.noise, self.calls = "m", backend, seconds, noise, 0

    dim = 4

    def encode(self, texts):
        self.calls += 1
        time.sleep(self.seconds * len(texts))
        out = np.tile(np.array([1.0, 0, 0, 0], dtype=np.float32), (len(texts), 1))
        out[:, 1] = self.noise
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def identity(self):
        return {"model": self.model, "dim": 4, "backend": self.backend}


def test_auto_picks_the_backend_that_embeds_the_catalog_soonest_among_good_enough_ones():
    from index_builder.core.embedders.factory import QUICK_S, choose_backend

    sample = [f"text {i}" for i in range(40)]
    torch_, onnx_ = _Timed("sentence-transformers", 0.002), _Timed("onnx-int8", 0.0005)
    exported = []

    def export():
        exported.append(1)
        return onnx_

    # a small catalog: torch's estimate is under QUICK_S, ONNX is never exported
    backend, rec = choose_backend(sample, 1_000, torch_, export)
    assert backend == "torch" and not exported and rec["estimated_s"]["torch"] < QUICK_S
    # a big one: both timed, the faster wins
    backend, rec = choose_backend(sample, 1_000_000, torch_, export)
    assert backend == "onnx" and exported and rec["texts_per_s"]["onnx"] > rec["texts_per_s"]["torch"]
    assert rec["onnx_cosine"]["mean"] == 1.0 and rec["estimated_s"]["onnx"] < rec["estimated_s"]["torch"]
    # a machine where int8 is slower (no int8 dot products): torch
    assert choose_backend(sample, 1_000_000, torch_, lambda: _Timed("onnx-int8", 0.004))[0] == "torch"
    # vectors too far from torch's are not good enough, however fast
    backend, rec = choose_backend(sample, 1_000_000, torch_, lambda: _Timed("onnx-int8", 0.0001, noise=0.5))
    assert backend == "torch" and "onnx" not in rec["estimated_s"] and rec["onnx_cosine"]["mean"] < 0.99
    assert choose_backend([], 10, torch_, export)[0] == "torch"


def test_auto_keeps_the_backend_whose_cache_holds_the_catalog(tmp_path):
    """An already embedded catalog costs nothing on the backend that embedded it: no export, no switch."""
    from index_builder.core.embedders.factory import choose_backend, with_cache

    sample = [f"hand painted mug {i}" for i in range(30)]
    torch_ = SentenceTransformerEmbedder(threads=2)
    path = str(tmp_path / "c.sqlite")
    with_cache(torch_, path).encode(sample)
    backend, rec = choose_backend(sample, 10_000_000, torch_, lambda: pytest.fail("exported"), path)
    assert backend == "torch" and rec == {"sample": 30, "texts": 10_000_000, "cached_share": {"torch": 1.0},
                                          "chosen": "torch"}, "nothing timed"
    # a catalog the ONNX graph embedded before: taken at once, torch never runs
    other = [f"oak side table {i}" for i in range(30)]
    onnx_ = _Timed("onnx-int8", 0.0)
    onnx_.spec = lambda: {"kind": "fake"}
    (tmp_path / "graph").mkdir()
    (tmp_path / "graph" / "model.onnx").write_bytes(b"int8")
    onnx_.folder = str(tmp_path / "graph")  # what the fingerprint hashes for an ONNX embedder
    with_cache(onnx_, path).encode(other)
    never = _Timed("sentence-transformers", 0.0)
    never.encode = lambda texts: pytest.fail("torch was timed")
    never.model_path = str(tmp_path / "graph")
    backend, rec = choose_backend(other, 10_000_000, never, lambda: pytest.fail("exported"), path, lambda: onnx_)
    assert backend == "onnx" and rec["cached_share"] == {"torch": 0.0, "onnx": 1.0}


def test_auto_times_the_real_backends_on_catalog_texts(onnx_embedder, data_dir):
    from index_builder.core.embedders.factory import choose_backend

    texts = _real_texts(data_dir, 64)
    backend, rec = choose_backend(texts, 1_000_000, SentenceTransformerEmbedder(threads=2), lambda: onnx_embedder)
    assert rec["onnx_cosine"]["mean"] >= 0.99 and set(rec["texts_per_s"]) == {"torch", "onnx"}
    assert backend == min(rec["estimated_s"], key=rec["estimated_s"].get)
