"""Embedding throughput: bare sentence-transformers encode vs the builder's Spark pandas UDF.

Both embed the same 2,000 product texts (title + description of the datacamp-products catalog)
in one run. The Spark figure is given cold (model loaded in each Python worker inside the timing)
and warm (a second pass: workers are reused and keep the model), with the ratio to bare encode.

    .venv/bin/python bench/embed_throughput.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd

    from index_builder.datasets import get_spec, locate
    from index_builder.embed import SentenceTransformerEmbedder, embed_column
    from index_builder.pipeline import BuildConfig, _embed_threads
    from index_builder.session import make_spark

    path = locate(get_spec("datacamp-products"), Path(args.data_dir) if args.data_dir else None)
    df = pd.read_csv(path).head(args.n)
    texts = (df["title"].fillna("") + " " + df["description"].fillna("")).str.strip().tolist()
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(f"{len(texts)} texts, {words:.0f} words on average, {os.cpu_count()} cores")

    bare = SentenceTransformerEmbedder()
    bare.encode(texts[:16])  # model load and warm-up outside the timing
    t = time.perf_counter()
    ref = bare.encode(texts)
    bare_s = time.perf_counter() - t

    spark = make_spark(master=args.master)
    threads = _embed_threads(spark, BuildConfig(out="-", master=args.master))
    embedder = SentenceTransformerEmbedder(threads=threads)
    frame = spark.createDataFrame(pd.DataFrame({"i": range(len(texts)), "text": texts}))
    frame = frame.repartition(spark.sparkContext.defaultParallelism).cache()
    frame.count()

    def spark_pass() -> tuple[float, np.ndarray]:
        t0 = time.perf_counter()
        out = embed_column(frame, embedder, "text", "e").select("i", "e").toPandas().sort_values("i")
        return time.perf_counter() - t0, np.stack(out["e"].to_numpy())

    cold_s, vecs = spark_pass()
    warm_s, _ = spark_pass()
    spark.stop()

    n = len(texts)
    rows = [
        ("bare encode (model loaded)", bare_s, 1.0),
        ("Spark pandas UDF, cold", cold_s, bare_s / cold_s),
        ("Spark pandas UDF, warm", warm_s, bare_s / warm_s),
    ]
    print(f"\n{'path':<30} {'seconds':>8} {'products/s':>11} {'x bare':>7}")
    for name, secs, ratio in rows:
        print(f"{name:<30} {secs:8.1f} {n / secs:11.1f} {ratio:7.2f}")
    print(f"\nSpark workers: {spark_threads_note(threads)}; max |bare - spark| = {np.abs(ref - vecs).max():.2e}")
    goal = bare_s / cold_s >= 0.9
    print(f"goal (cold Spark >= 0.9 x bare): {'met' if goal else 'NOT met'}")


def spark_threads_note(threads: int | None) -> str:
    return f"{threads} torch thread(s) each" if threads else "torch default threads"


if __name__ == "__main__":
    main()
