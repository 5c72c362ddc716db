"""A hostile client and a careless operator against the JSON API and the embedding cache: each test is a
defect an adversarial review found (the "Finding" in its docstring says what happened before the fix), kept
so that it stays fixed.

- JSON API: ``open_app`` is the real ``python app.py`` (no login, low turn limits); ``inproc`` is the same JSON
  API (:func:`assistant.json_api.json_routes` over an :class:`~assistant.chat.Assistant` of the tiny MiniLM
  bundle) served by uvicorn in this process, with a reply writer the test can hold (a slow LLM), behind --auth.
- Embedding cache: a stand-in embedder for the cache's own logic, tiny catalogs for builds (Spark, local[2]).
"""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from index_builder.core.embedders.base import Embedder, normalize

slow = pytest.mark.slow


# -- JSON API: the real app ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def open_app(tmp_path_factory):
    """``python app.py`` on the tiny MiniLM bundle, no login, 3 turns a minute per client."""
    from tests.support.minilm_bundle import write_minilm_bundle
    from tests.support.procs import start_app, stop

    root = tmp_path_factory.mktemp("review-open")
    write_minilm_bundle(root)
    env = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", "CARTWISE_AUTH": "",
           "CARTWISE_TURNS_SESSION_PER_MINUTE": "100", "CARTWISE_TURNS_CLIENT_PER_MINUTE": "3"}
    proc, url = start_app(root, root / "app.log", env)
    yield {"url": url, "log": root / "app.log"}
    stop(proc)


def _from(url: str, address: int, **kwargs) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30, transport=httpx.HTTPTransport(local_address=f"127.0.0.{address}"),
                        **kwargs)


