"""The one reader of the settings a user gives by environment: every ``OPENAI_*`` and ``CARTWISE_*``
variable, from the process environment or a ``.env`` file (the environment wins).

The LLM writer and its limits, the OpenAI embedder (building a bundle, and embedding the shopper's words
when serving one), the app's flags' defaults, the session cap and the caches read them here, so a value
kept in ``.env`` works for all of them or for none. The variables are listed in the README.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from index_builder.core.constants import PROJECT

DEFAULT_ENV_FILE = ".env"


def usable_cores() -> int:
    """The cores this process may use (the machine's share of a container or a task set)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def read_env(environ: Mapping[str, str] | None = None,
             env_file: str | os.PathLike | None = DEFAULT_ENV_FILE) -> dict[str, str]:
    """``env_file``'s values (when the file exists; ``None`` or ``""``: no file) overlaid with ``environ``
    (default: ``os.environ``)."""
    values: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        from dotenv import dotenv_values

        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    return values


def number(values: Mapping[str, str], name: str, default, kind=int):
    """``values[name]`` as ``kind`` (int or float); the default when unset; a clear error when malformed."""
    raw = values.get(name)
    if raw is None or not str(raw).strip():
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a {'whole number' if kind is int else 'number'}") from None


def cache_root(values: Mapping[str, str] | None = None) -> Path:
    """``$CARTWISE_CACHE`` or ``~/.cache/cartwise``: downloads, exported models, the embedding cache."""
    values = read_env() if values is None else values
    return Path(values.get("CARTWISE_CACHE") or Path.home() / ".cache" / PROJECT)


def cache_dir() -> Path:
    """The download cache: ``$CARTWISE_CACHE`` or ``~/.cache/cartwise``, datasets under ``datasets/``."""
    return cache_root() / "datasets"
