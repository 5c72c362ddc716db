"""Embedding throughput: torch (sentence-transformers) vs ONNX Runtime int8 vs CUDA, bare and through the
builder's Spark pandas UDF.

All embed the same 2,000 product texts (title + description of the datacamp-products catalog) in one run.
Bare rows: one process, 2 threads (``--threads``), model loaded before the timing. The Spark rows use the
backend a default build of a big catalog uses on this machine, cold (model loaded in each Python worker inside the timing)
and warm (a second pass: workers are reused and keep the model). The CUDA rows (float32 and float16)
appear where torch sees a GPU. Each row gives texts/s, the ratio to bare torch fp32 and the mean / min cosine
to the torch fp32 vectors. Goals: ONNX >= 2x torch at mean cosine >= 0.99; cold Spark >= 0.9 x its bare backend.

    .venv/bin/python -m bench.embed_throughput --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--threads", type=int, default=2, help="threads of the bare rows")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd

    from index_builder.core.embedders.torch_backend import SentenceTransformerEmbedder
    from index_builder.pipeline import BuildConfig, _embed_threads
    from index_builder.stages.datasets import get_spec, locate
    from index_builder.stages.embedding import embed_column
    from index_builder.stages.session import make_spark

    path = locate(get_spec("datacamp-products"), Path(args.data_dir) if args.data_dir else None)
    df = pd.read_csv(path).head(args.n)
    texts = (df["title"].fillna("") + " " + df["description"].fillna("")).str.strip().tolist()
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(f"{len(texts)} texts, {words:.0f} words on average, {os.cpu_count()} cores")

    import torch

    from index_builder.core.embedders.factory import choose_backend, make_embedder

    torch.set_num_threads(args.threads)

    def timed(embedder) -> tuple[float, np.ndarray]:
        embedder.encode(texts[:16])  # model load and warm-up outside the timing
        t0 = time.perf_counter()
        vecs = embedder.encode(texts)
        return time.perf_counter() - t0, vecs

    bare_s, ref = timed(SentenceTransformerEmbedder(threads=args.threads))
    rows = [("torch fp32, bare", bare_s, ref)]
    rows.append(("onnx int8, bare", *timed(make_embedder("minilm", backend="onnx", threads=args.threads))))
    if torch.cuda.is_available():
        gpu32 = SentenceTransformerEmbedder(device="cuda")
        gpu32._load().float()  # the device path runs float16; this row is its float32 reference
        rows.append(("cuda fp32, bare", *timed(gpu32)))
        rows.append(("cuda fp16, bare", *timed(make_embedder("minilm", device="cuda"))))

    # what --embed-backend auto picks for a big catalog (100,000 texts like these) on this machine
    backend, choice = choose_backend(texts[:256], 100_000, SentenceTransformerEmbedder(threads=args.threads),
                                     lambda: make_embedder("minilm", backend="onnx", threads=args.threads))
    print(f"auto for 100,000 such texts: {backend} {choice}")
    spark = make_spark(master=args.master)
    cfg = BuildConfig(out="-", master=args.master)
    threads = _embed_threads(spark, cfg)
    embedder = make_embedder("minilm", backend=backend, threads=threads)
    frame = spark.createDataFrame(pd.DataFrame({"i": range(len(texts)), "text": texts}))
    frame = frame.repartition(spark.sparkContext.defaultParallelism).cache()
    frame.count()

    def spark_pass() -> tuple[float, np.ndarray]:
        t0 = time.perf_counter()
        out = embed_column(frame, embedder, "text", "e").select("i", "e").toPandas().sort_values("i")
        return time.perf_counter() - t0, np.stack(out["e"].to_numpy())

    rows.append((f"Spark UDF ({backend}), cold", *spark_pass()))
    rows.append((f"Spark UDF ({backend}), warm", *spark_pass()))
    spark.stop()

    n = len(texts)
    print(f"\n{'path':<28} {'seconds':>8} {'texts/s':>8} {'x torch':>8} {'cos mean':>9} {'cos min':>8}")
    for name, secs, vecs in rows:
        cos = (vecs * ref).sum(axis=1)
        print(f"{name:<28} {secs:8.1f} {n / secs:8.1f} {bare_s / secs:8.2f} {cos.mean():9.4f} {cos.min():8.4f}")
    by_name = {name: secs for name, secs, _ in rows}
    onnx_ratio = bare_s / by_name["onnx int8, bare"]
    onnx_cos = float((rows[1][2] * ref).sum(axis=1).mean())
    base = by_name["onnx int8, bare"] if backend == "onnx" else bare_s
    cold = base / by_name[f"Spark UDF ({backend}), cold"]
    print(f"\nSpark workers: {spark_threads_note(threads)}")
    print(f"goal ONNX >= 2x torch at mean cosine >= 0.99: {'met' if onnx_ratio >= 2 and onnx_cos >= 0.99 else 'NOT met'} "
          f"({onnx_ratio:.2f}x, {onnx_cos:.4f}); goal cold Spark >= 0.9 x bare {backend}: "
          f"{'met' if cold >= 0.9 else 'NOT met'} ({cold:.2f})")


def spark_threads_note(threads: int | None) -> str:
    return f"{threads} thread(s) each" if threads else "the runtime's default threads"


if __name__ == "__main__":
    main()
