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
