"""Which embedder a name, a spec or a local build means: the one place that knows every backend
(torch, ONNX, OpenAI), so the backends import only :mod:`.base` and never each other."""

from __future__ import annotations

import json
import os
from typing import Any

from index_builder.core.embedders.base import DEFAULT_MODEL, ONNX_FROM, Embedder, resolve_device
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
    keyed by its model files, identity and runtime libraries. The OpenAI embedder caches by itself and is
    returned as it is."""
    if embedder.backend not in RUNTIME_LIBRARIES:
        return embedder
    if isinstance(embedder, CachedEmbedder):
        return embedder
    from index_builder.core.embedders.torch_backend import minilm_path

    folder = getattr(embedder, "folder", None) or getattr(embedder, "model_path", None) or minilm_path()
    tag = fingerprint(embedder.identity(), folder, RUNTIME_LIBRARIES[embedder.backend])
    return CachedEmbedder(embedder, path or default_cache(), tag)


DRIVER_MAX = ONNX_FROM  # a local build embeds up to this many texts in the driver, with the model it preloaded


def local_cores(master: str) -> int | None:
    """The cores of a ``local``, ``local[N]`` or ``local[*]`` master; None for a cluster."""
    import re

    m = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master.strip())
    if not m:
        return None
    return (os.cpu_count() or 1) if m.group(1) == "*" else int(m.group(1) or 1)


class Preload:
    """The local torch embedder, loaded in a background thread while Spark reads and validates the input.

    A local build of a catalog below :data:`DRIVER_MAX` products embeds in the driver with it: loading the
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


def make_embedder(name: str = "minilm", *, model: str | None = None, dim: int | None = None, backend: str = "torch",
                  device: str = "cpu", **kwargs: Any) -> Embedder:
    """Factory: ``minilm`` (default, offline), ``openai`` (``model``, ``dim``: any /v1/embeddings server)
    or a path to a sentence-transformers model folder; a local model runs on ``backend`` (``torch`` or
    ``onnx``: exported once to int8, see :mod:`.onnx_backend`) and ``device`` (``cpu`` or ``cuda``)."""
    if name == "openai":
        from index_builder.core.embedders.openai_backend import DEFAULT_OPENAI_MODEL, OpenAIEmbedder

        return OpenAIEmbedder(model or DEFAULT_OPENAI_MODEL, dim, **kwargs)
    if name in ("minilm", DEFAULT_MODEL):
        path, model_name = None, DEFAULT_MODEL
    elif os.path.isdir(name):
        path, model_name = name, os.path.basename(os.path.normpath(name))
    else:
        raise ValueError(f"unknown embedder {name!r}: use 'minilm', 'openai' or the folder of a sentence-transformers model")
    if backend == "onnx":
        from index_builder.core.embedders.onnx_backend import OnnxEmbedder, export_onnx

        kwargs.pop("batch_size", None)  # ONNX runs one text at a time (see OnnxEmbedder)
        return OnnxEmbedder(export_onnx(path, model=model_name), model=model_name, **kwargs)
    if path is None:
        return SentenceTransformerEmbedder(device=device, **kwargs)
    return SentenceTransformerEmbedder(path, model=model_name, device=device, **kwargs)
