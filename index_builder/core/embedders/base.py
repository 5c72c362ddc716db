"""The one embedder interface and what every backend shares.

An :class:`Embedder` turns texts into unit-norm float32 vectors. Its identity (``model``, ``dim``,
``backend``) goes into the manifest, so the assistant embeds queries with the same model.
Embedders travel to Spark workers as a small spec (:func:`.factory.embedder_from_spec`) and are loaded
once per Python worker.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from index_builder.core.errors import ModelFitError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
CUDA_BATCH = 512  # texts per batch on a GPU (fills an H100 with MiniLM; CPU batches stay small)
BACKENDS = ("auto", "torch", "onnx")
# a local build embeds up to this many texts in the driver (the model preloaded while Spark starts), more in
# the executors
DRIVER_MAX = 50_000
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

    # settings of the runtime that change the vectors: part of the embedding cache's key, not of the identity
    runtime: dict[str, str] = {}


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalize rows (float32); a zero row stays zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


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


def resolve_backend(backend: str, device: str) -> str:
    """``auto`` -> torch on a GPU; on the CPU ``measure`` (the build times torch and ONNX Runtime int8 on a sample
    of the catalog: :func:`.factory.choose_backend`) when onnxruntime is installed, else torch."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown embedding backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "onnx" and device == "cuda":
        raise ModelFitError("--embed-backend onnx runs on the CPU only; use --device cpu, or --embed-backend torch")
    if backend != "auto":
        return backend
    if device == "cuda":
        return "torch"
    import importlib.util

    return "measure" if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx") else "torch"


def encode_chunks(embedder: Embedder, texts: Sequence[str], chunk: int = 1_000, counter: list[int] | None = None
                  ) -> np.ndarray:
    """Embed ``texts`` ``chunk`` at a time; ``counter[0]`` counts the texts done (for progress lines)."""
    out = [np.zeros((0, embedder.dim), dtype=np.float32)]
    for lo in range(0, len(texts), chunk):
        out.append(embedder.encode(texts[lo:lo + chunk]))
        if counter is not None:
            counter[0] += len(out[-1])
    return np.concatenate(out)


