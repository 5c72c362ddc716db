"""Live updates end to end, on a real Kafka-protocol broker (Tansu, scripts/kafka_broker.py):

1. ingest: events/s from Kafka into the event log (the stream job on 2 cores, records already waiting);
2. fold-in vs full refit: what publishing ~1,000 new events costs each way;
3. purchase -> changed answer: a shopper buys the product at the top of their list; the time from
   producing that event to the chat (a LiveAssistant following the bundle root, as app.py does) no
   longer recommending it, with no restart and no retrain. p50/p95 over --events events.

    .venv/bin/python -m bench.stream_latency --bundle artifacts/ [--ingest 100000] [--events 20]

Goals (issue 10): >= 5,000 events/s ingested; a purchase changes the next answer within 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from index_builder.core import bundle as fmt  # noqa: E402


def copy_root(src: Path, dst: Path) -> Path:
    folder = fmt.resolve(src)
    dst.mkdir(parents=True)
    shutil.copytree(folder, dst / folder.name)
    fmt.set_current(dst, folder.name)
    return dst


def ingest(bundle: Path, bootstrap: str, n: int, tmp: Path, spark) -> dict:
    from index_builder.live.produce import produce
    from index_builder.live.stream import EventLog, StreamConfig, run_stream

    root = copy_root(bundle, tmp / "ingest")
    events = pd.read_parquet(fmt.resolve(root) / fmt.EVENTS)
    events = events.sample(n=min(n, len(events)), random_state=0, replace=False).reset_index(drop=True)
    src = tmp / "ingest.parquet"
    events.to_parquet(src)
    t = time.perf_counter()
    produce(src, bootstrap, "ingest", rate=0)
    produced = time.perf_counter() - t
    t = time.perf_counter()
    job = run_stream(StreamConfig(bundle=str(root), source="kafka", bootstrap=bootstrap, topic="ingest", until_idle_s=3,
                                  publish_every=10 ** 9, publish_interval_s=10 ** 9, trigger_s=0.5), spark)
    wall = time.perf_counter() - t
    entries = EventLog(root / "stream").entries()
    got = sum(e["events"] for e in entries)
    first, last = min(e["started"] for e in entries), max(e["at"] for e in entries)
    return {"events": got, "batches": len(entries), "produce_s": produced, "stream_s": last - first, "wall_s": wall,
            "rate": got / (last - first), "dead": sum(e["dead_letters"] for e in entries),
            "where": where_the_time_goes(entries, job.progress)}


def where_the_time_goes(entries: list[dict], progress: list) -> dict[str, float]:
    """Seconds per micro-batch by stage (medians over the full batches): Spark's own report (latestOffset:
    the Python Kafka reader polling the broker; addBatch: the job's foreachBatch) and the job's split of
    its foreachBatch (one validation job + collect; the files, ledger and database)."""
    full = [e for e in entries if "validate_s" in e and e["events"] + e["dead_letters"] >= 0.9 * max(
        x["events"] + x["dead_letters"] for x in entries)]
    out = {}
    durations = [dict(p["durationMs"] if isinstance(p, dict) else p.durationMs) for p in progress]
    durations = [d for d in durations if d.get("addBatch")]
    for key in ("latestOffset", "getBatch", "queryPlanning", "addBatch", "walCommit", "commitOffsets", "triggerExecution"):
        vals = [d[key] / 1000 for d in durations if key in d]
        if vals:
            out[f"spark {key}"] = float(np.median(vals))
    if full:
        out["job validate (one Spark job)"] = float(np.median([e["validate_s"] for e in full]))
        out["job write (files, ledger)"] = float(np.median([e["at"] - e["started"] - e["validate_s"] for e in full]))
    out["records per full batch"] = float(np.median([e["events"] + e["dead_letters"] for e in full])) if full else 0.0
    return out


def foldin_vs_refit(bundle: Path, tmp: Path, spark, n_events: int = 1000) -> dict:
    from index_builder.live.foldin import fold_in

    out = {}
    for refit in (False, True):
        root = copy_root(bundle, tmp / f"refit-{refit}")
        ev = pd.read_parquet(fmt.resolve(root) / fmt.EVENTS).tail(n_events).copy()
        ev["ts"] = pd.Timestamp.now(tz="UTC").tz_localize(None)
        t = time.perf_counter()
        fold_in(root, ev, None, through_batch=0, refit=refit, spark=spark)
        out["full refit (ALS + EASE)" if refit else "fold-in"] = time.perf_counter() - t
    return out


def answer(live, user: str) -> list[str]:
    from assistant.session import SessionState

    a = live.current
    return [p.product_id for p in a.recommender.recommend(a.next_request(SessionState(user_id=user)))]


def purchase_latency(bundle: Path, bootstrap: str, n: int, tmp: Path) -> dict:
    from confluent_kafka import Producer

    from assistant.chat import Assistant
    from assistant.live import LiveAssistant
    from index_builder.live.produce import ensure_topic

    root = copy_root(bundle, tmp / "latency")
    ensure_topic(bootstrap, "purchases", 1)
    log = open(tmp / "stream.log", "w")  # noqa: SIM115
    job = subprocess.Popen(
        [sys.executable, "-m", "index_builder", "stream", "--bundle", str(root), "--source", "kafka", "--bootstrap",
         bootstrap, "--topic", "purchases", "--publish-every", "1", "--publish-interval", "1", "--trigger-seconds",
         "0.5", "--keep-versions", "3"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    live = LiveAssistant(root, Assistant.from_path, interval_s=0.25)
    producer = Producer({"bootstrap.servers": bootstrap})
    rng = np.random.default_rng(0)
    users = [u for u in sorted(live.bundle.had) if len(live.bundle.had[u]) >= 3]
    times, stages = [], []
    try:
        time.sleep(20)  # the stream job's Spark start
        for user in rng.choice(users, size=n, replace=False).tolist():
            before = answer(live, user)
            bought = before[0]
            event = {"user_id": user, "product_id": bought, "event_type": "purchase", "value": 1,
                     "ts": pd.Timestamp.now(tz="UTC").isoformat()}
            t0 = time.perf_counter()
            producer.produce("purchases", key=user.encode(), value=json.dumps(event).encode())
            producer.flush(10)
            version = live.version
            while time.perf_counter() - t0 < 120:
                if live.version != version:
                    version = live.version
                    now = answer(live, user)
                    if bought not in now:
                        break
                time.sleep(0.05)
            took = time.perf_counter() - t0
            times.append(took)
            manifest = fmt.read_manifest(fmt.resolve(root))
            stages.append(manifest["stream"]["fold_in_s"])
            print(f"  {user}: bought {bought} -> answer changed after {took:.1f}s (fold-in {stages[-1]:.1f}s)", flush=True)
    finally:
        job.terminate()
        job.wait(30)
        live.close()
    return {"times": times, "fold_in": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(ROOT / "artifacts"), help="bundle root or version (UCI)")
    parser.add_argument("--ingest", type=int, default=100_000, help="events for the ingest rate")
    parser.add_argument("--events", type=int, default=20, help="purchases timed end to end")
    args = parser.parse_args()

    from index_builder.stages.session import make_spark
    from scripts import kafka_broker

    bundle = fmt.resolve(args.bundle)
    proc, bootstrap = kafka_broker.start()
    spark = make_spark(app_name="stream-bench", driver_memory="2g")
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            ing = ingest(bundle, bootstrap, args.ingest, tmp, spark)
            print(f"ingest: {ing['events']:,} events in {ing['batches']} batches, {ing['rate']:,.0f} events/s "
                  f"(stream {ing['stream_s']:.1f}s; wall with Spark start {ing['wall_s']:.1f}s; "
                  f"producer {ing['events'] / ing['produce_s']:,.0f}/s)", flush=True)
            print("a micro-batch, by stage (median seconds):", flush=True)
            for k, v in ing["where"].items():
                print(f"  {k:<28} {v:>8.2f}", flush=True)
            costs = foldin_vs_refit(bundle, tmp, spark)
            print("publish 1,000 events: " + ", ".join(f"{k} {v:.1f}s" for k, v in costs.items()), flush=True)
            spark.stop()
            lat = purchase_latency(bundle, bootstrap, args.events, tmp)
    finally:
        proc.terminate()
    t = np.array(lat["times"])
    print(f"\n{'measure':<52} {'value':>12}")
    print(f"{'ingest rate, Kafka -> event log (events/s)':<52} {ing['rate']:>12,.0f}")
    for k, v in costs.items():
        print(f"{'publish 1,000 events: ' + k + ' (s)':<52} {v:>12.1f}")
    print(f"{'purchase -> changed answer p50 (s)':<52} {np.percentile(t, 50):>12.1f}")
    print(f"{'purchase -> changed answer p95 (s)':<52} {np.percentile(t, 95):>12.1f}")
    print(f"{'  of which fold-in + publish, p50 (s)':<52} {np.percentile(lat['fold_in'], 50):>12.1f}")
    print(f"\ningest >= 5,000 events/s: {'met' if ing['rate'] >= 5000 else 'NOT met'}; "
          f"changed answer within 60 s: {'met' if t.max() <= 60 else 'NOT met'} (max {t.max():.1f}s)")


if __name__ == "__main__":
    main()
