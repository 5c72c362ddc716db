"""OpenAI embeddings (the tutorials' choice), or any server speaking ``/v1/embeddings``.

- Requests are batched by tiktoken counts within the API's limits: at most ``max_inputs`` (2,048) inputs
  and ``max_request_tokens`` (300,000) tokens per request; each input is cut to 8,191 tokens.
- 429 and 5xx (and dropped connections) are retried with exponential backoff and jitter, honouring
  Retry-After; at most ``concurrency`` requests are in flight per process.
- A cache keyed by (model, dim, sha256 of the text) in SQLite (:mod:`.cache`: ``$CARTWISE_EMBED_CACHE``,
  default ``~/.cache/cartwise/embeddings.sqlite``) means a rebuild pays only for new texts.
- The key comes from ``OPENAI_API_KEY`` in each process; it is never part of the spec, so it never
  reaches the manifest or Spark's task closures.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from index_builder.core.embedders.base import Embedder, normalize
from index_builder.core.embedders.cache import EmbeddingCache, default_cache
from index_builder.core.errors import ModelFitError
from index_builder.core.settings import DEFAULT_ENV_FILE, read_env

log = logging.getLogger(__name__)

DEFAULT_OPENAI_MODEL = "text-embedding-3-small"
MAX_INPUTS = 2048
MAX_REQUEST_TOKENS = 300_000
MAX_INPUT_TOKENS = 8191


def batches(texts: Sequence[str], counts: Sequence[int], *, max_inputs: int = MAX_INPUTS,
            max_tokens: int = MAX_REQUEST_TOKENS) -> list[list[int]]:
    """Indices of ``texts`` grouped so that no group exceeds ``max_inputs`` items or ``max_tokens`` tokens."""
    out: list[list[int]] = []
    cur: list[int] = []
    used = 0
    for i, n in enumerate(counts):
        if cur and (len(cur) >= max_inputs or used + n > max_tokens):
            out.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    if cur:
        out.append(cur)
    return out


class OpenAIEmbedder(Embedder):
    backend = "openai"

    def __init__(self, model: str = DEFAULT_OPENAI_MODEL, dim: int | None = None, *, base_url: str | None = None,
                 cache_path: str | None = None, concurrency: int = 4, max_retries: int = 6,
                 max_inputs: int = MAX_INPUTS, max_request_tokens: int = MAX_REQUEST_TOKENS,
                 timeout: float = 60.0, backoff_base: float = 1.0,
                 env_file: str | os.PathLike | None = DEFAULT_ENV_FILE) -> None:
        settings = read_env(env_file=env_file)  # OPENAI_BASE_URL / OPENAI_API_KEY: the environment, else .env
        self.model = model
        self._dim: int | None = None  # measured from the server's vectors (a server may ignore ``dim``)
        self.requested_dim = dim
        self.base_url = base_url or settings.get("OPENAI_BASE_URL") or None
        self._key = settings.get("OPENAI_API_KEY") or None
        self.cache_path = cache_path or default_cache(settings)
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.max_inputs = max_inputs
        self.max_request_tokens = max_request_tokens
        self.timeout = timeout
        self.backoff_base = backoff_base
        self._client = None
        self._cache: EmbeddingCache | None = None
        self.requests = 0  # API calls made by this process (for tests and logs)

    # -- plumbing -------------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            key = self._key
            if not key and not self.base_url:
                raise ModelFitError("--embedder openai needs OPENAI_API_KEY (or OPENAI_BASE_URL for a compatible "
                                    "server) in the environment or .env")
            from openai import OpenAI

            self._client = OpenAI(api_key=key or "not-needed", base_url=self.base_url, max_retries=0,
                                  timeout=self.timeout)
        return self._client

    @property
    def cache(self) -> EmbeddingCache:
        if self._cache is None:
            self._cache = EmbeddingCache(self.cache_path)
        return self._cache

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.encode(["dimension probe"]).shape[1])
        return int(self._dim)

    def spec(self) -> dict[str, Any]:
        return {"kind": "openai", "model": self.model, "dim": self.requested_dim, "base_url": self.base_url,
                "cache_path": self.cache_path, "concurrency": self.concurrency}

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "requested_dim": self.requested_dim}

    # -- calls ----------------------------------------------------------------------------------------
    def _request(self, texts: list[str]) -> np.ndarray:
        """One API call with backoff on 429 / 5xx / connection errors (Retry-After honoured)."""
        import openai

        kwargs: dict[str, Any] = {"model": self.model, "input": texts}
        if self.requested_dim and self.model.startswith("text-embedding-3"):
            kwargs["dimensions"] = self.requested_dim
        for attempt in range(self.max_retries + 1):
            try:
                self.requests += 1
                resp = self.client.embeddings.create(**kwargs)
                data = sorted(resp.data, key=lambda d: d.index)
                return np.asarray([d.embedding for d in data], dtype=np.float32)
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as exc:
                if attempt >= self.max_retries:
                    raise ModelFitError(f"embeddings request failed after {attempt + 1} tries: {type(exc).__name__}") from None
                wait = None
                response = getattr(exc, "response", None)
                if response is not None and response.headers.get("retry-after"):
                    try:
                        wait = float(response.headers["retry-after"])
                    except ValueError:
                        wait = None
                if wait is None:
                    wait = min(60.0, self.backoff_base * 2 ** attempt) * (0.5 + random.random())
                log.warning("embeddings: %s, retrying in %.1f s (try %d of %d)", type(exc).__name__, wait,
                            attempt + 2, self.max_retries + 1)
                time.sleep(wait)
            except openai.AuthenticationError:
                raise ModelFitError("the embeddings API refused the key (401): check OPENAI_API_KEY") from None
        raise AssertionError("unreachable")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        from index_builder.core import tokens

        texts = [t if t.strip() else " " for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._dim is None and texts != ["dimension probe"]:
            self.dim  # noqa: B018 - measure once, so every vector can be checked
        keys = [EmbeddingCache.key(self.model, self.requested_dim, t) for t in texts]
        have = self.cache.get_many(list(dict.fromkeys(keys)), self._dim)
        todo = list(dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k not in have))
        if todo:
            enc = tokens.encoding("cl100k_base")
            cut, counts = [], []
            for t in todo:
                ids = enc.encode(t, disallowed_special=())
                if len(ids) > MAX_INPUT_TOKENS:
                    t, ids = enc.decode(ids[:MAX_INPUT_TOKENS]), ids[:MAX_INPUT_TOKENS]
                cut.append(t)
                counts.append(len(ids))
            groups = batches(cut, counts, max_inputs=self.max_inputs, max_tokens=self.max_request_tokens)
            with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
                results = list(pool.map(lambda g: self._request([cut[i] for i in g]), groups))
            fresh: dict[str, np.ndarray] = {}
            for g, vecs in zip(groups, results, strict=True):
                for i, v in zip(g, normalize(vecs), strict=True):
                    fresh[EmbeddingCache.key(self.model, self.requested_dim, todo[i])] = v
            self.cache.put_many(fresh)
            have.update(fresh)
            if self._dim is None:
                self._dim = int(next(iter(fresh.values())).shape[0])
        out = np.stack([have[k] for k in keys])
        if self._dim is not None and out.shape[1] != self._dim:
            raise ModelFitError(f"the embeddings server returned {out.shape[1]}-d vectors, expected {self._dim}")
        return normalize(out)
