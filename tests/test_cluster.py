"""A real Spark standalone cluster (master + one worker from the pyspark package) on 127.0.0.1 builds the
same bundle as local mode: same products, same chosen k, same clusters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from index_builder.core import bundle as fmt

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory):
    from scripts import spark_cluster as sc

    procs, url = sc.start(tmp_path_factory.mktemp("spark-cluster"))
    yield url
    sc.stop(procs)


def test_standalone_cluster_builds_the_local_bundle(spark_cluster, uci_bundle, data_dir, tmp_path):
    local, local_manifest = uci_bundle  # built in local mode with the same flags (and the evaluation)
    out = tmp_path / "cluster"
    cmd = [sys.executable, "-m", "index_builder", "build", "--dataset", "online-retail", "--out", str(out),
           "--master", spark_cluster, "--sample-users", "200", "--k-min", "4", "--k-max", "8", "--als-rank", "16",
           "--no-eval"]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"starting session on {spark_cluster}" in done.stderr
    folder, manifest = fmt.verify(out)
    assert manifest["params"]["master"] == spark_cluster
    ours, theirs = pd.read_parquet(folder / fmt.PRODUCTS), pd.read_parquet(local / fmt.PRODUCTS)
    assert ours["product_id"].tolist() == theirs["product_id"].tolist()
    assert manifest["kmeans"]["k"] == local_manifest["kmeans"]["k"]
    assert ours["cluster"].tolist() == theirs["cluster"].tolist()
    assert manifest["counts"]["users"] == local_manifest["counts"]["users"] == 200
    assert "skipped" not in manifest["als"]
