"""Chat latency without an LLM: a turn (parse + retrieve + blend + template) for the UCI bundle and
100k- and 1M-product bundles, in process and over HTTP through both APIs (the JSON API's /api/v1/recommend
and Gradio's /recommend through gradio_client, one client and N concurrent ones), time to the first streamed
chunk through the Gradio HTTP API, the app's RSS, and the product picker's server-side search.

    .venv/bin/python -m bench.chat_latency --bundle artifacts/ [--big 100000,1000000] [--clients 20]

The big bundles are made from the UCI one: each product is copied (26 or 263 times) with its embedding
perturbed (then re-normalised), its price jittered and its ALS factors copied with noise, each copy in its
original's cluster, and stored as the builder stores a catalog of 50,000 products or more: the vectors once
as float16 and an ivfpq FAISS index whose cells are the clusters. Goals: p50 <= 15 ms and p99 <= 50 ms per
turn at 100k, p50 <= 20 ms and p99 <= 60 ms at 1M, first chunk <= 150 ms, RSS <= 1.5 GB at 100k and
<= 2.5 GB at 1M; over HTTP (JSON API, --clients concurrent clients, each its own conversation of SCRIPT's
turns) p50 <= 20 ms and p99 <= 50 ms per turn.

The concurrent clients run once for each mean pause of --think: each client waits a seeded exponential pause
of that mean before each of its turns (a shopper reading the answer and typing the next message; 1 s is a
fast one), so the server sees about clients / (pause + turn) turns a second. A pause of 0 is a closed loop,
every client sending its next turn as soon as the last is answered: that run measures the server's capacity
(turns/s), and its latency is then about clients / capacity whatever a turn costs alone.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from index_builder.core import bundle as fmt  # noqa: E402

SCRIPT = ["what should I buy next?", "something cheaper", "only candles", "more like the second one",
          "why the first one?", "no bags", "show me something different", "a gift for a tea lover",
          "under 3 pounds", "#2", "just my usual", "only new things"]


def synthesize(src: Path, out: Path, n_target: int, seed: int = 0) -> Path:
    """A bigger bundle from a real one: perturbed copies of every product (see module docstring)."""
    from index_builder.stages.faiss_index import LARGE, build_index

    rng = np.random.default_rng(seed)
    folder, manifest = fmt.verify(src)
    products = pd.read_parquet(folder / fmt.PRODUCTS)
    emb = fmt.load_array(folder, fmt.EMBEDDINGS)
    items = fmt.load_array(folder, fmt.ITEM_FACTORS)
    n = len(products)
    copies = int(np.ceil(n_target / n))
    src_rows = np.tile(np.arange(n), copies)[:n_target]
    variant = np.repeat(np.arange(copies), n)[:n_target]
    big = products.iloc[src_rows].reset_index(drop=True)
    big["product_id"] = np.where(variant == 0, big["product_id"], big["product_id"] + "-v" + variant.astype(str))
    big["title"] = np.where(variant == 0, big["title"], big["title"] + " V" + variant.astype(str))
    big["price"] = big["price"] * np.where(variant == 0, 1.0, rng.uniform(0.8, 1.2, n_target))
    big["popularity"] = (big["popularity"] / (1 + variant)).astype("int64")
    e = emb[src_rows] + np.where(variant[:, None] == 0, 0, rng.normal(0, 0.02, (n_target, emb.shape[1])))
    e = (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)
    f = (items[src_rows] * rng.uniform(0.9, 1.1, (n_target, 1))).astype(np.float32)
    centroids = fmt.load_array(folder, fmt.CENTROIDS)
    kind = "ivfpq" if n_target >= LARGE else "flat"

    def fill(dst: Path) -> dict:
        import shutil

        import faiss

        big.to_parquet(dst / fmt.PRODUCTS, index=False)
        fmt.save_array(dst, fmt.EMBEDDINGS, e.astype(np.float16) if kind == "ivfpq" else e)
        if (folder / fmt.EMBEDDER_DIR).is_dir():  # the ONNX query encoder the manifest names
            shutil.copytree(folder / fmt.EMBEDDER_DIR, dst / fmt.EMBEDDER_DIR)
        fmt.save_array(dst, fmt.ITEM_FACTORS, f)
        fmt.save_array(dst, fmt.CENTROIDS, centroids)
        for name in (fmt.USER_FACTORS, fmt.USERS, fmt.INTERACTIONS, fmt.BUY_AGAIN):
            if (folder / name).is_file():  # the buy-again table names the originals: their customers' reorders
                shutil.copy(folder / name, dst / name)
        nb, wt = fmt.load_item_item(folder, n)
        if nb is not None:  # the originals keep their EASE rows (the model covers the most bought 10,000 at most)
            full_nb = np.full((n_target, nb.shape[1]), -1, dtype=np.int32)
            full_wt = np.zeros((n_target, nb.shape[1]), dtype=np.float32)
            full_nb[:n], full_wt[:n] = nb[np.arange(n)], wt[np.arange(n)]
            fmt.save_item_item(dst, full_nb, full_wt)
        index = build_index(e, kind, centroids=centroids, labels=big["cluster"].to_numpy(), nprobe=3)
        faiss.write_index(index, str(dst / fmt.FAISS_INDEX))
        body = {k: v for k, v in manifest.items() if k not in ("files", "format_version", "version", "report")}
        body["faiss"] = {"kind": kind, "metric": "inner_product", "ntotal": n_target, "nprobe": 3}
        body["counts"] = {**manifest["counts"], "products": n_target}
        return body

    return fmt.publish(out, fill)


def customers(b) -> list[str]:
    """The known customers a session may be: those who bought (those who rated, in a ratings bundle)."""
    return sorted(b.purchased) or sorted(b.had)


def turn_latencies(folder: Path, sessions: int, seed: int = 1) -> dict[str, list[float]]:
    from assistant.chat import Assistant
    from assistant.session import SessionState

    a = Assistant.from_path(folder)
    a.recommender.encode(["warm-up"])
    a.bundle.search.warm()
    rng = random.Random(seed)
    users = customers(a.bundle)
    out: dict[str, list[float]] = {}
    for s in range(sessions):
        state = SessionState(user_id=rng.choice(users) if s % 2 == 0 else None)
        if state.user_id is None:
            for r in rng.sample(range(len(a.bundle.titles)), 2):
                state.view(a.bundle.product_ids[r])
        for message in SCRIPT:
            t = time.perf_counter()
            turn = a.turn(message, state)
            "".join(turn.chunks)
            out.setdefault(message, []).append((time.perf_counter() - t) * 1000)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_chunk_http(client, message: str, user_id: str = "") -> tuple[float, float]:
    """(ms to the first streamed data event, ms to the end) for POST /gradio_api/call/chat + its SSE stream."""
    t = time.perf_counter()
    event_id = client.post("/gradio_api/call/chat", json={"data": [user_id, [], message]}).json()["event_id"]
    first = None
    with client.stream("GET", f"/gradio_api/call/chat/{event_id}") as stream:
        for line in stream.iter_lines():
            if first is None and line.startswith("data:") and line.strip() != "data: null":
                first = (time.perf_counter() - t) * 1000
    return first, (time.perf_counter() - t) * 1000


def conversation(turn, users: list[str], client: int, rounds: int, out: list[float], barrier=None,
                 think_s: float = 0.0) -> None:
    """One client's conversations: SCRIPT's turns ``rounds`` times, a known customer every other round (else
    anonymous), each turn timed whole (``turn(user, message, session_id) -> session_id``). With ``think_s`` the
    client waits between turns as a shopper reads and types: a seeded exponential pause of that mean (the first
    one too, so that the clients do not all start at once); without, it sends the next turn at once."""
    rng = random.Random(client)
    pause = random.Random(10_000 + client)
    if barrier is not None:
        barrier.wait()
    for r in range(rounds):
        user, sid = (rng.choice(users) if (client + r) % 2 == 0 else ""), ""
        for message in SCRIPT:
            if think_s > 0:
                time.sleep(pause.expovariate(1 / think_s))
            t = time.perf_counter()
            sid = turn(user, message, sid)
            out.append((time.perf_counter() - t) * 1000)


def http_turns(url: str, kind: str, clients: int, rounds: int, users: list[str], think_s: float = 0.0
               ) -> dict[str, object]:
    """Turns over HTTP through ``kind`` (json: POST /api/v1/recommend with httpx; gradio: /recommend with
    gradio_client), ``clients`` at once, each its own conversations, pausing ``think_s`` on average between its
    turns (0: none, a closed loop that measures what the server can serve): the ms per turn and turns a
    second."""
    import httpx
    from gradio_client import Client

    def make(i: int):
        if kind == "json":
            http = httpx.Client(base_url=url, timeout=60)

            def turn(user, message, sid):
                r = http.post("/api/v1/recommend", json={"user_id": user, "message": message, "session_id": sid})
                r.raise_for_status()
                return r.json()["session_id"]
        else:
            gc = Client(url + "/", verbose=False)

            def turn(user, message, sid):
                return gc.predict(user, [], message, sid, api_name="/recommend")["session_id"]
        conversation(turn, users, i, 1, [])  # warm: connections, caches
        return turn

    turns = [make(i) for i in range(clients)]
    times: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients)
    threads = [threading.Thread(target=conversation, args=(turns[i], users, i, rounds, times[i], barrier, think_s))
               for i in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    every = [v for vs in times for v in vs]
    return {"ms": every, "per_s": len(every) / wall}


def app_first_chunk(folder: Path, requests: int, clients: int = 20, rounds: int = 2,
                    thinks: tuple[float, ...] = (1.0, 0.0)) -> dict[str, object]:
    """Start app.py on the bundle; first /chat chunk over raw HTTP and via gradio_client; turns over HTTP
    through both APIs, one client, then ``clients`` at once at each mean pause of ``thinks`` (0: none); RSS
    (MB)."""
    import httpx
    from gradio_client import Client

    from index_builder.core.bundle_reader import load_bundle

    port = free_port()
    # no turn limits (one address calls for every client here) and the template writer, whatever .env says
    env = {**os.environ, "CARTWISE_TURNS_SESSION_PER_MINUTE": "0", "CARTWISE_TURNS_CLIENT_PER_MINUTE": "0",
           "OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--bundle", str(folder), "--port", str(port),
                             "--env-file", "", "--reload-interval", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2).read(10)
                break
            except OSError:
                time.sleep(0.5)
        http, full, via_client = [], [], []
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(requests + 2):
                first, end = first_chunk_http(client, SCRIPT[i % 3])
                if i >= 2:  # the first two warm caches
                    http.append(first)
                    full.append(end)
        gc = Client(url + "/", verbose=False)
        for i in range(requests + 2):
            t = time.perf_counter()
            first = None
            for _ in gc.submit("", [], SCRIPT[i % 3], api_name="/chat"):
                if first is None:
                    first = (time.perf_counter() - t) * 1000
            if i >= 2:
                via_client.append(first)
        users = customers(load_bundle(folder))
        runs = [(kind, 1, 0.0) for kind in ("json", "gradio")]
        runs += [(kind, clients, think) for think in thinks for kind in ("json", "gradio")]
        turns = {(kind, n, think): http_turns(url, kind, n, rounds if n > 1 else rounds * 4, users, think)
                 for kind, n, think in dict.fromkeys(runs)}
        status = Path(f"/proc/{proc.pid}/status").read_text()
        field = {ln.split(":")[0]: ln.split()[1] for ln in status.splitlines() if ln.startswith(("VmRSS", "VmHWM"))}
        return {"http": http, "full": full, "client": via_client, "turns": turns,
                "rss": int(field["VmRSS"]) / 1024, "peak": int(field["VmHWM"]) / 1024}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def search_latency(folder: Path) -> dict[str, float]:
    """The picker's search: index build time (s) and ms per query for prefixes of catalog words."""
    from index_builder.core.bundle_reader import load_bundle
    from index_builder.core.search import ProductSearch

    b = load_bundle(folder)
    t = time.perf_counter()
    search = ProductSearch(b.titles, b.product_ids, b.popularity_rank).warm()
    built = time.perf_counter() - t
    times = []
    for q in ["c", "ca", "can", "cand", "candle", "candle h", "red", "red ret", "bag", "jumbo bag p", "heart", "tea",
              "christmas", "zzz", "lunch bag", "paper", "set of", "vintage"]:
        t = time.perf_counter()
        search.search(q, 50)
        times.append((time.perf_counter() - t) * 1000)
    return {"build_s": built, "p50": pct(times, 50), "max": max(times)}


