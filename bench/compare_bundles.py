"""Two bundles side by side: which manifest sections and which files differ, and both metrics tables.

    .venv/bin/python -m bench.compare_bundles BEFORE_ROOT AFTER_ROOT

The check behind "behaviour unchanged" for a refactor: build the same input with the old and the new code
(e.g. ``bench.build_scale --only uci --work DIR`` in each checkout), then compare. Files are compared by
the manifests' sha256 (``report/report.html`` carries the build time, so it differs between any two
builds); stage times are printed with their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys

from index_builder.core import bundle

SECTIONS = ("metrics", "recommender", "als", "item_item", "counts", "faiss", "embedding")
KMEANS = ("k", "elbow_k", "sweep", "widened")
# what a run measures of itself (seconds, cache hits, the machine's throughput): never the same twice
MEASURED = {"metrics": ("cost_s",), "embedding": ("choice", "cache")}


def same(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def section(manifest: dict, name: str):
    """A manifest section less what the run measured of itself (:data:`MEASURED`)."""
    value = manifest.get(name)
    if isinstance(value, dict) and name in MEASURED:
        value = {k: v for k, v in value.items() if k not in MEASURED[name]}
    return value


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before")
    p.add_argument("after")
    args = p.parse_args()
    (fa, a), (fb, b) = bundle.verify(args.before), bundle.verify(args.after)
    print(f"before {fa}\nafter  {fb}\n")
    differ = [s for s in SECTIONS if not same(section(a, s), section(b, s))]
    if not same({k: a["kmeans"].get(k) for k in KMEANS}, {k: b["kmeans"].get(k) for k in KMEANS}):
        differ.append("kmeans")
    params = {k for k in set(a["params"]) | set(b["params"]) if a["params"].get(k) != b["params"].get(k)} - {"out"}
    files = sorted(k for k in set(a["files"]) | set(b["files"]) if a["files"].get(k) != b["files"].get(k))
    print("manifest sections that differ:", ", ".join(differ) or "none")
    print("params that differ (besides out):", ", ".join(sorted(params)) or "none")
    print(f"files that differ ({len(files)} of {len(b['files'])}):", ", ".join(files) or "none")
    print("\n| model | NDCG@10 before | after | HR@10 before | after |\n|---|---:|---:|---:|---:|")
    ma, mb = a.get("metrics", {}).get("models", {}), b.get("metrics", {}).get("models", {})
    for name in dict.fromkeys([*ma, *mb]):
        ra, rb = ma.get(name, {}), mb.get(name, {})
        cells = [f"{r.get(m, float('nan')):.4f}" for m in ("ndcg@10", "hr@10") for r in (ra, rb)]
        print(f"| {name} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
    print("\n| stage | before s | after s | ratio |\n|---|---:|---:|---:|")
    ta, tb = a.get("timings_s", {}), b.get("timings_s", {})
    for s in dict.fromkeys([*ta, *tb]):
        x, y = ta.get(s), tb.get(s)
        ratio = f"{y / x:.2f}" if x and y else ""
        print(f"| {s} | {x if x is not None else ''} | {y if y is not None else ''} | {ratio} |")
    return 1 if differ or params else 0


if __name__ == "__main__":
    sys.exit(main())
