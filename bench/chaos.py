"""Chaos: concurrent API clients against the real app (python app.py) with the LLM limits on.

20 clients for --minutes, over HTTP (Gradio's ``/gradio_api/call/...``), against an app whose LLM writer
streams from a local OpenAI-compatible server (tests/support/fault_server.py in its "script" mode: a real HTTP
server answering on the real prompt at once, so the limits bite; --llm qwen uses scripts/local_llm.py):

- conversers hold conversations and switch customer mid-conversation (the same session id, another
  customer): the reply must start afresh and name none of the first customer's purchases;
- abandoners open the streamed /chat and hang up after the first chunk;
- flooders open new sessions (session_id "") as fast as they can;
- hostile clients send the hostile-message corpus of tests/test_chat_safety.py.

Checked: 0 server errors; 0 replies naming another customer's purchases ("... you bought before" always
names the asking customer's own product); 0 markup or links on screen; 0 LLM calls past a limit (the
server's own request log, per rolling minute, against the per-client and global limits: every client here
is 127.0.0.1, one client); token usage counted for every LLM stream (a "llm tokens" line in the app's log
for each request the server got, abandoned ones included); the app's RSS sampled throughout.

    .venv/bin/python -m bench.chaos --bundle artifacts/ [--minutes 2] [--clients 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402

from index_builder.core import bundle as fmt  # noqa: E402
from index_builder.core.text import readable_title  # noqa: E402

CLIENT_ERRORS = ("unknown customer id", "unknown product id")
RAW_MARKUP = re.compile(r"<\s*/?\s*[a-zA-Z!?]")
LINK = re.compile(r"\]\(|https?:|www\.|javascript:|data:|mailto:", re.IGNORECASE)
BOUGHT = re.compile(r"(?:goes with the|with the) (.+?) you bought before")
SCRIPT = ("Here are my picks:\n1. **{t1}** [{p1}] {price1}: a lovely choice.\n2. **{t2}** [{p2}] {price2}: "
          "see https://evil.example.\n3. **{t3}** [{p3}] £0.01: also the **Golden Unicorn Lamp**.\n")


class Api:
    def __init__(self, url: str):
        self.url = url

    def _post(self, name: str, data: list) -> str:
        req = urllib.request.Request(f"{self.url}gradio_api/call/{name}", data=json.dumps({"data": data}).encode(),
                                     headers={"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=60).read())["event_id"]

    def call(self, name: str, data: list) -> tuple[str, object]:
        """("ok", result) / ("client_error", message) / ("server_error", what)."""
        try:
            event = self._post(name, data)
            with urllib.request.urlopen(f"{self.url}gradio_api/call/{name}/{event}", timeout=120) as r:
                body = r.read().decode()
        except urllib.error.HTTPError as exc:
            return ("server_error" if exc.code >= 500 else "client_error"), f"HTTP {exc.code}"
        except OSError as exc:
            return "server_error", f"{type(exc).__name__}: {exc}"
        events = re.findall(r"event: (\w+)\ndata: (.*)", body)
        if not events:
            return "server_error", body[:200]
        kind, data_line = events[-1]
        if kind == "complete":
            return "ok", json.loads(data_line)
        message = data_line
        return ("client_error" if any(e in message for e in CLIENT_ERRORS) else "server_error"), message[:300]

    def abandon(self, name: str, data: list) -> str:
        """Open a streamed call, read its first chunk, hang up."""
        try:
            event = self._post(name, data)
            with urllib.request.urlopen(f"{self.url}gradio_api/call/{name}/{event}", timeout=60) as r:
                r.readline()
                r.readline()
            return "ok"
        except OSError as exc:
            return f"server_error {type(exc).__name__}"


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.problems: list[str] = []

    def add(self, key: str, problem: str | None = None) -> None:
        with self.lock:
            self.counts[key] += 1
            if problem and len(self.problems) < 50:
                self.problems.append(problem)


def check_reply(text: str, user: str, bought: dict[str, set[str]], tally: Tally, what: str) -> None:
    if RAW_MARKUP.search(text) or LINK.search(text):
        tally.add("markup_or_link", f"{what}: {text[:200]!r}")
    mine = bought.get(user, set())
    for title in BOUGHT.findall(text):
        if title.lower() not in mine:
            tally.add("other_customers_purchase", f"{what}: {user} told about {title!r}")


def converser(api: Api, users: list[str], bought, tally: Tally, stop: float, rng: random.Random) -> None:
    while time.time() < stop:
        a, b = rng.sample(users, 2)
        status, out = api.call("recommend", [a, [], "what should I buy next?", ""])
        tally.add(status, None if status == "ok" else f"recommend: {out}")
        if status != "ok":
            continue
        sid = out[0]["session_id"]
        for message in ("why the first one?", "something cheaper"):
            status, out = api.call("recommend", ["", [], message, sid])
            tally.add(status, None if status == "ok" else f"recommend: {out}")
            if status == "ok":
                check_reply(out[0]["reply"], a, bought, tally, message)
        status, out = api.call("recommend", [b, [], "why the first one?", sid])  # another customer, same id
        tally.add(status, None if status == "ok" else f"switch: {out}")
        if status == "ok":
            reply = out[0]["reply"]
            check_reply(reply, b, bought, tally, "after a switch")
            tally.add("switches")
            if "fresh conversation" not in reply or out[0]["session_id"] == sid:
                tally.add("switch_not_fresh", reply[:200])
            status, out = api.call("recommend", ["", [], "what should I buy next?", out[0]["session_id"]])
            tally.add(status, None if status == "ok" else f"recommend: {out}")
            if status == "ok":
                check_reply(out[0]["reply"], b, bought, tally, "next after a switch")


def abandoner(api: Api, users: list[str], tally: Tally, stop: float, rng: random.Random) -> None:
    while time.time() < stop:
        status = api.abandon("chat", [rng.choice(users), [], "what should I buy next?", ""])
        tally.add("abandoned" if status == "ok" else "server_error", None if status == "ok" else status)
        time.sleep(0.2)


def flooder(api: Api, tally: Tally, stop: float, rng: random.Random) -> None:
    while time.time() < stop:
        status, out = api.call("recommend", ["", [], rng.choice(["hello", "what should I buy next?"]), ""])
        tally.add(status, None if status == "ok" else f"flood: {out}")
        tally.add("flood_sessions")


def hostile(api: Api, messages: list[str], tally: Tally, stop: float, rng: random.Random) -> None:
    sid = ""
    while time.time() < stop:
        message = rng.choice(messages)
        status, out = api.call("recommend", ["", [], message, sid])
        tally.add(status, None if status == "ok" else f"hostile {message[:40]!r}: {out}")
        if status == "ok":
            sid = out[0]["session_id"]
            check_reply(out[0]["reply"], "", {}, tally, f"hostile {message[:40]!r}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_app(bundle: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    from tests.support.procs import free_port

    port = free_port()
    out = open(log, "w")  # noqa: SIM115 (lives as long as the app)
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--bundle", str(bundle), "--port", str(port),
                             "--env-file", ""], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read(10)
            return proc, url
        except OSError:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(1)
    raise RuntimeError("the app did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(ROOT / "artifacts"))
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--llm", choices=("script", "qwen"), default="script")
    parser.add_argument("--session-per-minute", type=int, default=6)
    parser.add_argument("--client-per-minute", type=int, default=12)
    parser.add_argument("--global-per-minute", type=int, default=60)
    parser.add_argument("--daily-tokens", type=int, default=200_000)
    parser.add_argument("--sessions-per-client", type=int, default=200,
                        help="the app's per-client session cap (every client here is 127.0.0.1: the flood shares it)")
    args = parser.parse_args()

    from tests.support.fault_server import FaultServer
    from tests.support.hostile import HOSTILE_MESSAGES

    folder = fmt.resolve(args.bundle)
    products = pd.read_parquet(folder / fmt.PRODUCTS)
    inter = pd.read_parquet(folder / fmt.INTERACTIONS)
    title = dict(zip(products["product_id"].astype(str), products["title"].astype(str), strict=True))
    had = inter[inter["had"].astype(bool)]
    bought = {u: {readable_title(title[p]).lower() for p in g} for u, g in had.groupby("user_id")["product_id"]}
    users = sorted(u for u, t in bought.items() if len(t) >= 3)

    server = llm_proc = None
    if args.llm == "script":
        server = FaultServer()
        server.reply = SCRIPT
        base_url = server.url("script")
    else:
        from scripts import local_llm

        llm_proc, base_url = local_llm.start(threads=1)
    env = {**os.environ, "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "", "OPENAI_MODEL": "chaos",
           "CARTWISE_LLM_SESSION_PER_MINUTE": str(args.session_per_minute),
           "CARTWISE_LLM_CLIENT_PER_MINUTE": str(args.client_per_minute),
           "CARTWISE_LLM_GLOBAL_PER_MINUTE": str(args.global_per_minute),
           "CARTWISE_LLM_DAILY_TOKENS": str(args.daily_tokens), "GRADIO_ANALYTICS_ENABLED": "False",
           "CARTWISE_SESSIONS_PER_CLIENT": str(args.sessions_per_client)}
    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "app.log"
        app, url = start_app(folder, env, log)
        api = Api(url)
        tally = Tally()
        rss = [rss_mb(app.pid)]
        t0 = time.time()
        stop = t0 + args.minutes * 60
        kinds = (["converser"] * 8 + ["abandoner"] * 4 + ["flooder"] * 4 + ["hostile"] * 4)
        kinds = (kinds * (args.clients // len(kinds) + 1))[:args.clients]
        threads = []
        for i, kind in enumerate(kinds):
            r = random.Random(i)
            target = {"converser": lambda r=r: converser(api, users, bought, tally, stop, r),
                      "abandoner": lambda r=r: abandoner(api, users, tally, stop, r),
                      "flooder": lambda r=r: flooder(api, tally, stop, r),
                      "hostile": lambda r=r: hostile(api, HOSTILE_MESSAGES, tally, stop, r)}[kind]
            threads.append(threading.Thread(target=target, daemon=True))
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(2)
            rss.append(rss_mb(app.pid))
            if time.time() > stop + 180:
                break
        time.sleep(3)  # the last streams' log lines
        app_alive = app.poll() is None
        app.terminate()
        app.wait(30)
        text = log.read_text()
    llm_calls = [r for r in (server.requests if server else []) if r["path"].endswith("/chat/completions")]
    if server:
        server.close()
    if llm_proc:
        llm_proc.terminate()
    # the server's own log: calls in any rolling minute
    # the limits' own clock: when each call was let through (the server sees them later, by the CPU's delays)
    times = sorted(float(t) for t in re.findall(r"llm tokens .* started=([\d.]+)", text))
    worst = max((sum(1 for u in times if t <= u < t + 60) for t in times), default=0)
    limit = min(args.client_per_minute, args.global_per_minute)  # one client (127.0.0.1)
    tokens_lines = text.count("llm tokens session=")
    ends = Counter(re.findall(r"llm tokens session=\S+ client=\S+ counted=\d+ end=(\w+)", text))
    print(f"\n{'chaos: ' + str(args.clients) + ' clients for ' + str(args.minutes) + ' min':<52} {'value':>10}")
    rows = [("requests ok", tally.counts["ok"]), ("client errors (unknown ids)", tally.counts["client_error"]),
            ("server errors", tally.counts["server_error"]), ("customer switches", tally.counts["switches"]),
            ("switches that did not start afresh", tally.counts["switch_not_fresh"]),
            ("replies naming another customer's purchases", tally.counts["other_customers_purchase"]),
            ("replies with markup or links", tally.counts["markup_or_link"]),
            ("abandoned streams", tally.counts["abandoned"]), ("flood calls (new sessions)", tally.counts["flood_sessions"]),
            ("LLM calls the server got", len(llm_calls)), (f"most LLM calls in a minute (limit {limit})", worst),
            ("LLM calls past a limit", max(0, worst - limit)), ("'llm tokens' lines (one per LLM stream)", tokens_lines),
            ("  of which finished / abandoned / fallback / failed",
             f"{ends['finished']}/{ends['abandoned']}/{ends['fallback']}/{ends['failed']}"),
            ("LLM streams with no token count", max(0, len(llm_calls) - tokens_lines)),
            ("app RSS start / max / end (MB)", f"{rss[0]:.0f}/{max(rss):.0f}/{rss[-1]:.0f}"),
            ("app RSS every 30 s (MB)", " ".join(f"{r:.0f}" for r in rss[::15])),
            ("app alive at the end", app_alive)]
    for name, value in rows:
        print(f"{name:<52} {value!s:>10}")
    if tally.problems:
        print("\nfirst problems seen:")
        for p in tally.problems[:10]:
            print("  ", p)
    ok = (tally.counts["server_error"] == 0 and tally.counts["other_customers_purchase"] == 0
          and tally.counts["markup_or_link"] == 0 and tally.counts["switch_not_fresh"] == 0 and worst <= limit
          and tokens_lines >= len(llm_calls) and app_alive)
    print(f"\n0 server errors, 0 other customers' purchases, 0 markup or links, 0 LLM calls past a limit, "
          f"every stream counted: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
