"""The build: input -> validated frames -> embeddings, clusters, ALS, FAISS -> one published bundle.

Only this module and the CLI touch the file system; the steps it calls are pure frame functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import platform
import re
import shutil
from collections.abc import Callable, Sequence
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
    EVENT_TYPES,
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
from index_builder.core.embedders.base import (
    BACKENDS,
    DEVICES,
    DRIVER_MAX,
    encode_chunks,
    resolve_backend,
    resolve_device,
)
from index_builder.core.embedders.cache import CachedEmbedder, EmbeddingCache, default_cache, unusable
from index_builder.core.embedders.factory import (
    SAMPLE,
    Preload,
    choose_backend,
    local_cores,
    local_model,
    make_embedder,
    with_cache,
)
from index_builder.core.embedders.torch_backend import SentenceTransformerEmbedder
from index_builder.core.errors import InputError
from index_builder.core.flags import flag
from index_builder.core.progress import Stages, reported
from index_builder.evaluation.evaluate import EvalSettings, evaluate
from index_builder.insights.graph import DEFAULT_MAX_USERS
from index_builder.stages import rules
from index_builder.stages.adapters import Source, datacamp_products, from_files, movielens, online_retail
from index_builder.stages.als import ALSParams, factor_matrix, train_als
from index_builder.stages.cluster import (
    K_RULE,
    MAX_ITER,
    RESTARTS,
    SAMPLE_SIZE,
    SILHOUETTE_SIZE,
    fit_all,
    restarts_for,
    sweep_kmeans,
    widen_while_at_edge,
)
from index_builder.stages.datasets import DATASETS, get_spec, locate
from index_builder.stages.embedding import embed_column
from index_builder.stages.faiss_index import KINDS
from index_builder.stages.itemitem import DEFAULT_LAMBDA, MAX_ITEMS, fit_item_item
from index_builder.stages.readers import parse_mapping
from index_builder.stages.session import DEFAULT_MASTER, DRIVER_MEMORY

log = logging.getLogger(__name__)


EMBED_TASK_ROWS = 1_000  # texts per embedding task (about 7 s on one core): the grain of the progress lines


def parse_weights(text: str) -> dict[str, float]:
    """``--event-weights view=0.5,purchase=3`` over the defaults."""
    weights = dict(DEFAULT_EVENT_WEIGHTS)
    for key, value in parse_mapping(text).items():
        if key not in EVENT_TYPES:
            raise argparse.ArgumentTypeError(f"unknown event type {key!r} (known: {', '.join(EVENT_TYPES)})")
        weights[key] = float(value)
    return weights


def parse_types(text: str) -> tuple[str, ...]:
    types = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown event type(s) {unknown} (known: {', '.join(EVENT_TYPES)})")
    return types


def parse_currency(text: str) -> str:
    code = text.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise argparse.ArgumentTypeError(f"{text!r} is not a 3-letter currency code such as GBP, USD or EUR")
    return code


INPUT = "input (a named dataset, or your files)"


@dataclass
class BuildConfig:
    """Every knob of a build; all of it is written to the manifest's ``params``. Each field with a flag is one
    of ``python -m index_builder build``'s (:mod:`.core.flags`): its default and help are written here only."""

    out: str = flag(help="bundle root: writes OUT/<version>/ and OUT/current", required=True)
    dataset: str | None = flag(None, "a named public dataset", choices=sorted(DATASETS), group=INPUT)
    data_dir: str | None = flag(None, "folder where datasets are looked for before the download cache", group=INPUT)
    products: str | None = flag(None, "products file (.csv, .tsv, .parquet, .json/.jsonl)", group=INPUT)
    events: str | None = flag(None, "events file (same formats); optional: without it ALS is skipped", group=INPUT)
    mapping: dict[str, str] = flag(help="column names of your files, e.g. title=name,description=desc,user_id=customer",
                                   name="--map", type=parse_mapping, metavar="CANON=COL,...", factory=dict,
                                   show=lambda m: "none", group=INPUT)
    encoding: str = flag("utf-8", "text encoding of CSV/JSON input", group=INPUT)
    download: bool = flag(True, "fail instead of downloading a dataset that is not on disk", negate="--no-download",
                          group=INPUT)
    currency: str | None = flag(None, "ISO code of the prices (GBP, USD, EUR...), shown by the chat; default: the "
                                "dataset's (GBP for UCI), otherwise prices are plain numbers", type=parse_currency,
                                metavar="CODE")
    sample_users: int | None = flag(None, "keep a deterministic sample of N users (whole catalog)", type=int)
    master: str = flag(DEFAULT_MASTER, "Spark master: local[N] or spark://host:7077")
    driver_memory: str = flag(DRIVER_MEMORY, "Spark driver memory")
    seed: int = flag(42, "seed of every random choice (sampling, KMeans, ALS, the map)")
    k_min: int = flag(2, "smallest k of the KMeans sweep")
    k_max: int = flag(20, "largest k of the KMeans sweep (widened while the choice sits at its edge)")
    kmeans_max_iter: int = flag(MAX_ITER, "Lloyd iterations per KMeans fit")
    kmeans_restarts: int = flag(RESTARTS, "fits per k (seeds seed..seed+n-1; fewer on samples over 5,000 vectors); "
                                "best WSSSE kept")
    kmeans_sample: int = flag(SAMPLE_SIZE, "the k sweep fits on a seeded sample of at most this many vectors; the "
                              "chosen k is then fitted on all of them")
    als_rank: int = flag(ALSParams.rank, "ALS latent factors")
    als_reg_param: float = flag(ALSParams.reg_param, "ALS regularisation (tuned unless --no-tune)")
    als_alpha: float = flag(ALSParams.alpha, "ALS implicit-feedback confidence (tuned unless --no-tune)")
    als_max_iter: int = flag(ALSParams.max_iter, "ALS iterations")
    event_weights: dict[str, float] = flag(help="override event weights", type=parse_weights, metavar="TYPE=W,...",
                                           factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    embedder: str = flag("minilm", "minilm (offline), openai (OPENAI_API_KEY / OPENAI_BASE_URL) or a "
                         "sentence-transformers folder")
    embedding_model: str | None = flag(None, "--embedder openai: model (default text-embedding-3-small)")
    embedding_dim: int | None = flag(None, "--embedder openai: dimensions, e.g. 512 (text-embedding-3 models)", type=int)
    embed_batch_size: int = flag(64, "texts per torch batch on the CPU")
    embed_threads: int | None = flag(None, "torch / ONNX Runtime threads per Spark Python worker", type=int)
    embed_backend: str = flag("auto", "local model runtime: torch, or onnx (exported once to int8 and cached, "
                              "1.2-2.6x torch on a CPU); auto = on a GPU torch, on the CPU the faster of the two on a "
                              "sample of the catalog's texts (torch when it would take under a minute)",
                              choices=BACKENDS)
    embed_cache: bool = flag(True, "embed every text again instead of reading the vectors of texts embedded before "
                             "(by the same model, backend and libraries) from the embedding cache "
                             "($CARTWISE_EMBED_CACHE, default ~/.cache/cartwise/embeddings.sqlite)",
                             negate="--no-embed-cache")
    device: str = flag("auto", "where torch embeds: cuda (float16, large batches) or cpu; auto = cuda when torch "
                       "sees a GPU", choices=DEVICES)
    faiss: str = flag("auto", "auto: exact flat index below 50,000 products, else ivfpq: cells = the KMeans "
                      "clusters, product-quantized codes, and the vectors stored once as float16 for exact "
                      "re-scoring", choices=("auto", *KINDS))
    faiss_nprobe: int = flag(3, "clusters an ivf search visits")
    had_types: tuple[str, ...] = flag(DEFAULT_HAD_TYPES, "events that mean the shopper has the product, never "
                                      "recommended to them again (add view or cart to exclude those too)",
                                      type=parse_types, metavar="TYPE,...", show=",".join)
    ease_lambda: float = flag(DEFAULT_LAMBDA, "item-item (EASE) regularisation (tuned unless --no-tune)")
    item_item_max_items: int = flag(MAX_ITEMS, "products the item-item model covers, most bought first")
    event_type: str = flag("purchase", "the type of every event when the events file has no event_type column",
                           choices=EVENT_TYPES)
    normalize_ids: bool = flag(False, "compare product ids across files as trimmed digits: '0108775044' = "
                               "'108775044' = '108775044.0'")
    graph_users: int = flag(DEFAULT_MAX_USERS, "customers in the recommendation graph and report (a deterministic "
                            "sample beyond; 0 = all)")
    oldest_event: str = rules.oldest_event_flag()
    future_hours: float = rules.future_hours_flag()
    eval_cutoff: str | None = flag(None, "train on events before DATE, test on purchases from it on (default: the "
                                   "last 10% of the events, more when that evaluates under 200 users)", metavar="DATE")
    tune: bool = flag(True, "keep the given ALS/EASE/blend settings instead of tuning them on the validation split",
                      negate="--no-tune")
    evaluate: bool = flag(True, "skip the time-split evaluation (and the tuning it does)", negate="--no-eval")

    def bounds(self, now: dt.datetime | None = None) -> rules.Bounds:
        """The record bounds of this build (:mod:`.stages.rules`), the future measured from ``now``."""
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
    adapter = {"movielens-100k": movielens}.get(spec.name) or (
        online_retail if spec.name.startswith("online-retail") else datacamp_products)
    source = adapter(spark, path)
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


def local_embedder(r: Run, backend: str, device: str):
    """The local model on ``backend`` (``torch`` or ``onnx``, its export timed as the "export" stage)."""
    cfg = r.cfg
    if backend == "onnx":
        with r.st.stage("export", "%s to int8 ONNX (once per model; cached)", cfg.embedder):
            return make_embedder(cfg.embedder, backend="onnx", threads=_embed_threads(r.spark, cfg))
    return make_embedder(cfg.embedder, backend="torch", device=device, batch_size=cfg.embed_batch_size,
                         threads=_embed_threads(r.spark, cfg) if device == "cpu" else None)


def measured_backend(r: Run, device: str, cache_path: str | None) -> tuple[str, dict[str, Any]]:
    """``--embed-backend auto`` on the CPU: time torch and ONNX int8 on a spread sample of this catalog's texts
    (:func:`~index_builder.core.embedders.factory.choose_backend`), both with the driver's threads."""
    from pyspark.sql import functions as F

    from index_builder.stages.transforms import product_text

    cfg = r.cfg
    step = max(1, r.n_products // SAMPLE)
    sample = (product_text(r.products).where(F.col(PRODUCT_IDX) % step == 0).orderBy(PRODUCT_IDX).select(TEXT)
              .limit(SAMPLE).toPandas()[TEXT].fillna("").astype(str).tolist())
    threads = cfg.embed_threads or local_cores(cfg.master) or os.cpu_count() or 1
    torch_embedder = (r.preload.get() if r.preload is not None else
                      make_embedder(cfg.embedder, backend="torch", device=device, batch_size=cfg.embed_batch_size,
                                    threads=threads))

    def onnx_embedder():
        with r.st.stage("export", "%s to int8 ONNX (once per model; cached)", cfg.embedder):
            return make_embedder(cfg.embedder, backend="onnx", threads=threads)

    def onnx_if_exported():
        from index_builder.core.embedders.onnx_backend import exported

        path, model = local_model(cfg.embedder)
        return onnx_embedder() if exported(path, model=model) else None

    backend, record = choose_backend(sample, r.n_products, torch_embedder, onnx_embedder, cache_path,
                                     onnx_if_exported)
    if "texts_per_s" in record:
        r.st.say("embed: auto backend: %s (%s texts/s on %d of the catalog's texts; estimated %s s%s)", backend,
                 record["texts_per_s"], len(sample), record["estimated_s"],
                 f"; int8 cosine to torch {record['onnx_cosine']}" if "onnx_cosine" in record else "")
    else:
        r.st.say("embed: auto backend: %s (the embedding cache holds its vectors of the catalog: %s)", backend,
                 record.get("cached_share"))
    return backend, record



@dataclass
class Run:
    """One build's working state: the config, the Spark session and clock, and the plain values each stage
    adds (a stage reads the fields the stages before it filled). ``keep`` caches a frame until the build ends."""

    cfg: BuildConfig
    st: Stages
    spark: Any = None
    bounds: rules.Bounds | None = None
    created_at: str = ""
    preload: Preload | None = None
    cached: list = field(default_factory=list)
    background: ThreadPoolExecutor | None = None  # the final ALS fit (see start_final_fit)
    final_fit: dict = field(default_factory=dict)  # ALSParams -> the future of its final fit
    # load, validate
    source: Source | None = None
    products: Any = None  # Spark frames until "collect"
    events: Any = None
    rejected: dict[str, pd.DataFrame] = field(default_factory=dict)
    n_products: int = 0
    n_events: int = 0
    # interactions
    inter: Any = None
    users: Any = None
    n_users: int = 0
    n_pairs: int = 0
    # events_summary
    events_summary: dict[str, Any] | None = None  # what the events say (insights.events): the report draws it
    # embed
    embedder: Any = None
    in_driver: bool = False
    embed_cache: dict[str, Any] | None = None  # the embedding cache's path and hits (None: not used)
    embed_choice: dict[str, Any] | None = None  # how --embed-backend auto chose (None: not measured)
    embeddings: np.ndarray | None = None
    # kmeans, faiss
    k_range: tuple[int, int] = (1, 1)
    k: int = 1
    elbow: int = 1
    sweep: list = field(default_factory=list)
    widened: list = field(default_factory=list)
    kmeans_info: dict[str, Any] = field(default_factory=dict)
    labels: np.ndarray | None = None
    centroids: np.ndarray | None = None
    faiss_kind: str = "flat"
    faiss_why: str | None = None
    index: Any = None
    # collect
    products_pdf: pd.DataFrame | None = None
    users_pdf: pd.DataFrame | None = None
    inter_pdf: pd.DataFrame | None = None
    events_pdf: pd.DataFrame | None = None
    # evaluate, als, item_item
    result: Any = None
    als_params: ALSParams | None = None
    ease_lambda: float = 0.0
    recommender: dict[str, Any] | None = None
    als_info: dict[str, Any] = field(default_factory=dict)
    item_info: dict[str, Any] = field(default_factory=dict)
    item_factors: np.ndarray | None = None
    user_factors: np.ndarray | None = None
    item_neighbours: np.ndarray | None = None
    item_weights: np.ndarray | None = None
    buy_again_pdf: pd.DataFrame | None = None
    buy_again_info: dict[str, Any] = field(default_factory=dict)
    # write
    folder: Path | None = None

    def keep(self, df):
        self.cached.append(df.cache())
        return self.cached[-1]


@dataclass(frozen=True)
class Stage:
    """One named stage of a build: ``run`` returns the values it adds to the :class:`Run`; the stage line and
    the manifest's ``timings_s`` entry come from the runner (:func:`run_stages`). ``name=None``: an untimed
    step (a decision between two stages, or a stage that times its own parts)."""

    name: str | None
    run: Callable[[Run], dict[str, Any]]
    line: Callable[[Run], str] | None = None
    when: Callable[[Run], bool] | None = None


def run_stages(r: Run, stages: Sequence[Stage]) -> None:
    """Run ``stages`` in order: each under its stage line and timing, its values set on ``r``."""
    for stage in stages:
        if stage.when is not None and not stage.when(r):
            continue
        if stage.name is None:
            values = stage.run(r)
        else:
            line = stage.line(r) if stage.line else ""
            with r.st.stage(stage.name, "%s" if line else "", *([line] if line else [])):
                values = stage.run(r)
        for key, value in values.items():
            if key not in Run.__dataclass_fields__:
                raise TypeError(f"stage {stage.name or stage.run.__name__} returned {key!r}, which Run does not hold")
            setattr(r, key, value)


def start_spark(r: Run) -> dict[str, Any]:
    from index_builder.stages.session import make_spark

    return {"spark": make_spark(master=r.cfg.master, driver_memory=r.cfg.driver_memory)}


def load(r: Run) -> dict[str, Any]:
    return {"source": load_source(r.spark, r.cfg)}


def validate(r: Run) -> dict[str, Any]:
    """Valid products (prices filled from the events where the catalog has none) and events; the rejects."""
    from pyspark.sql import functions as F

    from index_builder.stages.transforms import prices_from_events, sample_users, validate_events, validate_products

    cfg, st, source, keep = r.cfg, r.st, r.source, r.keep
    for said in source.defaults.values():
        st.say("validate: %s", said)
    products, product_rejects = validate_products(source.products, cfg.normalize_ids, persist=keep, bounds=r.bounds)
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
                                                bounds=r.bounds)
        rejects["events"] = event_rejects  # events: rows of the checked events validate_events kept (not cached twice)
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
    st.say("validate: %d products, %s events, rejected %s", n_products, "no" if events is None else f"{n_events:,}",
           {n: len(rj) for n, rj in rejected.items()})
    return {"products": products, "events": events, "rejected": rejected, "n_products": n_products,
            "n_events": n_events}


def interactions(r: Run) -> dict[str, Any]:
    """(user, product) interactions, the products' popularity and the user and product indexes."""
    from index_builder.stages.transforms import add_popularity, aggregate_interactions, event_weights, with_index

    keep = r.keep
    if r.events is not None:
        # cached: read three times below (popularity, the user index, the indexed pairs)
        inter = keep(aggregate_interactions(event_weights(r.events, r.cfg.event_weights), tuple(r.cfg.had_types)))
    else:
        inter = r.spark.createDataFrame([], "user_id string, product_id string, weight double, "
                                        "n_events long, purchased boolean, had boolean, last_ts timestamp")
    products = keep(with_index(add_popularity(r.products, inter), PRODUCT_ID, PRODUCT_IDX))
    users = keep(with_index(inter.select(USER_ID).distinct(), USER_ID, USER_IDX))
    inter = keep(inter.join(products.select(PRODUCT_ID, PRODUCT_IDX), PRODUCT_ID).join(users, USER_ID))
    return {"products": products, "users": users, "inter": inter, "n_users": users.count(), "n_pairs": inter.count()}


def events_summary(r: Run) -> dict[str, Any]:
    """What the events say before any model (counts per period by type, funnel, long tail, best sellers): Spark
    aggregates of the validated events, for the report."""
    from index_builder.insights.events import summarize_events

    # sampled users' events say nothing of the products the others bought: no "never touched" count then
    n_catalog = None if r.cfg.sample_users else r.n_products
    return {"events_summary": summarize_events(r.events, r.products, n_products=n_catalog)}


def choose_embedder(r: Run) -> dict[str, Any]:
    """The build's embedder: OpenAI, or the local model on the backend asked for (``auto``: measured); a small
    local catalog embeds in the driver with the model preloaded at the start."""
    cfg, choice, cache_path, unavailable = r.cfg, None, None, None
    if cfg.embed_cache and cfg.embedder != "openai":  # the OpenAI embedder keeps its own cache
        cache_path = default_cache()
        why = unusable(cache_path)
        if why is not None:  # a cache only saves time: the build goes on without it, and says so
            r.st.say("embed: warning: the embedding cache %s cannot be used (%s); embedding every text. Delete or "
                     "move the file, point CARTWISE_EMBED_CACHE elsewhere, or build with --no-embed-cache",
                     cache_path, why)
            cache_path, unavailable = None, f"unavailable: {why}"
    if cfg.embedder == "openai":
        embedder = make_embedder("openai", model=cfg.embedding_model, dim=cfg.embedding_dim)
    else:
        device = resolve_device(cfg.device)
        backend = resolve_backend(cfg.embed_backend, device)
        if backend == "measure":
            backend, choice = measured_backend(r, device, cache_path)
        embedder = local_embedder(r, backend, device)
    in_driver = (r.preload is not None and embedder.backend == SentenceTransformerEmbedder.backend
                 and r.n_products <= DRIVER_MAX)
    if in_driver:
        embedder = r.preload.get()
    if cache_path is not None:  # a local model reads the texts it embedded before from the cache
        embedder = with_cache(embedder, cache_path)
    # the preload is not needed any more (or never was: a big catalog embeds in the executors)
    return {"embedder": embedder, "in_driver": in_driver, "preload": None, "embed_choice": choice,
            "embed_cache": unavailable}


def embed(r: Run) -> dict[str, Any]:
    """Every product's vector. A small local catalog embeds in the driver; a big one in the executors, where the
    driver first looks each text up in the embedding cache (by its sha256, computed by Spark: the texts stay
    there) and the executors embed only the texts it does not hold, whose vectors the driver then stores."""
    from index_builder.stages.transforms import product_text

    embedder, n_products = r.embedder, r.n_products
    if r.in_driver:
        texts = product_text(r.products).select(PRODUCT_IDX, TEXT).orderBy(PRODUCT_IDX).toPandas()
        done = [0]
        with reported(r.st, "embed", n_products, "texts", lambda: done[0]):
            vectors = encode_chunks(embedder, texts[TEXT].fillna("").astype(str).tolist(), EMBED_TASK_ROWS, done)
        hits = getattr(embedder, "hits", 0)
    else:
        vectors, hits = embed_in_executors(r, embedder)
    cache = ({"path": embedder.path, "from_cache": int(hits), "encoded": n_products - int(hits)}
             if isinstance(embedder, CachedEmbedder) else r.embed_cache)
    if isinstance(embedder, CachedEmbedder):
        r.st.say("embed: %d of %d texts from the embedding cache (%s), %d encoded", cache["from_cache"], n_products,
                 cache["path"], cache["encoded"])
    return {"embeddings": bundle.check_finite(bundle.EMBEDDINGS, np.asarray(vectors, dtype=np.float32)),
            "embed_cache": cache}


def embed_in_executors(r: Run, embedder) -> tuple[np.ndarray, int]:
    """(vectors by product row, how many came from the cache): the executors embed what the driver's cache
    lacks (everything without one) in tasks of at most EMBED_TASK_ROWS texts, whose counts reach the driver as
    each ends."""
    from pyspark.sql import functions as F

    from index_builder.stages.transforms import product_text

    texts = product_text(r.products).select(PRODUCT_IDX, F.coalesce(F.col(TEXT), F.lit("")).alias(TEXT))
    vectors = np.zeros((r.n_products, embedder.dim), dtype=np.float32)
    hits = 0
    cached = isinstance(embedder, CachedEmbedder)
    if cached:
        prefix = EmbeddingCache.prefix(embedder.model, embedder.tag)
        keys = texts.select(PRODUCT_IDX, F.concat(F.lit(prefix), F.sha2(F.col(TEXT), 256)).alias("key")).toPandas()
        have = embedder.cache.get_many(list(dict.fromkeys(keys["key"])), embedder.dim)
        found = keys["key"].isin(have).to_numpy()
        if found.any():
            vectors[keys[PRODUCT_IDX].to_numpy()[found]] = np.stack([have[k] for k in keys["key"][found]])
        hits = int(found.sum())
        missing = keys.loc[~found, [PRODUCT_IDX]]
        if missing.empty:
            return vectors, hits
        texts = texts.join(F.broadcast(r.spark.createDataFrame(missing)), PRODUCT_IDX)
        embedder = embedder.inner
    todo = r.n_products - hits
    texts = texts.repartition(max(r.spark.sparkContext.defaultParallelism, -(-todo // EMBED_TASK_ROWS)))
    counter = r.spark.sparkContext.accumulator(0)
    embedded = embed_column(texts, embedder, TEXT, EMBEDDING, counter=counter)
    with reported(r.st, "embed", todo, "texts", lambda: counter.value):
        emb_pdf = embedded.select(PRODUCT_IDX, EMBEDDING).toPandas()
    rows = emb_pdf[PRODUCT_IDX].to_numpy()
    vectors[rows] = np.stack(emb_pdf[EMBEDDING].to_numpy()).astype(np.float32)
    if cached:
        key_of = pd.Series(keys["key"].to_numpy(), index=keys[PRODUCT_IDX].to_numpy())
        r.embedder.cache.put_many(dict(zip(key_of[rows], vectors[rows], strict=True)))
    return vectors, hits


def embed_line(r: Run) -> str:
    return (f"{r.n_products} products with {r.embedder.model} ({r.embedder.backend}, in the "
            f"{'driver' if r.in_driver else 'executors'})")


def k_range(r: Run) -> dict[str, Any]:
    k_max = min(r.cfg.k_max, r.n_products - 1)
    return {"k_range": (min(r.cfg.k_min, k_max), k_max)}


def kmeans(r: Run) -> dict[str, Any]:
    """The k sweep (elbow, then the best silhouette past it; widened while the choice sits at the edge) and
    the chosen k fitted on every vector."""
    cfg, st, embeddings, n_products = r.cfg, r.st, r.embeddings, r.n_products
    k_min, k_max = r.k_range
    if k_max < 2:  # one or two products: nothing to cluster
        st.say("kmeans: chose k=%d (elbow %d)", 1, 1)
        return {"k": 1, "elbow": 1, "sweep": [], "widened": [], "kmeans_info": {},
                "labels": np.zeros(n_products, dtype=np.int32), "centroids": embeddings.mean(axis=0, keepdims=True)}
    n_sample = min(n_products, cfg.kmeans_sample)

    def sweep_range(lo: int, hi: int):
        fits = r.spark.sparkContext.accumulator(0)
        total = (hi - lo + 1) * restarts_for(n_sample, cfg.kmeans_restarts)
        with reported(st, "kmeans", total, "fits", lambda: fits.value):
            return sweep_kmeans(r.spark, embeddings, k_min=lo, k_max=hi, seed=cfg.seed, counter=fits,
                                max_iter=cfg.kmeans_max_iter, restarts=cfg.kmeans_restarts,
                                sample_size=cfg.kmeans_sample)

    sweep, fitted, k, elbow, widened = widen_while_at_edge(sweep_range, max(2, k_min), k_max, n_products, say=st.say)
    info = {"sample": n_sample, "silhouette_sample": min(n_sample, SILHOUETTE_SIZE),
            "restarts_used": restarts_for(n_sample, cfg.kmeans_restarts)}
    if n_sample < n_products:
        st.say("kmeans: swept on a sample of %d of %d vectors; fitting k=%d on all", n_sample, n_products, k)
    labels, centroids, wssse, iters = fit_all(embeddings, fitted[k], max_iter=cfg.kmeans_max_iter)
    info.update(wssse_all=wssse, iterations_all=iters)
    st.say("kmeans: chose k=%d (elbow %d)", k, elbow)
    return {"k": k, "elbow": elbow, "sweep": sweep, "widened": widened, "kmeans_info": info, "labels": labels,
            "centroids": centroids}


def choose_faiss(r: Run) -> dict[str, Any]:
    from index_builder.stages.faiss_index import LARGE, effective_kind

    cfg = r.cfg
    kind = cfg.faiss if cfg.faiss != "auto" else ("ivfpq" if r.n_products >= LARGE and r.k > 1 else "flat")
    kind, why = effective_kind(kind, r.n_products, r.k)
    if why:
        r.st.say("faiss: %s; building %s", why, kind)
    return {"faiss_kind": kind, "faiss_why": why}


def faiss_index(r: Run) -> dict[str, Any]:
    from index_builder.stages.faiss_index import build_index

    return {"index": build_index(r.embeddings, r.faiss_kind, centroids=r.centroids, labels=r.labels,
                                 nprobe=r.cfg.faiss_nprobe, seed=r.cfg.seed)}


def collect(r: Run) -> dict[str, Any]:
    """The Spark frames as the bundle's pandas tables (products in index order, with their cluster)."""
    products_pdf = r.products.drop(ROW_ID).orderBy(PRODUCT_IDX).toPandas()
    products_pdf[CLUSTER] = r.labels[products_pdf[PRODUCT_IDX].to_numpy()]
    products_pdf[POPULARITY] = products_pdf[POPULARITY].astype("int64")
    return {"products_pdf": products_pdf.drop(columns=[PRODUCT_IDX]).reset_index(drop=True),
            "users_pdf": r.users.orderBy(USER_IDX).toPandas(),
            "inter_pdf": r.inter.orderBy(USER_IDX, PRODUCT_IDX).toPandas(),
            "events_pdf": r.events.select(*EVENT_COLUMNS).toPandas() if r.events is not None else None}


def final_als(r: Run, params: ALSParams) -> tuple[np.ndarray, np.ndarray]:
    model = train_als(r.inter, params)
    return (factor_matrix(model.itemFactors, r.n_products, params.rank, name=bundle.ITEM_FACTORS),
            factor_matrix(model.userFactors, r.n_users, params.rank, name=bundle.USER_FACTORS))


def start_final_fit(r: Run, params: ALSParams) -> None:
    """Start the final ALS fit as soon as the evaluation has settled its parameters: Spark fits it while the
    evaluation's blend search and scoring run in Python."""
    if params not in r.final_fit:
        r.final_fit[params] = r.background.submit(final_als, r, params)


def can_evaluate(r: Run) -> bool:
    return bool(r.cfg.evaluate and r.events is not None and r.n_pairs and r.n_users >= 2)


def run_evaluation(r: Run) -> dict[str, Any]:
    """The time-split evaluation, which also tunes ALS, the EASE lambda and the blend on validation."""
    result = evaluate(r.spark, r.events_pdf, r.products_pdf, r.embeddings, r.index, eval_settings(r.cfg),
                      say=r.st.say, als_chosen=lambda params: start_final_fit(r, params))
    if result is None:
        return {"result": None}
    return {"result": result, "als_params": result.als, "ease_lambda": result.ease_lambda,
            "recommender": result.recommender}


def buy_again_model(r: Run) -> dict[str, Any]:
    """The buy-again table the chat restocks from: a model of the last window (as long as the evaluation's test
    window; features from before it, labels in it), predicting every customer's past products at the newest event."""
    from index_builder.evaluation.evaluate import time_split
    from index_builder.stages import buy_again

    if r.events_pdf is None or not r.n_pairs:
        return {"buy_again_info": {"skipped": "no events"}}
    span = r.result.span if r.result is not None else time_split(r.events_pdf, eval_settings(r.cfg), r.st.say)
    if span is None:
        return {"buy_again_info": {"skipped": "the events carry no usable timestamps"}}
    had = tuple(r.cfg.had_types)
    end = span.hi + dt.timedelta(microseconds=1)  # the windows end after the newest event, which counts too
    model = buy_again.fit(r.events_pdf, had, span.test_cut, end, seed=r.cfg.seed)
    if model is None:
        return {"buy_again_info": {"skipped": f"fewer than {buy_again.MIN_POSITIVES} repeat orders in the last window "
                                              f"({span.test_cut:%Y-%m-%d} .. {span.hi:%Y-%m-%d}): nothing to restock"}}
    table = buy_again.predict_table(model, r.events_pdf, had, end)
    info = {**model.fitted_on, "window_days": round(span.window, 1), "predicted_at": span.hi.isoformat(),
            "pairs_predicted": len(table), "mean_probability": round(float(table[buy_again.PROBABILITY].mean()), 4)}
    r.st.say("buy-again: %d pairs, fitted on %d (%d repeat orders in the last %.0f days)", len(table), model.fitted_on["pairs"],
             model.fitted_on["positives"], span.window)
    return {"buy_again_pdf": table[list(buy_again.TABLE_COLUMNS)], "buy_again_info": info}


def als(r: Run) -> dict[str, Any]:
    if r.events is None:
        return {"als_info": {"skipped": "the dataset has no events (catalog only)"}}
    if r.n_pairs == 0 or r.n_users < 2:
        return {"als_info": {"skipped": f"too few interactions to learn from ({r.n_users} users, {r.n_pairs} pairs)"}}
    started = r.final_fit.get(r.als_params)
    item_factors, user_factors = started.result() if started is not None else final_als(r, r.als_params)
    return {"item_factors": item_factors, "user_factors": user_factors,
            "als_info": {"params": r.als_params.as_dict(), "implicit_prefs": True,
                         "items_with_factors": int((np.abs(item_factors).sum(axis=1) > 0).sum())}}


def item_item(r: Run) -> dict[str, Any]:
    if "skipped" in r.als_info:
        return {"item_info": {"skipped": r.als_info["skipped"]}}
    neighbours, weights, info = fit_item_item(r.inter_pdf, r.n_products, r.ease_lambda,
                                              max_items=r.cfg.item_item_max_items)
    return {"item_neighbours": neighbours, "item_weights": weights, "item_info": info}


def write(r: Run) -> dict[str, Any]:
    """Publish the bundle (its files, the manifest, then the insights report inside the new version)."""
    return {"folder": bundle.publish(Path(r.cfg.out), lambda folder: fill_bundle(r, folder))}


BUILD_STAGES: tuple[Stage, ...] = (
    Stage("spark", start_spark, lambda r: f"starting session on {r.cfg.master}", when=lambda r: r.spark is None),
    Stage("load", load, lambda r: f"reading {r.cfg.dataset or r.cfg.products}"),
    Stage("validate", validate),
    Stage("interactions", interactions, lambda r: f"weighting events ({r.cfg.event_weights})"),
    Stage("events_summary", events_summary, lambda r: "events per period, funnel, long tail, best sellers"),
    Stage(None, choose_embedder),  # times its ONNX export, when there is one, as the "export" stage
    Stage("embed", embed, embed_line),
    Stage(None, k_range),
    Stage("kmeans", kmeans, lambda r: f"sweep k={r.k_range[0]}..{r.k_range[1]}"),
    Stage(None, choose_faiss),
    Stage("faiss", faiss_index, lambda r: f"{r.faiss_kind} index over {r.n_products} vectors"),
    Stage("collect", collect),
    Stage("evaluate", run_evaluation, lambda r: f"time split{f' at {r.cfg.eval_cutoff}' if r.cfg.eval_cutoff else ''}",
          when=can_evaluate),
    Stage("buy_again", buy_again_model, lambda r: "who is due to order what again"),
    Stage("als", als),
    Stage("item_item", item_item, lambda r: f"EASE, lambda {r.ease_lambda}"),
    Stage("write", write, lambda r: f"publishing bundle under {r.cfg.out}"),  # runs the "report" stage inside
)


def build(cfg: BuildConfig, spark=None) -> Path:
    """Run the whole build (:data:`BUILD_STAGES`) and publish ``cfg.out/<version>`` (+ ``current``); returns
    the version folder."""
    started = dt.datetime.now(dt.UTC)
    bounds = cfg.bounds(started)
    try:
        bounds.window()
    except ValueError as exc:
        raise InputError(f"--oldest-event / --future-hours: {exc}") from None
    r = Run(cfg=cfg, st=Stages(), spark=spark, bounds=bounds, created_at=started.isoformat(timespec="seconds"),
            background=ThreadPoolExecutor(max_workers=1, thread_name_prefix="final-als"),
            als_params=cfg.als_params(), ease_lambda=cfg.ease_lambda)  # unless the evaluation tunes them
    cores = local_cores(cfg.master)
    if cores and cfg.embedder != "openai" and cfg.embed_backend in ("auto", "torch"):
        # a local build loads the torch model while Spark starts and reads (see Preload)
        r.preload = Preload(cfg.embedder, device=cfg.device, threads=cfg.embed_threads or cores,
                            batch_size=cfg.embed_batch_size)
    try:
        run_stages(r, BUILD_STAGES)
        r.st.say("built %s: %d products, %d users, k=%d", r.folder, r.n_products, r.n_users, r.k)
        return r.folder
    finally:
        r.background.shutdown(wait=False, cancel_futures=True)
        for df in r.cached:
            df.unpersist()


def manifest_body(r: Run) -> dict[str, Any]:
    """The manifest of the build in ``r`` (the report adds its part once the files are written)."""
    cfg = r.cfg
    counts = {
        "products": r.n_products,
        "users": r.n_users,
        "events": r.n_events,
        "interactions": r.n_pairs,
        "positive_interactions": int((r.inter_pdf[WEIGHT] > 0).sum()),
        **{f"source_{k}": v for k, v in r.source.counts.items()},
        "rejected": {name: _reason_counts(df) for name, df in r.rejected.items()},
    }
    ivf = r.faiss_kind.startswith("ivf")
    return {
        "created_at": r.created_at,
        "dataset": r.source.name,
        "inputs": r.source.files,
        "params": {**asdict(cfg), "currency": r.source.currency},
        "assumed": r.source.defaults,
        "versions": _versions(),
        "counts": counts,
        "embedding": {**r.embedder.identity(), "where": "driver" if r.in_driver else "executors",
                      "cache": r.embed_cache or "off", **({"choice": r.embed_choice} if r.embed_choice else {})},
        "kmeans": {"k": r.k, "elbow_k": r.elbow, "rule": K_RULE, "seed": cfg.seed, "restarts": cfg.kmeans_restarts,
                   "widened": r.widened, **r.kmeans_info, "sweep": r.sweep},
        "als": r.als_info,
        "item_item": r.item_info,
        "buy_again": r.buy_again_info,
        "recommender": r.recommender or {},
        "metrics": r.result.metrics if r.result is not None else {
            "skipped": "--no-eval" if not cfg.evaluate else "no events with timestamps to split in time"},
        "faiss": {"kind": r.faiss_kind, "requested": cfg.faiss, "why": r.faiss_why, "metric": "inner_product",
                  "ntotal": int(r.index.ntotal), "nprobe": cfg.faiss_nprobe if ivf else None,
                  "cells": "kmeans clusters" if ivf else None},
        "timings_s": r.st.timings_s,
    }


def fill_bundle(r: Run, folder: Path) -> dict[str, Any]:
    """Write the bundle's files into ``folder`` (being published); returns its manifest."""
    import faiss

    body = manifest_body(r)
    r.products_pdf.to_parquet(folder / bundle.PRODUCTS, index=False)
    if getattr(r.embedder, "folder", None):  # the exported ONNX graph: the assistant embeds queries with it
        shutil.copytree(r.embedder.folder, folder / bundle.EMBEDDER_DIR)
        body["embedding"]["folder"] = bundle.EMBEDDER_DIR
    # a big catalog keeps one float16 copy for the assistant (the ivfpq index holds only codes)
    embeddings = r.embeddings.astype(np.float16) if r.faiss_kind == "ivfpq" else r.embeddings
    bundle.save_array(folder, bundle.EMBEDDINGS, embeddings)
    bundle.save_array(folder, bundle.CENTROIDS, r.centroids)
    faiss.write_index(r.index, str(folder / bundle.FAISS_INDEX))
    r.users_pdf.to_parquet(folder / bundle.USERS, index=False)
    r.inter_pdf.to_parquet(folder / bundle.INTERACTIONS, index=False)
    if r.events_pdf is not None:
        r.events_pdf.to_parquet(folder / bundle.EVENTS, index=False)
    if r.buy_again_pdf is not None:
        r.buy_again_pdf.to_parquet(folder / bundle.BUY_AGAIN, index=False)
    if r.item_factors is not None:
        bundle.save_array(folder, bundle.ITEM_FACTORS, r.item_factors)
        bundle.save_array(folder, bundle.USER_FACTORS, r.user_factors)
    if r.item_neighbours is not None:
        bundle.save_item_item(folder, r.item_neighbours, r.item_weights)
    for name, df in r.rejected.items():
        if len(df):
            (folder / bundle.REJECTS_DIR).mkdir(exist_ok=True)
            df.to_csv(folder / bundle.REJECTS_DIR / f"{name}.csv", index=False)
    with r.st.stage("report", "recommendation graph and insights report"):
        body["report"] = write_insights(folder, body, r.products_pdf, r.embeddings, r.index, r.users_pdf, r.inter_pdf,
                                        r.item_factors, r.user_factors, r.item_neighbours, r.item_weights, r.cfg, r.st,
                                        events_summary=r.events_summary)
    return body


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
                   st: Stages, events_summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recommendation graph (the finished bundle's own picks for each user) and the insights report
    (``events_summary``: :func:`index_builder.insights.events.summarize_events` of the build's events)."""
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
        created_at=body.get("created_at", ""), currency=body["params"].get("currency"), graph_note=note, seed=cfg.seed,
        events=events_summary))
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
                    master: str = DEFAULT_MASTER, driver_memory: str = DRIVER_MEMORY, spark=None) -> dict[str, Any]:
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
