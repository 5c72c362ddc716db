from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def shared_data_dir() -> Path | None:
    """Where the real datasets are: $CARTWISE_DATA_DIR, else ../shared/data beside the checkout."""
    env = os.environ.get("CARTWISE_DATA_DIR")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path | None:
    return shared_data_dir()


@pytest.fixture(scope="session")
def spark():
    from index_builder.session import make_spark

    session = make_spark(master="local[2]", app_name="cartwise-tests", driver_memory="3g")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def uci_bundle(spark, data_dir, tmp_path_factory):
    """A real bundle: UCI Online Retail, 200 sampled users, whole catalog (built once per test run)."""
    from index_builder import bundle
    from index_builder.cli import main

    out = tmp_path_factory.mktemp("uci")
    args = ["build", "--dataset", "online-retail", "--out", str(out), "--sample-users", "200",
            "--k-min", "4", "--k-max", "8", "--als-rank", "16"]
    if data_dir:
        args += ["--data-dir", str(data_dir)]
    assert main(args) == 0
    return bundle.verify(out)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_url(uci_bundle, tmp_path_factory):
    """The real app (python app.py) serving the sampled UCI bundle on a free port."""
    import subprocess
    import time
    import urllib.request

    folder, _ = uci_bundle
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--bundle", str(folder.parent), "--port", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read(100)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"app did not start:\n{log.read_text()[-3000:]}") from None
            time.sleep(1)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
