"""The query encoder the chat uses: shopper text -> unit vectors with the model a bundle was built with
(checked by name and dimension), behind a thread-safe LRU cache."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from index_builder.core.errors import BundleError
from index_builder.core.settings import DEFAULT_ENV_FILE

if TYPE_CHECKING:
    from index_builder.core.bundle_reader import Bundle


ENCODE_CACHE = 2048  # shopper texts whose query vectors are kept


def query_encoder(bundle: Bundle, env_file: str | os.PathLike | None = DEFAULT_ENV_FILE):
    """Embed shopper text with the model the bundle was built with (checked by name and dimension); an
    OpenAI-embedded bundle reads ``OPENAI_*`` from the environment, else ``env_file``."""
    return encoder_for(bundle.folder, bundle.manifest, env_file)


def encoder_for(folder: Path, manifest: dict[str, Any], env_file: str | os.PathLike | None = DEFAULT_ENV_FILE):
    """Texts -> unit vectors with the model of the bundle in ``folder`` (its manifest given); cached per text."""
    from index_builder.core.embedders.factory import make_embedder

    ident = manifest["embedding"]
    params = manifest.get("params", {})
    name = params.get("embedder", "minilm")
    if name == "openai":
        embedder = make_embedder("openai", model=ident["model"], dim=params.get("embedding_dim"), env_file=env_file)
    elif ident.get("folder"):  # the bundle carries its exported ONNX encoder
        from index_builder.core.embedders.onnx_backend import OnnxEmbedder

        embedder = OnnxEmbedder(Path(folder) / ident["folder"], model=ident["model"])
    else:  # torch on the CPU: a GPU-built bundle (float16) is within cosine 0.999 of it
        embedder = make_embedder(name)
    if embedder.model != ident["model"] or embedder.dim != ident["dim"]:
        raise BundleError(f"bundle {folder} was embedded with {ident}, but {name!r} gives "
                          f"{embedder.identity()}; rebuild the bundle or install that model")
    return cached_encoder(embedder.encode)


def cached_encoder(encode: Callable[[list[str]], np.ndarray], size: int = ENCODE_CACHE) -> Callable[[Sequence[str]], np.ndarray]:
    """``encode`` with a thread-safe LRU cache of ``size`` texts. A call's vectors come from what it computed
    and what it found, never from the cache after its inserts (a call of more texts than the cache holds,
    or inserts that evict the texts it found, used to raise KeyError)."""
    cache: OrderedDict[str, np.ndarray] = OrderedDict()
    lock = threading.Lock()

    def cached(texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        with lock:
            found = {t: cache[t] for t in dict.fromkeys(texts) if t in cache}
            for t in found:
                cache.move_to_end(t)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:  # outside the lock: a slow model never blocks the cache hits of other threads
            computed = dict(zip(missing, encode(missing), strict=True))
            found.update(computed)
            with lock:
                for t, v in computed.items():
                    cache[t] = v
                    cache.move_to_end(t)
                while len(cache) > size:
                    cache.popitem(last=False)
        return np.stack([found[t] for t in texts])

    return cached
