"""``python -m index_builder``: build a bundle, show one, stream live events into one, export it to a database."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys

from index_builder.core.constants import DEFAULT_EVENT_WEIGHTS, DEFAULT_HAD_TYPES, EVENT_TYPES
from index_builder.core.embedders.base import BACKENDS, DEVICES
from index_builder.core.errors import BuilderError
from index_builder.insights.graph import DEFAULT_MAX_USERS
from index_builder.stages import rules
from index_builder.stages.cluster import SAMPLE_SIZE
from index_builder.stages.datasets import DATASETS
from index_builder.stages.faiss_index import KINDS
from index_builder.stages.itemitem import MAX_ITEMS
from index_builder.stages.readers import parse_mapping

log = logging.getLogger("index_builder")


def _weights(text: str) -> dict[str, float]:
    weights = dict(DEFAULT_EVENT_WEIGHTS)
    for key, value in parse_mapping(text).items():
        if key not in EVENT_TYPES:
            raise argparse.ArgumentTypeError(f"unknown event type {key!r} (known: {', '.join(EVENT_TYPES)})")
        weights[key] = float(value)
    return weights


def _types(text: str) -> tuple[str, ...]:
    types = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown event type(s) {unknown} (known: {', '.join(EVENT_TYPES)})")
    return types


def _cutoff_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval-cutoff", metavar="DATE",
                        help="train on events before DATE, test on purchases from it on (default: the last 10%% of the time span)")


def _bounds_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--oldest-event", default=rules.OLDEST_EVENT, metavar="DATE",
                        help=f"reject events dated before DATE as timestamp_too_old (default {rules.OLDEST_EVENT})")
    parser.add_argument("--future-hours", type=float, default=rules.FUTURE_HOURS, metavar="H",
                        help="reject events dated more than H hours after the clock as timestamp_in_future "
                             f"(default {rules.FUTURE_HOURS:g}: clock skew)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m index_builder", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build an artifact bundle from a dataset or your own files")
    src = b.add_argument_group("input (a named dataset, or your files)")
    src.add_argument("--dataset", choices=sorted(DATASETS), help="a named public dataset")
    src.add_argument("--data-dir", help="folder where datasets are looked for before the download cache")
    src.add_argument("--no-download", dest="download", action="store_false",
                     help="fail instead of downloading a dataset that is not on disk")
    src.add_argument("--products", help="products file (.csv, .tsv, .parquet, .json/.jsonl)")
    src.add_argument("--events", help="events file (same formats); optional: without it ALS is skipped")
    src.add_argument("--map", dest="mapping", default="", metavar="CANON=COL,...",
                     help="column names of your files, e.g. title=name,description=desc,user_id=customer")
    src.add_argument("--encoding", default="utf-8", help="text encoding of CSV/JSON input (default utf-8)")
    b.add_argument("--currency", type=_currency, metavar="CODE",
                   help="ISO code of the prices (GBP, USD, EUR...), shown by the chat; default: the dataset's "
                        "(GBP for UCI), otherwise prices are plain numbers")
    b.add_argument("--out", required=True, help="bundle root: writes OUT/<version>/ and OUT/current")
    b.add_argument("--sample-users", type=int, help="keep a deterministic sample of N users (whole catalog)")
    b.add_argument("--master", default="local[2]", help="Spark master: local[N] or spark://host:7077")
    b.add_argument("--driver-memory", default="4g")
    b.add_argument("--seed", type=int, default=42)
    b.add_argument("--k-min", type=int, default=2)
    b.add_argument("--k-max", type=int, default=20)
    b.add_argument("--kmeans-max-iter", type=int, default=30)
    b.add_argument("--kmeans-restarts", type=int, default=3,
                   help="fits per k (seeds seed..seed+n-1; fewer on samples over 5,000 vectors); best WSSSE kept")
    b.add_argument("--kmeans-sample", type=int, default=SAMPLE_SIZE,
                   help="the k sweep fits on a seeded sample of at most this many vectors; the chosen k is then "
                        "fitted on all of them")
    b.add_argument("--als-rank", type=int, default=32)
    b.add_argument("--als-reg-param", type=float, default=0.1)
    b.add_argument("--als-alpha", type=float, default=1.0)
    b.add_argument("--als-max-iter", type=int, default=10)
    b.add_argument("--event-weights", type=_weights, default=dict(DEFAULT_EVENT_WEIGHTS), metavar="TYPE=W,...",
                   help=f"override event weights (default {DEFAULT_EVENT_WEIGHTS})")
    b.add_argument("--embedder", default="minilm",
                   help="minilm (default, offline), openai (OPENAI_API_KEY / OPENAI_BASE_URL) or a sentence-transformers folder")
    b.add_argument("--embedding-model", help="--embedder openai: model (default text-embedding-3-small)")
    b.add_argument("--embedding-dim", type=int, help="--embedder openai: dimensions, e.g. 512 (text-embedding-3 models)")
    b.add_argument("--embed-batch-size", type=int, default=64)
    b.add_argument("--embed-threads", type=int, help="torch / ONNX Runtime threads per Spark Python worker")
    b.add_argument("--embed-backend", choices=BACKENDS, default="auto",
                   help="local model runtime: torch, or onnx (exported once to int8 and cached, about 2x faster on "
                        "a CPU); auto = onnx on the CPU from 50,000 products, else torch")
    b.add_argument("--device", choices=DEVICES, default="auto",
                   help="where torch embeds: cuda (float16, large batches) or cpu; auto = cuda when torch sees a GPU")
    b.add_argument("--faiss", choices=("auto", *KINDS), default="auto",
                   help="auto (default): exact flat index below 50,000 products, else ivfpq: cells = the KMeans "
                        "clusters, product-quantized codes, and the vectors kept once as float16 for exact re-scoring")
    b.add_argument("--faiss-nprobe", type=int, default=3, help="clusters an ivf search visits")
    b.add_argument("--had-types", default=",".join(DEFAULT_HAD_TYPES), type=_types, metavar="TYPE,...",
                   help="events that mean the shopper has the product, never recommended to them again "
                        f"(default {','.join(DEFAULT_HAD_TYPES)}; add view or cart to exclude those too)")
    b.add_argument("--ease-lambda", type=float, default=200.0, help="item-item (EASE) regularisation (tuned unless --no-tune)")
    b.add_argument("--item-item-max-items", type=int, default=MAX_ITEMS,
                   help=f"products the item-item model covers, most bought first (default {MAX_ITEMS:,})")
    b.add_argument("--event-type", choices=EVENT_TYPES, default="purchase",
                   help="the type of every event when the events file has no event_type column (default purchase)")
    b.add_argument("--normalize-ids", action="store_true",
                   help="compare product ids across files as trimmed digits: '0108775044' = '108775044' = '108775044.0'")
    b.add_argument("--graph-users", type=int, default=DEFAULT_MAX_USERS,
                   help=f"customers in the recommendation graph and report (a deterministic sample beyond; "
                        f"default {DEFAULT_MAX_USERS:,}; 0 = all)")
    _bounds_flags(b)
    _cutoff_flag(b)
    b.add_argument("--no-tune", dest="tune", action="store_false",
                   help="keep the given ALS/EASE/blend settings instead of tuning them on the validation split")
    b.add_argument("--no-eval", dest="evaluate", action="store_false",
                   help="skip the time-split evaluation (and the tuning it does)")
    b.add_argument("--export-db", metavar="URL",
                   help="also write every user's top-N to the recommendations table at this SQLAlchemy URL "
                        "(e.g. mysql+pymysql://root@127.0.0.1:3306/test)")
    b.add_argument("--export-top", type=int, default=10, help="N of --export-db (default 10)")
    b.add_argument("-v", "--verbose", action="store_true")

    x = sub.add_parser("export-db", help="write every user's top-N of a bundle to a database table")
    x.add_argument("--bundle", required=True, help="bundle root or version folder")
    x.add_argument("--db", required=True, metavar="URL", help="SQLAlchemy URL")
    x.add_argument("--top", type=int, default=10)
    x.add_argument("-v", "--verbose", action="store_true")

    st = sub.add_parser("stream", help="fold live events (Kafka or a folder of JSON lines) into new bundle versions")
    st.add_argument("--bundle", required=True, help="bundle root to publish new versions into")
    st.add_argument("--source", choices=("kafka", "dir"), default="kafka")
    st.add_argument("--bootstrap", metavar="HOST:PORT", help="--source kafka: the brokers")
    st.add_argument("--topic", default="events")
    st.add_argument("--kafka-source", choices=("python", "builtin"), default="python",
                    help="python: PySpark's Python Data Source API + confluent-kafka (no jar); builtin: Spark's "
                         "format('kafka') (needs the spark-sql-kafka jar on the cluster)")
    st.add_argument("--path", help="--source dir: folder that JSON-lines files are moved into")
    st.add_argument("--state", help="checkpoint, event log and dead letters (default BUNDLE/stream)")
    st.add_argument("--trigger-seconds", type=float, default=1.0, help="micro-batch interval")
    st.add_argument("--max-records", type=int, default=100_000,
                    help="records per micro-batch (Kafka); a batch has a fixed cost of ~2 s, so a backlog reads faster in big ones")
    st.add_argument("--publish-every", type=int, default=1000, help="publish after this many new events")
    st.add_argument("--publish-interval", type=float, default=10.0,
                    help="...or when the oldest unpublished event is this many seconds old")
    st.add_argument("--refit-every", type=int, default=0,
                    help="a full ALS + EASE refit every N publishes (default 0: fold-ins only)")
    st.add_argument("--keep-versions", type=int, default=5, help="bundle versions kept (older ones are deleted)")
    st.add_argument("--until-idle", type=float, metavar="SECONDS",
                    help="stop after this long without new records (default: run until Ctrl-C)")
    st.add_argument("--event-type", choices=EVENT_TYPES, default="purchase",
                    help="event_type of events that carry none (default purchase)")
    _bounds_flags(st)
    st.add_argument("--db", metavar="URL", help="also store the events in this database (SQLAlchemy URL)")
    st.add_argument("--master", default="local[2]")
    st.add_argument("--driver-memory", default="2g")
    st.add_argument("-v", "--verbose", action="store_true")

    pr = sub.add_parser("produce", help="replay a file of events into Kafka (demos and tests)")
    pr.add_argument("--from", dest="source", required=True, help="events file: .parquet (a bundle's events.parquet), .csv, .jsonl")
    pr.add_argument("--bootstrap", required=True, metavar="HOST:PORT")
    pr.add_argument("--topic", default="events")
    pr.add_argument("--rate", type=float, default=100.0, help="events per second (0: as fast as possible)")
    pr.add_argument("--limit", type=int, help="send only the first N events")
    pr.add_argument("--partitions", type=int, default=4, help="partitions of the topic when it is created")
    pr.add_argument("-v", "--verbose", action="store_true")

    e = sub.add_parser("evaluate", help="evaluate a bundle on a time split of its own events; metrics go to its manifest")
    e.add_argument("--bundle", required=True, help="bundle root or version folder")
    _cutoff_flag(e)
    e.add_argument("--retune", dest="tune", action="store_true",
                   help="tune ALS/EASE/blend on the validation window first, as a build does (default: score the "
                        "settings the bundle serves)")
    e.add_argument("--master", default="local[2]")
    e.add_argument("--driver-memory", default="4g")
    e.add_argument("-v", "--verbose", action="store_true")

    s = sub.add_parser("show", help="print the manifest summary of a bundle and verify its checksums")
    s.add_argument("bundle", help="bundle root or version folder")
    return parser


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("py4j", "urllib3", "httpx", "matplotlib", "sentence_transformers", "filelock", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _print_metrics(folder) -> None:
    from index_builder.core.bundle import read_manifest
    from index_builder.evaluation.evaluate import format_table

    manifest = read_manifest(folder)
    if "models" in manifest.get("metrics", {}):
        print(format_table(manifest["metrics"]), file=sys.stderr)


def _currency(text: str) -> str:
    code = text.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise argparse.ArgumentTypeError(f"{text!r} is not a 3-letter currency code such as GBP, USD or EUR")
    return code


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    try:
        if args.command == "build":
            from index_builder.pipeline import BuildConfig, build

            if not args.dataset and not args.products:
                raise BuilderError("pass --dataset NAME or --products FILE [--events FILE]")
            cfg = BuildConfig(
                out=args.out, dataset=None if args.products else args.dataset, data_dir=args.data_dir,
                products=args.products, events=args.events, mapping=parse_mapping(args.mapping),
                encoding=args.encoding, sample_users=args.sample_users, master=args.master,
                driver_memory=args.driver_memory, seed=args.seed, k_min=args.k_min, k_max=args.k_max,
                kmeans_max_iter=args.kmeans_max_iter, kmeans_restarts=args.kmeans_restarts, kmeans_sample=args.kmeans_sample, als_rank=args.als_rank, als_reg_param=args.als_reg_param,
                als_alpha=args.als_alpha, als_max_iter=args.als_max_iter, event_weights=args.event_weights,
                embedder=args.embedder, embedding_model=args.embedding_model, embedding_dim=args.embedding_dim,
                embed_batch_size=args.embed_batch_size, embed_threads=args.embed_threads,
                embed_backend=args.embed_backend, device=args.device,
                faiss=args.faiss, faiss_nprobe=args.faiss_nprobe, download=args.download,
                had_types=args.had_types, ease_lambda=args.ease_lambda, item_item_max_items=args.item_item_max_items,
                evaluate=args.evaluate, eval_cutoff=args.eval_cutoff, tune=args.tune, currency=args.currency,
                graph_users=args.graph_users, event_type=args.event_type, normalize_ids=args.normalize_ids,
                oldest_event=args.oldest_event, future_hours=args.future_hours,
            )
            folder = build(cfg)
            _print_metrics(folder)
            if args.export_db:
                from index_builder.storage.export import export_recommendations

                export_recommendations(folder, args.export_db, args.export_top)
            print(folder)
        elif args.command == "export-db":
            from index_builder.storage.export import export_recommendations

            print(f"{export_recommendations(args.bundle, args.db, args.top)} rows")
        elif args.command == "stream":
            from index_builder.live.stream import StreamConfig, run_stream

            job = run_stream(StreamConfig(
                bundle=args.bundle, source=args.source, path=args.path, bootstrap=args.bootstrap, topic=args.topic,
                kafka_source=args.kafka_source, state=args.state, trigger_s=args.trigger_seconds,
                max_records=args.max_records, publish_every=args.publish_every,
                publish_interval_s=args.publish_interval, refit_every=args.refit_every,
                keep_versions=args.keep_versions, until_idle_s=args.until_idle, event_type=args.event_type,
                oldest_event=args.oldest_event, future_hours=args.future_hours, db=args.db, master=args.master, driver_memory=args.driver_memory))
            print(json.dumps({"batches": job.batches_seen, "publishes": job.published}, indent=2, default=str))
        elif args.command == "produce":
            from index_builder.live.produce import produce

            print(f"{produce(args.source, args.bootstrap, args.topic, rate=args.rate, limit=args.limit, partitions=args.partitions)} events sent")
        elif args.command == "evaluate":
            from index_builder.evaluation.evaluate import format_table
            from index_builder.pipeline import evaluate_bundle

            metrics = evaluate_bundle(args.bundle, cutoff=args.eval_cutoff, tune=args.tune, master=args.master,
                                      driver_memory=args.driver_memory)
            print(format_table(metrics))
        else:
            from index_builder.core.bundle import verify

            folder, manifest = verify(args.bundle)
            summary = {k: manifest.get(k) for k in ("version", "created_at", "dataset", "counts", "embedding", "als", "timings_s")}
            summary["kmeans"] = {k: manifest["kmeans"].get(k) for k in ("k", "elbow_k", "rule")}
            print(json.dumps(summary, indent=2))
            print(f"{folder}: {len(manifest['files'])} files, checksums OK")
        return 0
    except BuilderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
