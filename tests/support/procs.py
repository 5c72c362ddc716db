"""Helpers the tests and the benchmarks share: where the real data is, free ports, the real app in a
subprocess."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path | None:
    """Where the real datasets are: $CARTWISE_DATA_DIR, else ../shared/data beside the checkout."""
    env = os.environ.get("CARTWISE_DATA_DIR")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(folder: Path, log: Path, env: dict[str, str] | None = None, extra: list[str] | None = None):
    """Run ``python app.py --bundle FOLDER`` on a free port; returns (process, url) once it answers."""
    import subprocess
    import time
    import urllib.error
    import urllib.request

    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--bundle", str(folder), "--port", str(port),
                                 "--env-file", "", *(extra or [])], stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read(100)
            return proc, url
        except urllib.error.HTTPError:  # answering (a login page says 401 to some paths)
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"app did not start:\n{log.read_text()[-3000:]}") from None
            time.sleep(1)


def stop(proc) -> None:
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
