"""Entry point: make sure an index bundle exists (building it on first run), then serve the app.

    python app.py                       # build artifacts/ from online-retail if needed, then serve
    python app.py --bundle artifacts/   # use an existing bundle
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

log = logging.getLogger("app")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="cartwise: conversational product recommender")
    p.add_argument("--bundle", help="an existing bundle (root or version folder); nothing is built")
    p.add_argument("--out", default="artifacts", help="bundle root to use or build into (default artifacts/)")
    p.add_argument("--dataset", default="online-retail", help="dataset to build from on first run")
    p.add_argument("--data-dir", help="where datasets are looked for before the download cache")
    p.add_argument("--sample-users", type=int, help="build from a sample of N users (faster first run)")
    p.add_argument("--rebuild", action="store_true", help="build a new bundle version even if one exists")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="ask Gradio for a public link")
    return p.parse_args(argv)


def ensure_bundle(args: argparse.Namespace):
    """Return (folder, manifest) of a verified bundle, building one first when needed."""
    from index_builder.bundle import verify
    from index_builder.errors import BundleError

    if args.bundle:
        return verify(args.bundle)
    if not args.rebuild:
        try:
            return verify(args.out)
        except BundleError:
            log.info("no usable bundle in %s: building one from %s (first run takes a few minutes)",
                     args.out, args.dataset)
    from index_builder.pipeline import BuildConfig, build

    build(BuildConfig(out=args.out, dataset=args.dataset, data_dir=args.data_dir, sample_users=args.sample_users))
    return verify(args.out)


def main(argv: list[str] | None = None) -> int:
    from index_builder.cli import setup_logging
    from index_builder.errors import BuilderError

    args = parse_args(argv)
    setup_logging()
    try:
        folder, manifest = ensure_bundle(args)
    except BuilderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    c = manifest["counts"]
    print(f"bundle {folder}: {c['products']:,} products, {c['users']:,} users, "
          f"k={manifest['kmeans']['k']} clusters, ALS {'skipped' if 'skipped' in manifest['als'] else 'trained'}")
    print("The chat UI arrives with the assistant (issue 3); the bundle above is what it will serve.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
