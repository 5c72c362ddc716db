"""The build: input -> validated frames -> embeddings, clusters, ALS, FAISS -> one published bundle.

Only this module and the CLI touch the file system; the steps it calls are pure frame functions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import platform
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from index_builder.core import bundle
from index_builder.core.constants import (
    CLUSTER,
    DEFAULT_EVENT_WEIGHTS,
    DEFAULT_HAD_TYPES,
    EMBEDDING,
    EVENT_COLUMNS,
    POPULARITY,
    PRICE,
    PRODUCT_ID,
    PRODUCT_IDX,
    REJECT_REASON,
    ROW_ID,
    TEXT,
    TS,
    USER_ID,
    USER_IDX,
    WEIGHT,
)
from index_builder.core.embedders.base import encode_chunks, resolve_backend, resolve_device
from index_builder.core.embedders.factory import DRIVER_MAX, Preload, local_cores, make_embedder
from index_builder.core.embedders.torch_backend import SentenceTransformerEmbedder
from index_builder.core.errors import InputError
from index_builder.core.progress import Stages, reported
from index_builder.evaluation.evaluate import EvalSettings, evaluate
from index_builder.insights.graph import DEFAULT_MAX_USERS
from index_builder.stages import rules
from index_builder.stages.adapters import Source, datacamp_products, from_files, online_retail
from index_builder.stages.als import ALSParams, factor_matrix, train_als
from index_builder.stages.cluster import (
    K_RULE,
    SAMPLE_SIZE,
    SILHOUETTE_SIZE,
    fit_all,
    restarts_for,
    sweep_kmeans,
    widen_while_at_edge,
)
from index_builder.stages.datasets import get_spec, locate
from index_builder.stages.embedding import embed_column
from index_builder.stages.itemitem import MAX_ITEMS, fit_item_item

log = logging.getLogger(__name__)


EMBED_TASK_ROWS = 1_000  # texts per embedding task (about 7 s on one core): the grain of the progress lines


@dataclass
class BuildConfig:
    """Every knob of a build; all of it is written to the manifest's ``params``."""

    out: str
    dataset: str | None = None
    data_dir: str | None = None
    products: str | None = None
    events: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    encoding: str = "utf-8"
    sample_users: int | None = None
    master: str = "local[2]"
    driver_memory: str = "4g"
    seed: int = 42
    k_min: int = 2
    k_max: int = 20
    kmeans_max_iter: int = 30
    kmeans_restarts: int = 3
    kmeans_sample: int = SAMPLE_SIZE  # the k sweep fits on at most this many vectors; the chosen k on all
    als_rank: int = 32
    als_reg_param: float = 0.1
    als_alpha: float = 1.0
    als_max_iter: int = 10
    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    embedder: str = "minilm"
    embedding_model: str | None = None  # --embedder openai: the model (default text-embedding-3-small)
    embedding_dim: int | None = None  # --embedder openai: dimensions to ask for (text-embedding-3 models)
    embed_batch_size: int = 64
    embed_threads: int | None = None
    embed_backend: str = "auto"  # auto = ONNX Runtime int8 on the CPU from 50,000 products, else torch
    device: str = "auto"  # auto = cuda when torch sees a GPU
    faiss: str = "auto"  # auto = flat below 50,000 products, ivfpq (cells = the KMeans clusters) above
    faiss_nprobe: int = 3
    download: bool = True
    had_types: tuple[str, ...] = DEFAULT_HAD_TYPES  # events that mean the shopper has the product
    ease_lambda: float = 200.0  # item-item (EASE) regularisation; the evaluation tunes it
    item_item_max_items: int = MAX_ITEMS
    evaluate: bool = True  # time-split evaluation (and tuning on validation) before the final fit
    eval_cutoff: str | None = None
    tune: bool = True
    currency: str | None = None  # ISO code of the prices (GBP, USD, ...); default: the dataset's, else none
    event_type: str = "purchase"  # the type of every event when the events file has no event_type column
    normalize_ids: bool = False  # '0108775044' == '108775044' == '108775044.0' in both files
    graph_users: int = DEFAULT_MAX_USERS  # users in the recommendation graph (a deterministic sample beyond); 0 = all
    oldest_event: str = rules.OLDEST_EVENT  # events dated before this are rejected (timestamp_too_old)
    future_hours: float = rules.FUTURE_HOURS  # ... and those more than this ahead of the build's clock

    def bounds(self, now: dt.datetime | None = None) -> rules.Bounds:
        """The record bounds of this build (:mod:`.rules`), the future measured from ``now``."""
        return rules.Bounds(oldest_event=self.oldest_event, future_hours=self.future_hours, now=now)

    def als_params(self) -> ALSParams:
        return ALSParams(rank=self.als_rank, reg_param=self.als_reg_param, alpha=self.als_alpha,
                         max_iter=self.als_max_iter, seed=self.seed)


