"""The scripted conversations (tests/support/conversations.json) with a real local LLM writing the replies.

Starts llama.cpp's server with Qwen2.5 0.5B (scripts/local_llm.py) unless --base-url is given, runs the
suite through the Assistant with the LLM writer, and prints:
- non-catalog products in the raw model text, and on screen after grounding (goal on screen: 0);
- how often the template had to answer (faults, limits, replies with no valid product);
- time to the first text through the app's turn, and prompt tokens against the budget;
- the expected-outcome failures of the suite (products, filters and reasons are the recommender's, so
  these should match the template run).

    python -m bench.llm_grounding --bundle artifacts/ [--limit 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default="artifacts")
    p.add_argument("--base-url", help="an OpenAI-compatible server to use instead of starting the local one")
    p.add_argument("--model", default="qwen2.5-0.5b")
    p.add_argument("--limit", type=int, help="run only the first N conversations")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    from assistant.chat import Assistant
    from assistant.llm import LLMSettings, make_writer
    from index_builder.core.bundle_reader import load_bundle
    from tests.support.conversation_suite import run_suite

    proc = None
    url = a.base_url
    if not url:
        from scripts import local_llm

        proc, url = local_llm.start(threads=a.threads, log_path=Path("/tmp") / "cartwise_local_llm.log")
    try:
        bundle = load_bundle(a.bundle)
        settings = LLMSettings(base_url=url, model=a.model, session_per_minute=10_000, global_per_minute=10_000,
                               daily_tokens=10**9)
        assistant = Assistant(bundle, writer=make_writer(bundle, settings))
        t0 = time.monotonic()
        failures, records = run_suite(assistant, a.limit)
        wall = time.monotonic() - t0
    finally:
        if proc is not None:
            proc.terminate()
    llm = [r for r in records if r["meta"].get("raw_text") is not None or r["meta"].get("fallback")]
    raw = Counter()
    screen = Counter()
    for r in records:
        raw.update(r["raw_audit"])
        screen.update(r["audit"])
    writers = Counter(r["meta"].get("writer", "template") for r in llm)
    fallbacks = Counter(r["meta"]["fallback"].split(":")[0] for r in llm if r["meta"].get("fallback"))
    ttft = [r["first_text_s"] for r in llm if r["first_text_s"] is not None]
    prompt = [r["meta"]["budget"]["prompt_tokens_est"] for r in llm if r["meta"].get("budget")]
    budget = settings.prompt_budget
    fixed = Counter()
    for r in llm:
        fixed.update({k: v for k, v in r["meta"].get("grounding", {}).items() if k in ("price_fixed", "name_replaced")})
    print(f"LLM grounding benchmark: {a.model}, {len(records)} turns in {len({r['conversation'] for r in records})} "
          f"conversations, {len(llm)} sent to the model, {wall:.0f} s")
    print(f"{'measure':52s} {'value':>12s}")
    rows = [
        ("non-catalog products in raw model text", sum(raw.values())),
        ("  of which unknown ids / invented names / other catalog products",
         f"{raw['unknown_id']}/{raw['invented_name']}/{raw['non_candidate_name']}"),
        ("non-catalog products on screen after grounding", sum(screen.values())),
        ("prices and names corrected to the candidate's", sum(fixed.values())),
        ("LLM turns answered by the model / by the template", f"{writers.get(a.model, 0)}/{writers.get('template', 0)}"),
        ("time to first text, p50 / p90 (s)", f"{pct(ttft, .5):.1f}/{pct(ttft, .9):.1f}"),
        ("prompt tokens, median / max (budget)", f"{statistics.median(prompt) if prompt else 0:.0f}/{max(prompt, default=0)} ({budget})"),
        ("suite expectation failures", len(failures)),
    ]
    for name, value in rows:
        print(f"{name:52s} {value!s:>12s}")
    if fallbacks:
        print("template fallbacks:", dict(fallbacks))
    for f in failures[:20]:
        print("  FAIL", f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