@slow
def test_xff_header_does_not_mint_new_clients_for_the_turn_limits(open_app):
    """Finding: uvicorn (run by Gradio with its defaults) trusts X-Forwarded-For from 127.0.0.1, so a caller on the
    loopback (a sidecar, an SSH tunnel, a local proxy that passes the header through) picks its own client key and
    the per-client limit (3 a minute here) never bites."""
    codes = []
    with _from(open_app["url"], 1) as http:
        for i in range(6):
            codes.append(http.post("api/v1/recommend", json={"message": "hello"},
                                   headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code)
    assert codes.count(429) >= 3, codes


@slow
@pytest.mark.parametrize("raw", [b'{"message": "hi \\ud800"}', b'{"message": "hi", "user_id": "\\udfff"}',
                                 b'{"message": "hi", "recently_viewed": ["\\ud83d"]}',
                                 b'{"message": "hi", "session_id": "\\ud800"}'])
def test_a_lone_surrogate_in_the_body_is_a_422_not_a_500(open_app, raw):
    """Finding: JSON allows "\\ud800" escapes; pydantic rejects the string, and FastAPI's 422 echoes the input,
    which cannot be encoded as UTF-8: the server answers 500 and logs a traceback."""
    with _from(open_app["url"], 2) as http:
        out = http.post("api/v1/recommend", content=raw, headers={"content-type": "application/json"})
    assert out.status_code == 422, (out.status_code, out.text[:200])


# -- JSON API: in this process, with a writer the test holds -------------------------------------------------
LOGIN = ("shop", "pa:ss")


class HeldWriter:
    """The template writer, except that a message with "hold" waits for ``release`` (a slow LLM)."""

    def __init__(self) -> None:
        from assistant.writers import TemplateWriter

        self.inner = TemplateWriter()
        self.name = self.inner.name
        self.release = threading.Event()

    def write(self, context):
        for chunk in self.inner.write(context):
            if "hold" in context.message:
                self.release.wait(60)
            yield chunk


@pytest.fixture(scope="module")
def inproc(tmp_path_factory):
    import uvicorn
    from fastapi import FastAPI

    from assistant.chat import Assistant
    from assistant.gate import TurnLimits
    from assistant.json_api import json_routes
    from index_builder.core.bundle_reader import load_bundle
    from tests.support.minilm_bundle import write_minilm_bundle
    from tests.support.procs import free_port

    folder = write_minilm_bundle(tmp_path_factory.mktemp("review-inproc"))
    writer = HeldWriter()
    assistant = Assistant(load_bundle(folder), writer=writer, turn_limits=TurnLimits(100, 1000))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(FastAPI(routes=json_routes(assistant, LOGIN)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}/", "assistant": assistant, "writer": writer}
    writer.release.set()
    server.should_exit = True
    thread.join(10)


def _auth() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(":".join(LOGIN).encode()).decode()}


@slow
def test_without_a_login_the_body_is_not_parsed_validated_or_echoed(inproc):
    """Finding: the login is checked inside the handler, after FastAPI has read, parsed and validated the body, so a
    caller without a login gets 422s that describe (and echo) what it sent instead of a 401."""
    with httpx.Client(base_url=inproc["url"], timeout=30) as http:
        out = http.post("api/v1/recommend", json={"message": 5, "recently_viewed": "x"})
    assert out.status_code == 401, (out.status_code, out.text[:300])


@slow
def test_an_oversized_body_is_refused_before_it_is_parsed(inproc):
    """Finding: no bound on the request body. 5 MiB of JSON (any size: 200 MiB took the real app's peak RSS from
    0.86 to 1.9 GB) is read, parsed, validated, and the 422 echoes all of it back."""
    body = b'{"message": "' + b"x" * (5 << 20) + b'"}'
    with httpx.Client(base_url=inproc["url"], timeout=60) as http:
        out = http.post("api/v1/recommend", content=body, headers={"content-type": "application/json", **_auth()})
    assert out.status_code == 413 and len(out.content) < 10_000, (out.status_code, len(out.content))


@slow
def test_turns_queued_on_one_busy_session_do_not_starve_other_clients(inproc):
    """Finding: a turn waits for its session's lock inside a worker thread, with no timeout. 45 turns on one session
    whose current turn is slow (an LLM) take all 40 of the server's worker threads, and every other client's turn
    waits behind them (with the template writer at 1 s a turn: 10 s for an unrelated client; here: until the slow
    turn ends). The session limit (60 a minute by default) lets one client do this."""
    writer = inproc["writer"]
    writer.release.clear()
    url = inproc["url"]
    with httpx.Client(base_url=url, timeout=30, headers=_auth()) as http:
        sid = http.post("api/v1/recommend", json={"message": "hello"}).json()["session_id"]

    def turn(_):
        with httpx.Client(base_url=url, timeout=90, headers=_auth()) as c:
            return c.post("api/v1/recommend", json={"message": "hold on, candles", "session_id": sid}).status_code

    pool = ThreadPoolExecutor(46)
    try:
        flood = [pool.submit(turn, i) for i in range(46)]
        time.sleep(2)
        with _from(url, 30, headers=_auth()) as other:
            start = time.monotonic()
            try:
                status = other.post("api/v1/recommend", json={"message": "a gift for a tea lover"},
                                    timeout=8).status_code
            except httpx.TimeoutException:
                status = "timed out"
            waited = time.monotonic() - start
    finally:
        writer.release.set()
        for f in flood:
            f.result()
        pool.shutdown()
    assert status == 200 and waited < 5, (status, round(waited, 1))


def _assistant_with_limits(tmp_path, session_per_minute, client_per_minute):
    from assistant.chat import Assistant
    from assistant.gate import TurnLimits
    from index_builder.core.bundle_reader import load_bundle
    from tests.support.minilm_bundle import write_minilm_bundle

    return Assistant(load_bundle(write_minilm_bundle(tmp_path)),
                     turn_limits=TurnLimits(session_per_minute, client_per_minute))


@slow
def test_a_refused_turn_leaves_the_session_as_it_was(tmp_path):
    """Finding: api_stream applies the call to the session (customer, viewed products) in :meth:`api_session`
    before :meth:`admit` refuses the turn: a 429 still changes the conversation."""
    from assistant.gate import TooManyTurns

    assistant = _assistant_with_limits(tmp_path, 1, 0)
    first = assistant.recommend_api("", [], "hello", None, client="ip:a")
    state, _ = assistant.sessions.get(first["session_id"])
    viewed = list(state.viewed)
    with pytest.raises(TooManyTurns):
        assistant.api_stream("", ["C2"], "hi", first["session_id"], client="ip:a")
    assert state.viewed == viewed  # the refused call's views were kept


@slow
def test_a_refused_turn_opens_no_session(tmp_path):
    """Finding: a call without a session id opens a session in :meth:`api_session` before :meth:`admit` refuses
    it: every refused call adds one to the store (and, past the client's cap, evicts one of its live ones)."""
    from assistant.gate import TooManyTurns

    assistant = _assistant_with_limits(tmp_path, 0, 1)
    assistant.recommend_api("", [], "hello", None, client="ip:a")  # the client's one turn this minute
    before = len(assistant.sessions)
    for _ in range(20):
        with pytest.raises(TooManyTurns):
            assistant.api_stream("", [], "hello", None, client="ip:a")
    assert len(assistant.sessions) == before


# -- embedding cache: the cache's own logic ------------------------------------------------------------------
class Fake(Embedder):
    """A stand-in: each text's unit vector from its bytes."""

    model, backend, dim = "fake", "sentence-transformers", 8

    def encode(self, texts):
        return normalize(np.stack([np.random.default_rng(list(t.encode()) or [0]).normal(size=8) for t in texts])
                         ).astype(np.float32)

    def spec(self):
        return {"kind": "fake"}


@pytest.mark.parametrize("stored", ["wrong_dimension", "nan", "zero", "seven_bytes"])
def test_a_bad_cached_vector_is_encoded_again_not_returned(tmp_path, stored):
    """Finding: EmbeddingCache.get_many returns whatever bytes a row holds (np.frombuffer): no check of the
    dimension, of finiteness or of the norm. A row of another length crashes the build with numpy's "all input
    arrays must have the same shape" (or returns (n, 5) vectors when every row is 5 long), a NaN row fails
    every rebuild (check_finite), a zero row is used as it is."""
    from index_builder.core.embedders.cache import CachedEmbedder, EmbeddingCache

    path = str(tmp_path / "c.sqlite")
    cache = EmbeddingCache(path)
    blob = {"wrong_dimension": np.ones(5, np.float32).tobytes(), "nan": np.full(8, np.nan, np.float32).tobytes(),
            "zero": np.zeros(8, np.float32).tobytes(), "seven_bytes": b"\x00" * 7}[stored]
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO vectors VALUES (?, ?)", (cache.key("fake", "t", "b"), blob))
    texts = ["a", "b", "c"]
    try:
        out = CachedEmbedder(Fake(), path, "t").encode(texts)
    except Exception as exc:  # noqa: BLE001 - the finding is that it raises at all
        pytest.fail(f"a bad cached row crashed the encode: {type(exc).__name__}: {exc}")
    np.testing.assert_allclose(out, Fake().encode(texts), atol=1e-6)


# -- embedding cache: the model's fingerprint ----------------------------------------------------------------
@slow
def test_weights_changed_past_the_first_mib_change_the_cache_key(tmp_path):
    """Finding: folder_key hashes each file's size and first MiB only. In MiniLM's model.safetensors the first MiB
    holds the embeddings.* tensors; all six encoder layers start at 47 MB. A model fine-tuned in place with its
    embeddings frozen (or any change to the layers) keeps the size, the first MiB and so the tag: the cache
    serves the old model's vectors as the new one's (and the int8 ONNX export, keyed the same way, is reused)."""
    from index_builder.core.embedders.factory import make_embedder, with_cache
    from index_builder.core.embedders.torch_backend import minilm_path

    model = tmp_path / "my-minilm"
    shutil.copytree(minilm_path(), model)
    cache = str(tmp_path / "c.sqlite")
    before = with_cache(make_embedder(str(model), threads=1), cache)
    old = before.encode(["red enamel mug"])

    weights = model / "model.safetensors"
    with open(weights, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
    begin, end = header["encoder.layer.5.output.dense.weight"]["data_offsets"]
    assert begin + 8 + n > 1 << 20
    layer = np.memmap(weights, dtype=np.float32, mode="r+", offset=8 + n + begin, shape=((end - begin) // 4,))
    layer *= 0.5  # the "fine-tune": same file size, same first MiB
    layer.flush()
    del layer

    after = with_cache(make_embedder(str(model), threads=1), cache)
    fresh = after.inner.encode(["red enamel mug"])
    assert float(old[0] @ fresh[0]) < 0.999  # the model's vectors did change
    served = after.encode(["red enamel mug"])
    assert float(served[0] @ fresh[0]) > 0.9999, ("the cache served the old model's vector", after.tag == before.tag)


# -- embedding cache: builds ---------------------------------------------------------------------------------
def _catalog(path: Path) -> None:
    titles = [f"{c} {k}" for c in ("red", "blue", "green") for k in ("mug", "candle", "lantern", "bowl")]
    pd.DataFrame({"sku": [f"S{i}" for i in range(len(titles))], "name": titles}).to_csv(path, index=False)


def _build(spark, tmp_path, name, **extra):
    from index_builder.pipeline import BuildConfig, build

    cfg = dict(products=str(tmp_path / "p.csv"), mapping={"product_id": "sku", "title": "name"}, k_min=2, k_max=2)
    return build(BuildConfig(out=str(tmp_path / name), **{**cfg, **extra}), spark=spark)


@pytest.mark.parametrize("kind", ["not_sqlite", "a_directory", "cannot_be_created"])
def test_an_unusable_cache_file_does_not_end_the_build_with_a_raw_error(spark, tmp_path, monkeypatch, kind):
    """Finding: a cache that cannot be opened ends the build with sqlite3.DatabaseError "file is not a database",
    sqlite3.OperationalError "unable to open database file" or a raw OSError, none naming the file or the way
    out (--no-embed-cache). A cache is an optimisation: the build should go on without it (and say so), or at
    least stop with a BuilderError that names the file."""
    from index_builder.core import bundle
    from index_builder.core.errors import BuilderError

    _catalog(tmp_path / "p.csv")
    path = {"not_sqlite": tmp_path / "cache.sqlite", "a_directory": tmp_path / "cachedir",
            "cannot_be_created": tmp_path / "a-file" / "cache.sqlite"}[kind]
    if kind == "not_sqlite":
        path.write_bytes(b"this is not a database" * 100)
    elif kind == "a_directory":
        path.mkdir()
    else:
        (tmp_path / "a-file").write_text("a file where the cache's folder should be")
    monkeypatch.setenv("CARTWISE_EMBED_CACHE", str(path))
    try:
        folder = _build(spark, tmp_path, "out")
    except BuilderError as exc:
        assert str(path) in str(exc), exc
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"raw {type(exc).__module__}.{type(exc).__name__}: {exc}")
    else:
        assert np.isfinite(np.load(folder / bundle.EMBEDDINGS)).all()


@pytest.mark.parametrize("backend", ["torch", "onnx"])  # torch embeds in the driver, ONNX in the executors
@pytest.mark.parametrize("stored", ["nan", "wrong_dimension"])
def test_one_bad_cached_row_does_not_fail_every_rebuild(spark, tmp_path, monkeypatch, backend, stored):
    """Finding: the same as test_a_bad_cached_vector_is_encoded_again_not_returned, end to end and on both paths
    (embed_in_executors reads the cache itself, not through CachedEmbedder.encode). A NaN row fails the build with
    ModelFitError "embeddings.npy has 384 non-finite values ...; rebuild with another seed or a larger regParam"
    (advice that cannot help: every rebuild reads the same row), a row of another length with numpy's
    ValueError."""
    from index_builder.core import bundle
    from index_builder.core.embedders.cache import EmbeddingCache

    _catalog(tmp_path / "p.csv")
    path = tmp_path / "cache.sqlite"
    monkeypatch.setenv("CARTWISE_EMBED_CACHE", str(path))
    first = np.load(_build(spark, tmp_path, "a", embed_backend=backend) / bundle.EMBEDDINGS)
    with sqlite3.connect(path) as conn:
        key = conn.execute("SELECT key FROM vectors ORDER BY key LIMIT 1").fetchone()[0]
    bad = np.full(384, np.nan, np.float32) if stored == "nan" else np.ones(8, np.float32)
    EmbeddingCache(str(path)).put_many({key: bad})
    try:
        again = np.load(_build(spark, tmp_path, "b", embed_backend=backend) / bundle.EMBEDDINGS)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"{type(exc).__name__}: {exc}")
    np.testing.assert_allclose(again, first, atol=1e-5)
