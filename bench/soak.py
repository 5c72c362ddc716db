"""Soak: the live stream fed good records and every kind of poison record for minutes, while it publishes
and a real app (python app.py) hot-reloads each version, on a real Kafka-protocol broker (Tansu).

1. clean vs poisoned ingest: a backlog of good events, then the same number with the poison corpus mixed
   in (tests/support/poison_corpus.py, ~5% of the records), each read by a fresh stream job: events/s of each,
   measured in one sitting;
2. soak: for --minutes, waves of good events (each with a unique event_id and time), one redelivered event,
   new products and price updates and the whole poison corpus, produced at --rate records/s into a running
   stream job (publishing every --publish-interval s) that an app follows (--reload-interval 1). Checked:
   the job never stops, every good event is in the event log exactly once (by event_id, against what was
   produced), every poison record is in the dead letters with its reason, the app serves the last
   published version and answers throughout.

    .venv/bin/python -m bench.soak --bundle artifacts/ [--minutes 5] [--rate 1000] [--backlog 40000]

Goals (issue 19): the job never stops; 0 good events lost or doubled; every publish applied; the
poisoned ingest rate within 20% of the clean rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.stream_latency import copy_root  # noqa: E402
from index_builder.core import bundle as fmt  # noqa: E402
from index_builder.live.stream import EventLog  # noqa: E402
from tests.support.poison_corpus import poison_records  # noqa: E402

BATCH = 10_000  # records per micro-batch in the rate runs: several batches, the first (JVM warm-up) left out


class Feed:
    """Good events with unique ids and times from the bundle's own (user, product) pairs."""

    def __init__(self, bundle: Path, seed: int = 0):
        ev = pd.read_parquet(fmt.resolve(bundle) / fmt.EVENTS)
        self.pairs = ev[["user_id", "product_id"]].astype(str).drop_duplicates().to_numpy()
        self.rng = np.random.default_rng(seed)
        self.n = 0
        self.start = pd.Timestamp.now(tz="UTC").tz_localize(None) - pd.Timedelta(hours=2)
        self.products = sorted(set(ev["product_id"].astype(str)))

    def events(self, n: int, prefix: str) -> list[tuple[str, bytes]]:
        out = []
        for u, p in self.pairs[self.rng.integers(0, len(self.pairs), n)]:
            self.n += 1
            ts = (self.start + pd.Timedelta(milliseconds=self.n)).isoformat()
            eid = f"{prefix}-{self.n}"
            out.append((eid, json.dumps({"user_id": u, "product_id": p, "event_type": "purchase", "value": 1,
                                         "ts": ts, "event_id": eid}).encode()))
        return out


def producer(bootstrap: str):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "queue.buffering.max.messages": 500_000})


def send(prod, topic: str, values: list[bytes]) -> None:
    for i, v in enumerate(values):
        while True:
            try:
                prod.produce(topic, key=str(i % 16).encode(), value=v)
                break
            except BufferError:
                prod.poll(0.05)
    prod.poll(0)


def stream_cmd(root: Path, bootstrap: str, topic: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "index_builder", "stream", "--bundle", str(root), "--source", "kafka",
            "--bootstrap", bootstrap, "--topic", topic, "--trigger-seconds", "0.5", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}