def load_source(spark, cfg: BuildConfig) -> Source:
    """Pick the adapter for a named dataset or the generic files."""
    if cfg.products:
        source = from_files(spark, cfg.products, cfg.events, mapping=cfg.mapping, encoding=cfg.encoding,
                            event_type=cfg.event_type)
        source.currency = cfg.currency
        return source
    if not cfg.dataset:
        raise InputError("nothing to build: pass --dataset NAME or --products FILE [--events FILE]")
    spec = get_spec(cfg.dataset)
    path = locate(spec, Path(cfg.data_dir) if cfg.data_dir else None, download=cfg.download)
    source = online_retail(spark, path) if spec.name.startswith("online-retail") else datacamp_products(spark, path)
    source.name = spec.name
    source.currency = cfg.currency or spec.currency
    return source


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name, dist in [("spark", "pyspark"), ("torch", "torch"), ("sentence-transformers", "sentence-transformers"),
                       ("faiss", "faiss-cpu"), ("numpy", "numpy"), ("pandas", "pandas")]:
        try:
            out[name] = md.version(dist)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _embed_threads(spark, cfg: BuildConfig) -> int | None:
    """Torch threads per Python worker: the local cores shared by the tasks that run at once."""
    if cfg.embed_threads:
        return cfg.embed_threads
    if cfg.master.startswith("local"):
        return max(1, (os.cpu_count() or 1) // max(1, spark.sparkContext.defaultParallelism))
    return None


def build_embedder(spark, cfg: BuildConfig, st: Stages, n_products: int):
    """The build's embedder: OpenAI, or the local model on the backend and device asked for (``auto`` resolved)."""
    if cfg.embedder == "openai":
        return make_embedder("openai", model=cfg.embedding_model, dim=cfg.embedding_dim)
    device = resolve_device(cfg.device)
    backend = resolve_backend(cfg.embed_backend, device, n_products)
    if backend == "onnx":
        with st.stage("export", "%s to int8 ONNX (once per model; cached)", cfg.embedder):
            return make_embedder(cfg.embedder, backend="onnx", threads=_embed_threads(spark, cfg))
    return make_embedder(cfg.embedder, backend="torch", device=device, batch_size=cfg.embed_batch_size,
                         threads=_embed_threads(spark, cfg) if device == "cpu" else None)


def build(cfg: BuildConfig, spark=None) -> Path:
    """Run the whole build and publish ``cfg.out/<version>`` (+ ``current``); returns the version folder."""
    from pyspark.sql import functions as F

    from index_builder.stages.faiss_index import LARGE, build_index, effective_kind
    from index_builder.stages.session import make_spark
    from index_builder.stages.transforms import (
        add_popularity,
        aggregate_interactions,
        event_weights,
        prices_from_events,
        product_text,
        sample_users,
        validate_events,
        validate_products,
        with_index,
    )

    st = Stages()
    started = dt.datetime.now(dt.UTC)
    created_at = started.isoformat(timespec="seconds")
    bounds = cfg.bounds(started)
    try:
        bounds.window()
    except ValueError as exc:
        raise InputError(f"--oldest-event / --future-hours: {exc}") from None
    cores = local_cores(cfg.master)
    preload = None  # a local build loads the torch model while Spark starts and reads (see Preload)
    if cores and cfg.embedder != "openai" and cfg.embed_backend in ("auto", "torch"):
        preload = Preload(cfg.embedder, device=cfg.device, threads=cfg.embed_threads or cores,
                          batch_size=cfg.embed_batch_size)
    if spark is None:
        with st.stage("spark", "starting session on %s", cfg.master):
            spark = make_spark(master=cfg.master, driver_memory=cfg.driver_memory)
    parallelism = spark.sparkContext.defaultParallelism
    cached: list = []
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="final-als")  # see final_als below

    def keep(df):
        cached.append(df.cache())
        return cached[-1]

    try:
        with st.stage("load", "reading %s", cfg.dataset or cfg.products):
            source = load_source(spark, cfg)
        with st.stage("validate"):
            for said in source.defaults.values():
                st.say("validate: %s", said)
            products, product_rejects = validate_products(source.products, cfg.normalize_ids, persist=keep,
                                                          bounds=bounds)
            products = keep(products)
            n_products = products.count()
            if source.events is not None and PRICE in source.events.columns:
                unpriced = products.filter(F.col(PRICE).isNull()).count()
                if unpriced:
                    products = keep(prices_from_events(products, source.events, cfg.normalize_ids))
                    filled = unpriced - products.filter(F.col(PRICE).isNull()).count()
                    source.defaults[PRICE] = (f"{unpriced:,} products had no price in the catalog: {filled:,} of them "
                                              "take the median price paid for them in the events")
                    st.say("validate: %s", source.defaults[PRICE])
            rejects = dict(source.rejects)
            rejects["products"] = product_rejects
            events = None
            if source.events is not None:
                events, event_rejects = validate_events(source.events, products, cfg.normalize_ids, persist=keep,
                                                        bounds=bounds)
                rejects["events"] = event_rejects
                events = keep(events)
            rejected = {name: df.toPandas() for name, df in rejects.items()}
            if n_products == 0:
                raise InputError(f"no usable products in {', '.join(source.files)}: "
                                 f"all {sum(map(len, rejected.values()))} rows were rejected (reasons in the rejects)")
            n_events = 0
            if events is not None:
                n_events = events.count()
                check_events(n_events, rejected["events"], products, source, cfg)
                if cfg.sample_users:
                    events = keep(sample_users(events, cfg.sample_users, cfg.seed))
                    n_events = events.count()
            st.say("validate: %d products, %s events, rejected %s", n_products,
                   "no" if events is None else f"{n_events:,}",
                   {n: len(r) for n, r in rejected.items()})

        with st.stage("interactions", "weighting events (%s)", cfg.event_weights):
            if events is not None:
                # cached: read three times below (popularity, the user index, the indexed pairs)
                inter = keep(aggregate_interactions(event_weights(events, cfg.event_weights), tuple(cfg.had_types)))
            else:
                inter = spark.createDataFrame([], "user_id string, product_id string, weight double, "
                                              "n_events long, purchased boolean, had boolean, last_ts timestamp")
            products = keep(with_index(add_popularity(products, inter), PRODUCT_ID, PRODUCT_IDX))
            users = keep(with_index(inter.select(USER_ID).distinct(), USER_ID, USER_IDX))
            inter = keep(
                inter.join(products.select(PRODUCT_ID, PRODUCT_IDX), PRODUCT_ID)
                .join(users, USER_ID)
            )
            n_users, n_pairs = users.count(), inter.count()

        embedder = build_embedder(spark, cfg, st, n_products)
        in_driver = (preload is not None and embedder.backend == SentenceTransformerEmbedder.backend
                     and n_products <= DRIVER_MAX)
        if in_driver:
            embedder = preload.get()
        preload = None  # not needed any more (or never: a big catalog embeds in the executors)
        with st.stage("embed", "%d products with %s (%s, in the %s)", n_products, embedder.model, embedder.backend,
                      "driver" if in_driver else "executors"):
            if in_driver:
                texts = product_text(products).select(PRODUCT_IDX, TEXT).orderBy(PRODUCT_IDX).toPandas()
                done = [0]
                with reported(st, "embed", n_products, "texts", lambda: done[0]):
                    vectors = encode_chunks(embedder, texts[TEXT].fillna("").astype(str).tolist(), EMBED_TASK_ROWS, done)
            else:
                # Tasks of at most EMBED_TASK_ROWS texts: the accumulator reaches the driver as each task ends.
                texts = product_text(products).select(PRODUCT_IDX, TEXT).repartition(
                    max(parallelism, -(-n_products // EMBED_TASK_ROWS)))
                counter = spark.sparkContext.accumulator(0)
                embedded = embed_column(texts, embedder, TEXT, EMBEDDING, counter=counter)
                with reported(st, "embed", n_products, "texts", lambda: counter.value):
                    emb_pdf = embedded.select(PRODUCT_IDX, EMBEDDING).toPandas().sort_values(PRODUCT_IDX)
                vectors = np.stack(emb_pdf[EMBEDDING].to_numpy())
            embeddings = bundle.check_finite(bundle.EMBEDDINGS, np.asarray(vectors, dtype=np.float32))

        k_max = min(cfg.k_max, n_products - 1)
        k_min = min(cfg.k_min, k_max)
        with st.stage("kmeans", "sweep k=%d..%d", k_min, k_max):
            kmeans_info: dict[str, Any] = {}
            if k_max >= 2:
                n_sample = min(n_products, cfg.kmeans_sample)

                def sweep_range(lo: int, hi: int):
                    fits = spark.sparkContext.accumulator(0)
                    total = (hi - lo + 1) * restarts_for(n_sample, cfg.kmeans_restarts)
                    with reported(st, "kmeans", total, "fits", lambda: fits.value):
                        return sweep_kmeans(spark, embeddings, k_min=lo, k_max=hi, seed=cfg.seed, counter=fits,
                                            max_iter=cfg.kmeans_max_iter, restarts=cfg.kmeans_restarts,
                                            sample_size=cfg.kmeans_sample)

                sweep, fitted, k, elbow, widened = widen_while_at_edge(sweep_range, max(2, k_min), k_max, n_products,
                                                                       say=st.say)
                kmeans_info = {"sample": n_sample, "silhouette_sample": min(n_sample, SILHOUETTE_SIZE),
                               "restarts_used": restarts_for(n_sample, cfg.kmeans_restarts)}
                if n_sample < n_products:
                    st.say("kmeans: swept on a sample of %d of %d vectors; fitting k=%d on all", n_sample, n_products, k)
                labels, centroids, wssse, iters = fit_all(embeddings, fitted[k], max_iter=cfg.kmeans_max_iter)
                kmeans_info.update(wssse_all=wssse, iterations_all=iters)
            else:  # one or two products: nothing to cluster
                sweep, k, elbow, widened = [], 1, 1, []
                labels = np.zeros(n_products, dtype=np.int32)
                centroids = embeddings.mean(axis=0, keepdims=True)
            st.say("kmeans: chose k=%d (elbow %d)", k, elbow)

        faiss_kind = cfg.faiss if cfg.faiss != "auto" else ("ivfpq" if n_products >= LARGE and k > 1 else "flat")
        faiss_kind, faiss_why = effective_kind(faiss_kind, n_products, k)
        if faiss_why:
            st.say("faiss: %s; building %s", faiss_why, faiss_kind)
        with st.stage("faiss", "%s index over %d vectors", faiss_kind, n_products):
            index = build_index(embeddings, faiss_kind, centroids=centroids, labels=labels, nprobe=cfg.faiss_nprobe,
                                seed=cfg.seed)

        with st.stage("collect"):
            products_pdf = products.drop(ROW_ID).orderBy(PRODUCT_IDX).toPandas()
            products_pdf[CLUSTER] = labels[products_pdf[PRODUCT_IDX].to_numpy()]
            products_pdf[POPULARITY] = products_pdf[POPULARITY].astype("int64")
            products_pdf = products_pdf.drop(columns=[PRODUCT_IDX]).reset_index(drop=True)
            users_pdf = users.orderBy(USER_IDX).toPandas()
            inter_pdf = inter.orderBy(USER_IDX, PRODUCT_IDX).toPandas()
            events_pdf = events.select(*EVENT_COLUMNS).toPandas() if events is not None else None

        def final_als(params: ALSParams) -> tuple[np.ndarray, np.ndarray]:
            model = train_als(inter, params)
            return (factor_matrix(model.itemFactors, n_products, params.rank, name=bundle.ITEM_FACTORS),
                    factor_matrix(model.userFactors, n_users, params.rank, name=bundle.USER_FACTORS))

        # The final ALS fit starts as soon as the evaluation has settled its parameters: Spark fits it while
        # the evaluation's blend search and scoring run in Python.
        final_fit: dict[ALSParams, Any] = {}

        def start_final_fit(params: ALSParams) -> None:
            if params not in final_fit:
                final_fit[params] = background.submit(final_als, params)

        result = None
        als_params, ease_lambda, recommender = cfg.als_params(), cfg.ease_lambda, None
        als_info: dict[str, Any]
        item_info: dict[str, Any]
        item_factors = user_factors = item_neighbours = item_weights = None
        if cfg.evaluate and events is not None and n_pairs and n_users >= 2:
            with st.stage("evaluate", "time split%s", f" at {cfg.eval_cutoff}" if cfg.eval_cutoff else ""):
                result = evaluate(spark, events_pdf, products_pdf, embeddings, index, eval_settings(cfg), say=st.say,
                                  als_chosen=start_final_fit)
            if result is not None:
                als_params, ease_lambda, recommender = result.als, result.ease_lambda, result.recommender
        with st.stage("als"):
            if events is None:
                als_info = {"skipped": "the dataset has no events (catalog only)"}
            elif n_pairs == 0 or n_users < 2:
                als_info = {"skipped": f"too few interactions to learn from ({n_users} users, {n_pairs} pairs)"}
            else:
                started = final_fit.get(als_params)
                item_factors, user_factors = started.result() if started is not None else final_als(als_params)
                als_info = {"params": als_params.as_dict(), "implicit_prefs": True,
                            "items_with_factors": int((np.abs(item_factors).sum(axis=1) > 0).sum())}
        with st.stage("item_item", "EASE, lambda %s", ease_lambda):
            if "skipped" in als_info:
                item_info = {"skipped": als_info["skipped"]}
            else:
                item_neighbours, item_weights, item_info = fit_item_item(
                    inter_pdf, n_products, ease_lambda, max_items=cfg.item_item_max_items)

        counts = {
            "products": n_products,
            "users": n_users,
            "events": n_events,
            "interactions": n_pairs,
            "positive_interactions": int((inter_pdf[WEIGHT] > 0).sum()),
            **{f"source_{k}": v for k, v in source.counts.items()},
            "rejected": {name: _reason_counts(df) for name, df in rejected.items()},
        }

        def fill(folder: Path) -> dict[str, Any]:
            import faiss

            products_pdf.to_parquet(folder / bundle.PRODUCTS, index=False)
            embedding = {**embedder.identity(), "where": "driver" if in_driver else "executors"}
            if getattr(embedder, "folder", None):  # the exported ONNX graph: the assistant embeds queries with it
                shutil.copytree(embedder.folder, folder / bundle.EMBEDDER_DIR)
                embedding["folder"] = bundle.EMBEDDER_DIR
            # a big catalog keeps one float16 copy for the assistant (the ivfpq index holds only codes)
            bundle.save_array(folder, bundle.EMBEDDINGS, embeddings.astype(np.float16) if faiss_kind == "ivfpq" else embeddings)
            bundle.save_array(folder, bundle.CENTROIDS, centroids)
            faiss.write_index(index, str(folder / bundle.FAISS_INDEX))
            users_pdf.to_parquet(folder / bundle.USERS, index=False)
            inter_pdf.to_parquet(folder / bundle.INTERACTIONS, index=False)
            if events_pdf is not None:
                events_pdf.to_parquet(folder / bundle.EVENTS, index=False)
            if item_factors is not None:
                bundle.save_array(folder, bundle.ITEM_FACTORS, item_factors)
                bundle.save_array(folder, bundle.USER_FACTORS, user_factors)
            if item_neighbours is not None:
                bundle.save_item_item(folder, item_neighbours, item_weights)
            for name, df in rejected.items():
                if len(df):
                    (folder / bundle.REJECTS_DIR).mkdir(exist_ok=True)
                    df.to_csv(folder / bundle.REJECTS_DIR / f"{name}.csv", index=False)
            body = {
                "created_at": created_at,
                "dataset": source.name,
                "inputs": source.files,
                "params": {**asdict(cfg), "currency": source.currency},
                "assumed": source.defaults,
                "versions": _versions(),
                "counts": counts,
                "embedding": embedding,
                "kmeans": {"k": k, "elbow_k": elbow, "rule": K_RULE, "seed": cfg.seed,
                           "restarts": cfg.kmeans_restarts, "widened": widened, **kmeans_info, "sweep": sweep},
                "als": als_info,
                "item_item": item_info,
                "recommender": recommender or {},
                "metrics": result.metrics if result is not None else {
                    "skipped": "--no-eval" if not cfg.evaluate else "no events with timestamps to split in time"},
                "faiss": {"kind": faiss_kind, "requested": cfg.faiss, "why": faiss_why,
                          "metric": "inner_product", "ntotal": int(index.ntotal),
                          "nprobe": cfg.faiss_nprobe if faiss_kind.startswith("ivf") else None,
                          "cells": "kmeans clusters" if faiss_kind.startswith("ivf") else None},
                "timings_s": st.timings_s,
            }
            with st.stage("report", "recommendation graph and insights report"):
                body["report"] = write_insights(folder, body, products_pdf, embeddings, index, users_pdf, inter_pdf,
                                                item_factors, user_factors, item_neighbours, item_weights, cfg, st)
            return body

        with st.stage("write", "publishing bundle under %s", cfg.out):
            folder = bundle.publish(Path(cfg.out), fill)
        st.say("built %s: %d products, %d users, k=%d", folder, n_products, n_users, k)
        return folder
    finally:
        background.shutdown(wait=False, cancel_futures=True)
        for df in cached:
            df.unpersist()


MOSTLY = 0.5  # a reject reason above this share of the events stops the build: the input is misread, not dirty


def check_events(n_valid: int, rejected: pd.DataFrame, products, source: Source, cfg: BuildConfig) -> None:
    """Stop a build whose events are mostly unusable for one reason, with what it saw and the fix.

    A build that publishes a bundle without its events (every id unknown, every timestamp unreadable)
    looks like success and recommends nothing; these are input mistakes worth one clear error. The
    rejected rows are kept in ``OUT/rejects-of-failed-build/events.csv`` (the error names it).
    """
    problem = events_problem(n_valid, rejected, products, source, cfg)
    if problem:
        target = Path(cfg.out) / "rejects-of-failed-build"
        target.mkdir(parents=True, exist_ok=True)
        rejected.to_csv(target / "events.csv", index=False)
        raise InputError(f"{problem} (the {len(rejected):,} rejected rows, each with its reason: {target / 'events.csv'})")


def events_problem(n_valid: int, rejected: pd.DataFrame, products, source: Source, cfg: BuildConfig) -> str | None:
    """What is wrong with the events as a whole, or None when they are usable (see :func:`check_events`)."""
    n_rejected = len(rejected)
    total = n_valid + n_rejected
    if total == 0:
        return None
    events_file = source.files[-1]
    reasons = rejected[REJECT_REASON].value_counts() if n_rejected else pd.Series(dtype=int)
    if reasons.get("unknown_product_id", 0) > MOSTLY * total:
        catalog = products.select(PRODUCT_ID).limit(100_000).toPandas()[PRODUCT_ID].astype(str)
        unknown = rejected.loc[rejected[REJECT_REASON] == "unknown_product_id", PRODUCT_ID].astype(str)
        return (f"{events_file}: {reasons['unknown_product_id']:,} of {total:,} events name a product_id that is not "
                f"in the catalog (events: {_examples(unknown)}; catalog: {_examples(catalog)}). "
                + id_hint(unknown, catalog, cfg.normalize_ids))
    if reasons.get("unparseable_timestamp", 0) > MOSTLY * total:
        bad = rejected.loc[rejected[REJECT_REASON] == "unparseable_timestamp", TS].astype(str)
        return (f"{events_file}: column 'ts': {reasons['unparseable_timestamp']:,} of {total:,} timestamps cannot be "
                f"read (e.g. {_examples(bad)}). Readable: ISO dates and datetimes, epoch seconds or milliseconds "
                "(numbers or digit strings), 'dd/mm/yyyy hh:mm' and similar; convert the column, or map another one "
                "with --map ts=COLUMN")
    if n_valid == 0:
        said = ", ".join(f"{r} {c:,}" for r, c in reasons.items())
        return f"{events_file}: all {total:,} events were rejected ({said}); a bundle without events is not published"
    return None


def _examples(values: pd.Series, n: int = 3) -> str:
    return ", ".join(repr(v) for v in pd.unique(values.astype(str))[:n])


def id_hint(unknown: pd.Series, catalog: pd.Series, normalized: bool) -> str:
    """The likely reason two files' ids do not join, and the fix."""
    import re

    def digits(x: str) -> str:
        m = re.fullmatch(r"0*([0-9]+?)(\.0+)?", x.strip())
        return m.group(1) if m else x.strip()

    sample = pd.unique(unknown)[:2000]
    by_digits = {digits(c) for c in catalog}
    by_case = {c.strip().lower() for c in catalog}
    if not normalized and sum(digits(u) in by_digits for u in sample) > MOSTLY * len(sample):
        return ("The files write the same ids differently (leading zeros, spaces or '123.0' floats): "
                "rebuild with --normalize-ids, which applies the same normalisation to both.")
    if sum(u.strip().lower() in by_case for u in sample) > MOSTLY * len(sample):
        return "The ids differ only in upper/lower case: write them the same way in both files."
    return ("Check that --products and --events come from the same shop, and that --map product_id=COLUMN "
            "names the right column in each file.")


def write_insights(folder: Path, body: dict[str, Any], products_pdf, embeddings, index, users_pdf, inter_pdf,
                   item_factors, user_factors, item_neighbours, item_weights, cfg: BuildConfig,
                   st: Stages) -> dict[str, Any]:
    """The recommendation graph (the finished bundle's own picks for each user) and the insights report."""
    from index_builder.core.bundle_reader import assemble_bundle
    from index_builder.insights.graph import graph_users, recommendation_edges, write_graph
    from index_builder.insights.report import ReportInputs, write_report

    edges = None
    graph: dict[str, Any] = {"skipped": "no customers with a history"}
    users: list[str] = []
    if len(inter_pdf):
        b = assemble_bundle(folder=folder, manifest=body, products=products_pdf, embeddings=embeddings, index=index,
                            users=users_pdf, interactions=inter_pdf, item_factors=item_factors,
                            user_factors=user_factors, item_neighbours=item_neighbours, item_weights=item_weights)
        users = graph_users(b, cfg.graph_users or None, cfg.seed)
        if users:
            edges = recommendation_edges(b, users)
            graph = write_graph(folder, b, edges)
            st.say("report: graph of %d users -> %d products, %d edges", graph["users"], graph["products"], graph["edges"])
    n_users = len(users_pdf)
    note = (f"Each customer's top {int(edges['rank'].max()) if edges is not None and len(edges) else 0} picks from the "
            f"chat's own recommender on this bundle ({len(users):,} of {n_users:,} customers"
            f"{', a deterministic sample' if len(users) < n_users else ''}); exported as graph/vertices.csv and "
            "graph/edges.csv.")
    report = write_report(folder, ReportInputs(
        products=products_pdf, embeddings=embeddings, sweep=body["kmeans"]["sweep"], k=body["kmeans"]["k"],
        elbow=body["kmeans"]["elbow_k"], metrics=body.get("metrics"), edges=edges, dataset=body.get("dataset", ""),
        created_at=body.get("created_at", ""), currency=body["params"].get("currency"), graph_note=note, seed=cfg.seed))
    return {**report, "graph": graph}


def eval_settings(cfg: BuildConfig) -> EvalSettings:
    """The evaluation's settings from a build's config (one mapping for ``build`` and ``evaluate``)."""
    return EvalSettings(cutoff=cfg.eval_cutoff, seed=cfg.seed, als=cfg.als_params(), event_weights=dict(cfg.event_weights),
                        had_types=tuple(cfg.had_types), ease_lambda=cfg.ease_lambda,
                        item_item_max_items=cfg.item_item_max_items, tune=cfg.tune)


def _reason_counts(rejected) -> dict[str, int]:
    if not len(rejected):
        return {}
    return {str(k): int(v) for k, v in rejected[REJECT_REASON].value_counts().sort_index().items()}


def evaluate_bundle(path: str | Path, *, cutoff: str | None = None, tune: bool = False,
                    master: str = "local[2]", driver_memory: str = "4g", spark=None) -> dict[str, Any]:
    """Re-run the time-split evaluation on a published bundle's own events; writes ``metrics`` into its manifest.

    By default it scores the settings the bundle serves (its ALS parameters, EASE lambda and blend);
    ``tune=True`` re-tunes them on the validation window as a build does (the bundle keeps serving its own).
    """
    from index_builder.stages.session import make_spark

    folder, manifest = bundle.verify(path)
    if not (folder / bundle.EVENTS).is_file():
        raise InputError(f"{folder} has no {bundle.EVENTS} (a catalog-only bundle): there is nothing to evaluate")
    params = {k: v for k, v in manifest.get("params", {}).items() if k in BuildConfig.__dataclass_fields__}
    cfg = BuildConfig(**{**params, "eval_cutoff": cutoff or None, "tune": bool(tune)})
    served = manifest.get("als", {}).get("params", {})
    cfg.als_reg_param = served.get("reg_param", cfg.als_reg_param)
    cfg.als_alpha = served.get("alpha", cfg.als_alpha)
    cfg.ease_lambda = manifest.get("item_item", {}).get("lambda", cfg.ease_lambda)
    st = Stages()
    if spark is None:
        with st.stage("spark", "starting session on %s", master):
            spark = make_spark(master=master, driver_memory=driver_memory)
    products_pdf, embeddings, index, events = bundle_frames(folder)
    with st.stage("evaluate", "bundle %s", folder.name):
        settings = dataclasses.replace(eval_settings(cfg), recommender=manifest.get("recommender"))
        result = evaluate(spark, events, products_pdf, embeddings, index, settings, say=st.say)
    if result is None:
        raise InputError(f"{folder}: the events carry no usable timestamps, so there is no time split to evaluate on")
    bundle.update_manifest(folder, metrics=result.metrics)
    return result.metrics


def bundle_frames(folder: Path):
    """A verified bundle's products, embeddings, FAISS index and events: what the evaluation needs to re-run."""
    import faiss

    products_pdf = pd.read_parquet(folder / bundle.PRODUCTS)
    embeddings = bundle.load_array(folder, bundle.EMBEDDINGS)
    index = faiss.read_index(str(folder / bundle.FAISS_INDEX))
    return products_pdf, embeddings, index, pd.read_parquet(folder / bundle.EVENTS)
