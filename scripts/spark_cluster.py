"""A real Spark standalone cluster on 127.0.0.1 (one master, one worker), from the scripts that ship
inside the pyspark package: for tests/test_cluster.py and for trying ``build --master spark://...``.

    python scripts/spark_cluster.py          # prints the master URL; Ctrl-C stops both
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, log: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Spark {what} exited with code {proc.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the Spark {what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s; see {log}")


def start(folder: Path, cores: int = 2, memory: str = "4g") -> tuple[list[subprocess.Popen], str]:
    """Start a master and one worker; returns (processes, "spark://127.0.0.1:PORT") once the worker registered."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    home = spark_home()
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "SPARK_WORKER_DIR": str(folder / "work"), "SPARK_LOG_DIR": str(folder)}
    cls = [str(home / "bin" / "spark-class")]
    port, ui = free_port(), free_port()
    master_log = folder / "master.log"
    master = subprocess.Popen(cls + ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                                     "--webui-port", str(ui)], env=env, stdout=open(master_log, "wb"),  # noqa: SIM115
                              stderr=subprocess.STDOUT)
    _wait_port(port, master, "master", master_log)
    url = f"spark://127.0.0.1:{port}"
    worker_log = folder / "worker.log"
    worker = subprocess.Popen(cls + ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", str(cores),
                                     "--memory", memory, "--webui-port", str(free_port()), url],
                              env=env, stdout=open(worker_log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    deadline = time.time() + 60
    while time.time() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the Spark worker exited with code {worker.returncode}; see {worker_log}")
        if b"Successfully registered with master" in worker_log.read_bytes():
            return [worker, master], url
        time.sleep(0.3)
    raise RuntimeError(f"the Spark worker did not register with {url} within 60 s; see {worker_log}")


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


if __name__ == "__main__":
    import tempfile

    procs, master_url = start(Path(tempfile.mkdtemp(prefix="spark-cluster-")))
    print(f"Spark standalone master at {master_url} (one worker, 2 cores); Ctrl-C stops it", flush=True)
    try:
        procs[-1].wait()
    except KeyboardInterrupt:
        stop(procs)
