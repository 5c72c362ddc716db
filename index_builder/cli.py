"""``python -m index_builder``: build a bundle, show one, stream live events into one, export it to a database."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from index_builder.core.errors import BuilderError
from index_builder.core.flags import add_flags, config_args
from index_builder.storage.export import EXPORT_TOP

log = logging.getLogger("index_builder")


def make_parser() -> argparse.ArgumentParser:
    """The CLI; the build's and the stream's flags come from their config dataclasses (:mod:`.core.flags`)."""
    from index_builder.live.stream import StreamConfig
    from index_builder.pipeline import BuildConfig

    parser = argparse.ArgumentParser(prog="python -m index_builder", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build an artifact bundle from a dataset or your own files")
    add_flags(b, BuildConfig)
    b.add_argument("--export-db", metavar="URL",
                   help="also write every user's top-N to the recommendations table at this SQLAlchemy URL "
                        "(e.g. mysql+pymysql://root@127.0.0.1:3306/test)")
    b.add_argument("--export-top", type=int, default=EXPORT_TOP, help=f"N of --export-db (default {EXPORT_TOP})")
    b.add_argument("-v", "--verbose", action="store_true")

    x = sub.add_parser("export-db", help="write every user's top-N of a bundle to a database table")
    x.add_argument("--bundle", required=True, help="bundle root or version folder")
    x.add_argument("--db", required=True, metavar="URL", help="SQLAlchemy URL")
    x.add_argument("--top", type=int, default=EXPORT_TOP, help=f"N (default {EXPORT_TOP})")
    x.add_argument("-v", "--verbose", action="store_true")

    st = sub.add_parser("stream", help="fold live events (Kafka or a folder of JSON lines) into new bundle versions")
    add_flags(st, StreamConfig)
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
    add_flags(e, BuildConfig, only=("eval_cutoff", "master", "driver_memory"))
    e.add_argument("--retune", dest="tune", action="store_true",
                   help="tune ALS/EASE/blend on the validation window first, as a build does (default: score the "
                        "settings the bundle serves)")
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


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    try:
        if args.command == "build":
            from index_builder.pipeline import BuildConfig, build

            if not args.dataset and not args.products:
                raise BuilderError("pass --dataset NAME or --products FILE [--events FILE]")
            cfg = BuildConfig(**{**config_args(BuildConfig, args), "dataset": None if args.products else args.dataset})
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

            job = run_stream(StreamConfig(**config_args(StreamConfig, args)))
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
