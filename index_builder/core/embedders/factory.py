"""Which embedder a name, a spec or a local build means: the one place that knows every backend
(torch, ONNX, OpenAI), so the backends import only :mod:`.base` and never each other."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from index_builder.core.embedders.base import DEFAULT_MODEL, Embedder, resolve_device
from index_builder.core.embedders.cache import CachedEmbedder, default_cache, fingerprint
from index_builder.core.embedders.torch_backend import SentenceTransformerEmbedder

_WORKER_CACHE: dict[tuple, Embedder] = {}


def embedder_from_spec(spec: dict[str, Any]) -> Embedder:
    """Rebuild an embedder from its spec, cached per process (one model load per Python worker)."""
    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in _WORKER_CACHE:
        args = {k: v for k, v in spec.items() if k != "kind"}
        if spec["kind"] == "cached":
            _WORKER_CACHE[key] = CachedEmbedder(embedder_from_spec(spec["inner"]), spec["path"], spec["tag"])
        elif spec["kind"] == "openai":
            from index_builder.core.embedders.openai_backend import OpenAIEmbedder

            _WORKER_CACHE[key] = OpenAIEmbedder(**args)
        elif spec["kind"] == "sentence-transformers":
            _WORKER_CACHE[key] = SentenceTransformerEmbedder(**args)
        elif spec["kind"] == "onnx":
            from index_builder.core.embedders.onnx_backend import OnnxEmbedder

            _WORKER_CACHE[key] = OnnxEmbedder(**args)
        else:
            raise ValueError(f"unknown embedder kind {spec['kind']!r}")
    return _WORKER_CACHE[key]


# what a local backend's vectors depend on besides the model's files and its identity
RUNTIME_LIBRARIES = {"sentence-transformers": ("torch", "transformers", "sentence-transformers"),
                     "onnx-int8": ("onnxruntime", "tokenizers")}


def with_cache(embedder: Embedder, path: str | None = None) -> Embedder:
    """``embedder`` behind the embedding cache (:mod:`.cache`; ``path`` default: :func:`.cache.default_cache`),
    keyed by its model files, identity, runtime settings and libraries. The OpenAI embedder caches by itself and is
    returned as it is."""
    if embedder.backend not in RUNTIME_LIBRARIES:
        return embedder
    if isinstance(embedder, CachedEmbedder):
        return embedder
    from index_builder.core.embedders.torch_backend import minilm_path

    folder = getattr(embedder, "folder", None) or getattr(embedder, "model_path", None) or minilm_path()
    runtime = getattr(embedder, "runtime", {})  # settings that change the vectors (Embedder.runtime)
    tag = fingerprint({**embedder.identity(), **runtime}, folder, RUNTIME_LIBRARIES[embedder.backend])
    return CachedEmbedder(embedder, path or default_cache(), tag)


SAMPLE = 256  # catalog texts each backend embeds to be timed (about a second each on 2 cores)
QUICK_S = 60.0  # torch's estimated time below which ONNX is not tried: its first export (30-60 s) and Spark's
# workers loading it would eat what it saves (UCI's 4,000 titles: about 8 s of torch, 20 s on a slower CPU)
GOOD_ENOUGH = (0.99, 0.95)  # the int8 vectors' mean and least cosine to torch's on the sample


FULL = 0.99  # a backend whose cache holds this share of the sample is taken at once: nothing left to time


def timing(embedder: Embedder, texts: list[str]) -> tuple[float, float, np.ndarray]:
    """(seconds of a first run on a few of ``texts``: the model's load when it is not loaded yet, texts per
    second on all of them after it, their vectors)."""
    import time

    start = time.perf_counter()
    embedder.encode(texts[:8])
    loaded = time.perf_counter()
    vectors = embedder.encode(texts)
    return loaded - start, len(texts) / max(time.perf_counter() - loaded, 1e-9), vectors


def _cached_share(embedder: Embedder, texts: list[str], cache_path: str | None) -> float:
    """The share of ``texts`` whose vectors by ``embedder`` the embedding cache holds (0 without a cache)."""
    if cache_path is None or not texts:
        return 0.0
    from index_builder.core.embedders.cache import EmbeddingCache

    cached = with_cache(embedder, cache_path)
    keys = list(dict.fromkeys(EmbeddingCache.key(cached.model, cached.tag, t) for t in texts))
    return len(cached.cache.get_many(keys, cached.dim)) / len(keys)


def choose_backend(sample: list[str], n_texts: int, torch_embedder: Embedder, onnx_embedder: Callable[[], Embedder],
                   cache_path: str | None = None, onnx_if_exported: Callable[[], Embedder | None] | None = None
                   ) -> tuple[str, dict[str, Any]]:
    """``auto`` on the CPU: the backend that embeds this catalog soonest, of those whose vectors are good enough.

    A rebuild first: a backend whose cache holds (:data:`FULL`) the sample's vectors is taken without timing
    anything (torch's, then ONNX's when ``onnx_if_exported`` finds its export). Otherwise both backends are
    timed on ``sample`` (catalog texts): each one's cost is its first run (the model's load, paid again by each
    Spark worker that runs it) plus the texts its cache does not hold over its throughput. When torch's is under
    :data:`QUICK_S` seconds it is kept without exporting ONNX (``onnx_embedder`` exports). ONNX int8 counts only
    when its vectors of the sample are within :data:`GOOD_ENOUGH` cosine of torch's (a model that quantizes
    badly stays on torch). The int8 vectors rank as well as torch's on three datasets (BENCHMARKS.md); the
    speed is the machine's: int8 is 2.3-2.6x torch on a CPU with int8 dot products (AVX-512 VNNI), 1.5-1.7x
    on an AMD EPYC without them (with exact products there: :mod:`.onnx_backend`; saturating ones fell under the
    cosine gate). Returns (backend, the measurements).
    """
    record: dict[str, Any] = {"sample": len(sample), "texts": n_texts}
    if not sample:  # nothing to time: nothing to embed either
        return "torch", {**record, "chosen": "torch"}
    share = {"torch": _cached_share(torch_embedder, sample, cache_path)}
    ready = onnx_if_exported() if share["torch"] < FULL and onnx_if_exported is not None else None
    if ready is not None:
        share["onnx"] = _cached_share(ready, sample, cache_path)
    full = [b for b in ("torch", "onnx") if share.get(b, 0.0) >= FULL]
    if full:
        return full[0], {**record, "cached_share": {b: round(v, 3) for b, v in share.items()}, "chosen": full[0]}
    load, rate = {}, {}
    load["torch"], rate["torch"], reference = timing(torch_embedder, sample)
    cost = {"torch": load["torch"] + n_texts * (1 - share["torch"]) / rate["torch"]}
    if cost["torch"] > QUICK_S:
        onnx = ready or onnx_embedder()
        load["onnx"], rate["onnx"], vectors = timing(onnx, sample)
        share["onnx"] = _cached_share(onnx, sample, cache_path)
        cosine = (vectors * reference).sum(axis=1)
        record["onnx_cosine"] = {"mean": round(float(cosine.mean()), 4), "min": round(float(cosine.min()), 4)}
        if cosine.mean() >= GOOD_ENOUGH[0] and cosine.min() >= GOOD_ENOUGH[1]:
            cost["onnx"] = load["onnx"] + n_texts * (1 - share["onnx"]) / rate["onnx"]
    chosen = min(cost, key=lambda b: (cost[b], b != "torch"))
    record.update({"texts_per_s": {b: round(v, 1) for b, v in rate.items()},
                   "load_s": {b: round(v, 2) for b, v in load.items()},
                   "cached_share": {b: round(v, 3) for b, v in share.items()},
                   "estimated_s": {b: round(v, 1) for b, v in cost.items()}, "chosen": chosen})
    return chosen, record


def local_cores(master: str) -> int | None:
    """The cores of a ``local``, ``local[N]`` or ``local[*]`` master; None for a cluster."""
    import re

    m = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master.strip())
    if not m:
        return None
    return (os.cpu_count() or 1) if m.group(1) == "*" else int(m.group(1) or 1)


class Preload:
    """The local torch embedder, loaded in a background thread while Spark reads and validates the input.

    A local build of a catalog below :data:`.base.DRIVER_MAX` products embeds in the driver with it: loading the
    model (~4 s) in each Python worker of the embedding job, then encoding a few thousand titles, took 13 s
    on UCI; preloaded while the JVM works, the encoding alone takes ~4.5 s on the same two cores. (Encoding
    while Spark validates the events made both slower on 2 cores: the encoding waits for its stage.) A bigger
    catalog (ONNX, or many texts) embeds in the Spark executors and this load was wasted (seconds, once).
    """

    def __init__(self, name: str, *, device: str = "auto", threads: int | None = None, batch_size: int = 64) -> None:
        import threading

        self.embedder: Embedder | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._load, args=(name, device, threads, batch_size),
                                        name="embedder-preload", daemon=True)
        self._thread.start()

    def _load(self, name: str, device: str, threads: int | None, batch_size: int) -> None:
        try:
            embedder = make_embedder(name, backend="torch", device=resolve_device(device), batch_size=batch_size,
                                     threads=threads)
            embedder.encode(["warm up"])
            self.embedder = embedder
        except BaseException as exc:  # noqa: BLE001 - raised in the build's thread by get()
            self.error = exc

    def get(self) -> Embedder:
        """The loaded embedder (waits for the load; raises what the load raised)."""
        self._thread.join()
        if self.error is not None:
            raise self.error
        assert self.embedder is not None
        return self.embedder


def local_model(name: str) -> tuple[str | None, str]:
    """(model folder, None for the packaged MiniLM; model name) of a local ``--embedder``."""
    if name in ("minilm", DEFAULT_MODEL):
        return None, DEFAULT_MODEL
    if os.path.isdir(name):
        return name, os.path.basename(os.path.normpath(name))
    raise ValueError(f"unknown embedder {name!r}: use 'minilm', 'openai' or the folder of a sentence-transformers model")


def make_embedder(name: str = "minilm", *, model: str | None = None, dim: int | None = None, backend: str = "torch",
                  device: str = "cpu", **kwargs: Any) -> Embedder:
    """Factory: ``minilm`` (default, offline), ``openai`` (``model``, ``dim``: any /v1/embeddings server)
    or a path to a sentence-transformers model folder; a local model runs on ``backend`` (``torch`` or
    ``onnx``: exported once to int8, see :mod:`.onnx_backend`) and ``device`` (``cpu`` or ``cuda``)."""
    if name == "openai":
        from index_builder.core.embedders.openai_backend import DEFAULT_OPENAI_MODEL, OpenAIEmbedder

        return OpenAIEmbedder(model or DEFAULT_OPENAI_MODEL, dim, **kwargs)
    path, model_name = local_model(name)
    if backend == "onnx":
        from index_builder.core.embedders.onnx_backend import OnnxEmbedder, export_onnx

        kwargs.pop("batch_size", None)  # ONNX runs one text at a time (see OnnxEmbedder)
        return OnnxEmbedder(export_onnx(path, model=model_name), model=model_name, **kwargs)
    if path is None:
        return SentenceTransformerEmbedder(device=device, **kwargs)
    return SentenceTransformerEmbedder(path, model=model_name, device=device, **kwargs)