GOALS = {"100k": (15, 50, 1536), "1000k": (20, 60, 2560)}  # p50 ms, p99 ms, peak RSS MB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(ROOT / "artifacts"), help="the UCI bundle (root or version)")
    parser.add_argument("--big", default="100000,1000000", help="sizes of the synthetic bundles, comma-separated")
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--clients", type=int, default=20, help="concurrent HTTP clients (each its own conversation)")
    parser.add_argument("--rounds", type=int, default=2, help="times each concurrent client runs the script's turns")
    parser.add_argument("--think", default="1,0.25,0", help="mean pauses (s) of the concurrent clients between "
                        "their turns, comma-separated, one run each; 0: none (a closed loop: the server's capacity)")
    args = parser.parse_args()
    thinks = tuple(float(x) for x in args.think.split(",") if x)

    uci = fmt.resolve(args.bundle)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset = fmt.verify(uci)[1].get("dataset", "")
        bundles = [("UCI" if dataset == "online-retail" else dataset or "bundle", uci)]
        for n in [int(x) for x in args.big.split(",") if x]:
            t = time.perf_counter()
            bundles.append((f"{n // 1000}k", synthesize(uci, Path(tmp) / str(n), n)))
            print(f"synthetic bundle: {n:,} products in {time.perf_counter() - t:.1f}s", flush=True)
        for name, folder in bundles:
            lat = turn_latencies(folder, args.sessions)
            every = [v for vs in lat.values() for v in vs]
            rows.append((name, every, lat, app_first_chunk(folder, args.requests, args.clients, args.rounds, thinks),
                         search_latency(folder)))
            print(f"{name}: done", flush=True)

    print(f"\n{'bundle':<14} {'turns':>6} {'p50 ms':>7} {'p99 ms':>7} | {'HTTP 1st chunk p50':>18} {'p99':>6} "
          f"{'whole reply':>11} | {'gradio_client 1st':>17} | {'RSS MB':>6} {'peak':>6} | {'search index s':>14} "
          f"{'query p50 ms':>12} {'max':>5}")
    for name, every, _, app, srch in rows:
        print(f"{name:<14} {len(every):>6} {pct(every, 50):7.1f} {pct(every, 99):7.1f} | {pct(app['http'], 50):18.1f} "
              f"{pct(app['http'], 99):6.1f} {pct(app['full'], 50):11.1f} | {pct(app['client'], 50):17.1f} | "
              f"{app['rss']:6.0f} {app['peak']:6.0f} | {srch['build_s']:14.1f} {srch['p50']:12.2f} {srch['max']:5.1f}")
    print(f"\nper turn, whole reply (ms; in process: one thread; HTTP: /recommend, N clients at once, each pausing "
          f"'think' s on average between its turns, 0: none, a closed loop; {os.cpu_count()} CPU cores, the clients "
          "on the same cores)")
    print(f"{'bundle':<14} {'API':<28} {'clients':>7} {'think s':>7} {'turns':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'turns/s':>8}")
    for name, every, _, app, _ in rows:
        print(f"{name:<14} {'in process (Assistant.turn)':<28} {1:>7} {'':>7} {len(every):>6} {pct(every, 50):7.1f} "
              f"{pct(every, 99):7.1f} {'':>8}")
        for (kind, n, think), got in app["turns"].items():
            label = "JSON /api/v1/recommend" if kind == "json" else "Gradio /recommend (client)"
            print(f"{name:<14} {label:<28} {n:>7} {think:>7g} {len(got['ms']):>6} {pct(got['ms'], 50):7.1f} "
                  f"{pct(got['ms'], 99):7.1f} {got['per_s']:8.0f}")
    print("\nper message (p50 / p99 ms):")
    print(f"{'message':<32}" + "".join(f"{name:>16}" for name, *_ in rows))
    for message in SCRIPT:
        cells = "".join(f"{pct(r[2][message], 50):8.1f}/{pct(r[2][message], 99):6.1f} " for r in rows)
        print(f"{message:<32}{cells}")
    goals = [("HTTP first chunk <= 150 ms", max(pct(r[3]["http"], 50) for r in rows) <= 150)]
    for name, _, _, app, _ in rows:
        for think in thinks:
            json_n = app["turns"][("json", args.clients, think)]["ms"]
            who = f"{args.clients} clients ({f'{think:g} s apart' if think else 'no pause'}) at {name}"
            goals += [(f"JSON API p50 <= 20 ms with {who}", pct(json_n, 50) <= 20),
                      (f"JSON API p99 <= 50 ms with {who}", pct(json_n, 99) <= 50)]
    for name, every, _, app, _ in rows:
        if name in GOALS:
            p50, p99, rss = GOALS[name]
            goals += [(f"p50 <= {p50} ms at {name}", pct(every, 50) <= p50),
                      (f"p99 <= {p99} ms at {name}", pct(every, 99) <= p99),
                      (f"RSS <= {rss / 1024:.1f} GB at {name}", app["peak"] <= rss)]
    print("\n" + "; ".join(f"{g}: {'met' if ok else 'NOT met'}" for g, ok in goals))


if __name__ == "__main__":
    main()