def backlog_rate(bundle: Path, bootstrap: str, tmp: Path, n: int, poisoned: bool) -> dict:
    """Produce ``n`` good events (and with ``poisoned`` the corpus every 1,000), then time one job reading them."""
    from index_builder.live.produce import ensure_topic

    name = "poisoned" if poisoned else "clean"
    topic = f"{name}-{tmp.name}"  # a topic per run: a fresh job reads only its own backlog
    root = copy_root(bundle, tmp / name)
    feed = Feed(bundle, seed=1 if poisoned else 2)
    ensure_topic(bootstrap, topic, 4)
    prod = producer(bootstrap)
    values, n_poison = [], 0
    user, product = feed.pairs[0]
    for wave in range(max(1, n // 1000)):
        values += [v for _, v in feed.events(1000, f"{name}{wave}")]
        if poisoned:
            corpus = poison_records(product, "NEW", user, tag=f"-{name}{wave}")
            values += [p.payload for p in corpus]
            n_poison += len(corpus)
    send(prod, topic, values)
    prod.flush(60)
    with open(tmp / f"{name}.log", "w") as log:
        job = subprocess.run(stream_cmd(root, bootstrap, topic, "--until-idle", "5", "--publish-every", str(10 ** 9),
                                        "--publish-interval", str(10 ** 9), "--max-records", str(BATCH)),
                             cwd=ROOT, env=env(), stdout=log, stderr=subprocess.STDOUT, timeout=1800)
    assert job.returncode == 0, (tmp / f"{name}.log").read_text()[-3000:]
    entries = EventLog(root / "stream").entries()
    records = sum(e["events"] + e["dead_letters"] for e in entries)
    first, last = min(e["started"] for e in entries), max(e["at"] for e in entries)
    # a batch's rate from the end of the one before (reading included); the first batch warms the JVM up
    steady = [(e["events"] + e["dead_letters"]) / (e["at"] - prev["at"]) for prev, e in zip(entries, entries[1:], strict=False)
              if e["events"] + e["dead_letters"] >= 0.5 * BATCH]
    return {"records": records, "events": sum(e["events"] for e in entries), "poison": n_poison,
            "dead": sum(e["dead_letters"] for e in entries), "seconds": last - first,
            "events_per_s": sum(e["events"] for e in entries) / (last - first),
            "records_per_s": records / (last - first), "batches": len(entries),
            "steady_records_per_s": float(np.median(steady)) if steady else float("nan")}


def app_answers(url: str) -> str | None:
    """None when the app answered a recommendation over HTTP; else what went wrong."""
    body = json.dumps({"data": ["", [], "what should I buy next?", ""]}).encode()
    try:
        req = urllib.request.Request(url + "gradio_api/call/recommend", data=body,
                                     headers={"Content-Type": "application/json"})
        event = json.loads(urllib.request.urlopen(req, timeout=30).read())["event_id"]
        text = urllib.request.urlopen(url + f"gradio_api/call/recommend/{event}", timeout=60).read().decode()
        return None if "product_id" in text else f"no products: {text[:200]}"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def soak(bundle: Path, bootstrap: str, tmp: Path, minutes: float, rate: float, publish_interval: float) -> dict:
    from index_builder.live.produce import ensure_topic
    from tests.support.procs import free_port

    root = copy_root(bundle, tmp / "soak")
    feed = Feed(bundle, seed=3)
    ensure_topic(bootstrap, "soak", 4)
    stream_log = open(tmp / "soak-stream.log", "w")  # noqa: SIM115
    job = subprocess.Popen(stream_cmd(root, bootstrap, "soak", "--publish-interval", str(publish_interval),
                                      "--keep-versions", "4", "--max-records", "20000"), cwd=ROOT, env=env(), stdout=stream_log,
                           stderr=subprocess.STDOUT)
    port = free_port()
    app_log = open(tmp / "soak-app.log", "w")  # noqa: SIM115
    app = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--bundle", str(root), "--port", str(port),
                            "--reload-interval", "1", "--env-file", ""], cwd=ROOT, env=env(), stdout=app_log,
                           stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 300  # the app loads the bundle first: the clock starts once it answers
    while app_answers(url) is not None:
        assert app.poll() is None and time.time() < deadline, "the app did not start"
        time.sleep(2)
    prod = producer(bootstrap)
    produced: set[str] = set()
    poisons: dict[str, str] = {}  # raw -> reason
    redelivered = 0
    answered = failed_answers = 0
    answer_s: list[float] = []
    failures: list[str] = []
    user, product = feed.pairs[0]
    t_end = time.time() + minutes * 60
    wave = 0
    sent = 0
    t0 = time.time()
    try:
        while time.time() < t_end:
            assert job.poll() is None, "the stream job stopped"
            assert app.poll() is None, "the app stopped"
            goods = feed.events(1000, f"soak{wave}")
            produced.update(e for e, _ in goods)
            corpus = poison_records(product, f"NEW-SOAK-{wave}", user, tag=f"-soak{wave}")
            poisons.update({p.raw: p.reason for p in corpus})
            new_product = {"product_id": f"NEW-SOAK-{wave}", "title": f"Soak test candle {wave}", "price": 2.5}
            price = {"product_id": feed.products[wave % len(feed.products)], "title": "price", "price": 1.0 + wave % 7}
            values = [v for _, v in goods] + [p.payload for p in corpus] + [goods[0][1]]  # one redelivery
            values += [json.dumps(new_product).encode(), json.dumps(price).encode()]
            redelivered += 1
            rng = np.random.default_rng(wave)
            order = rng.permutation(len(values))
            send(prod, "soak", [values[i] for i in order])
            sent += len(values)
            wave += 1
            ahead = sent / rate - (time.time() - t0)  # hold the rate
            while ahead > 0:
                t_ask = time.perf_counter()
                why = app_answers(url)
                if why is None:
                    answered += 1
                    answer_s.append(time.perf_counter() - t_ask)
                else:
                    failed_answers += 1
                    failures.append(why)
                ahead = sent / rate - (time.time() - t0)
                if ahead > 0:
                    time.sleep(min(ahead, 1.0))
        prod.flush(60)
        produced_s = time.time() - t0
        # drain: until the ledger holds every record and the last batch is published
        deadline = time.time() + 600
        log = EventLog(root / "stream")
        while time.time() < deadline:
            entries = log.entries()
            seen = sum(e["events"] + e["products"] + e["dead_letters"] for e in entries)
            through = fmt.read_manifest(fmt.resolve(root)).get("stream", {}).get("through_batch", -1)
            if seen >= sent and entries and through >= entries[-1]["batch_id"]:
                break
            assert job.poll() is None, "the stream job stopped"
            time.sleep(1)
        time.sleep(3)  # the app's reload interval, and its load
        job_alive = job.poll() is None
        final_version = fmt.resolve(root).name
        answered_last = app_answers(url) is None
    finally:
        job.terminate()
        app.terminate()
        for p in (job, app):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        stream_log.close()
        app_log.close()
    log = EventLog(root / "stream")
    events = log.read_events()
    ids = events["event_id"].dropna().astype(str)
    dead = log.read_dead_letters()
    by_raw = dict(zip(dead["raw"], dead["reject_reason"], strict=True)) if len(dead) else {}
    wrong = sum(1 for raw, reason in poisons.items() if by_raw.get(raw) != reason)
    manifest = fmt.read_manifest(fmt.resolve(root))
    app_text = (tmp / "soak-app.log").read_text()
    stream_text = (tmp / "soak-stream.log").read_text()
    entries = log.entries()
    return {
        "minutes": produced_s / 60, "records_sent": sent, "good_events_sent": len(produced), "waves": wave,
        "job_alive": job_alive,
        "lost": len(produced - set(ids)), "doubled": int(ids.duplicated().sum()), "unexpected": len(set(ids) - produced),
        "poison_sent": len(poisons), "poison_wrong_or_missing": wrong,
        "duplicate_event_id": int((dead["reject_reason"] == "duplicate_event_id").sum()) if len(dead) else 0,
        "redelivered": redelivered,
        "events_total_in_bundle": int(manifest["stream"]["events_total"]),
        "publishes": int(manifest["stream"]["publishes"]),
        "publish_failures": stream_text.count("publishing batches") + stream_text.count("quarantined"),
        "batches": len(entries), "failed_batches": sum(1 for e in entries if e.get("failed")),
        "app_swaps": app_text.count("now serving"), "app_refused": app_text.count("refused version"),
        "app_serves_last": f"now serving {final_version}" in app_text, "answered": answered,
        "answer_failures": failed_answers, "answered_after": answered_last,
        "answer_p50_s": round(float(np.percentile(answer_s, 50)), 3) if answer_s else None,
        "answer_p99_s": round(float(np.percentile(answer_s, 99)), 3) if answer_s else None,
        "failure_kinds": sorted(set(f[:80] for f in failures))[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(ROOT / "artifacts"), help="bundle root or version (UCI)")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="records/s produced during the soak")
    parser.add_argument("--backlog", type=int, default=40_000, help="good events of each ingest-rate run")
    parser.add_argument("--publish-interval", type=float, default=10.0)
    args = parser.parse_args()

    from scripts import kafka_broker

    bundle = fmt.resolve(args.bundle)
    proc, bootstrap = kafka_broker.start()
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            runs = []  # clean, poisoned, clean, poisoned: the hour's noise falls on both alike
            for i in range(2):
                for poisoned_run in (False, True):
                    runs.append(backlog_rate(bundle, bootstrap, tmp / f"rate{i}", args.backlog, poisoned=poisoned_run))
            clean = {k: float(np.mean([r[k] for r in runs[0::2]])) for k in runs[0]}
            poisoned = {k: float(np.mean([r[k] for r in runs[1::2]])) for k in runs[1]}
            s = soak(bundle, bootstrap, tmp, args.minutes, args.rate, args.publish_interval)
    finally:
        proc.terminate()
    print(f"\n{'ingest (a backlog read by a fresh job, mean of 2)':<44} {'clean':>12} {'poisoned':>12}")
    for key in ("records", "events", "poison", "dead", "batches", "seconds", "records_per_s", "events_per_s",
                "steady_records_per_s"):
        print(f"{key:<44} {clean[key]:>12,.1f} {poisoned[key]:>12,.1f}")
    ratio = poisoned["steady_records_per_s"] / clean["steady_records_per_s"]
    print(f"{'poisoned / clean records/s (steady batches)':<44} {ratio:>25.2f}")
    print(f"\n{'soak':<44} {'value':>12}")
    for key, value in s.items():
        print(f"{key:<44} {value!s:>12}")
    ok = (s["job_alive"] and s["lost"] == 0 and s["doubled"] == 0 and s["unexpected"] == 0
          and s["poison_wrong_or_missing"] == 0 and s["app_serves_last"] and s["failed_batches"] == 0
          and s["publish_failures"] == 0 and ratio >= 0.8)
    print(f"\nthe job never stopped, 0 lost or doubled, every poison dead-lettered, the app serves the last version, "
          f"poisoned rate >= 80% of clean: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
