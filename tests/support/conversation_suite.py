"""Runs the scripted conversations of ``tests/support/conversations.json`` against an Assistant and checks each
turn's expected outcome. Used by tests/test_conversations.py (template writer) and bench/llm_grounding.py
(a real LLM), so both hold the chat to the same expectations."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from assistant.chat import Assistant
from assistant.grounding import audit
from assistant.llm import catalog_titles
from assistant.session import SessionState
from assistant.writers import accumulate
from index_builder.core.search import keyword_pattern

SUITE = Path(__file__).with_name("conversations.json")
LONG_MESSAGE = "candles " * 130_000  # about 1 MB


def load() -> list[dict[str, Any]]:
    return json.loads(SUITE.read_text())["conversations"]


def active_user(assistant: Assistant) -> str:
    b = assistant.bundle
    return sorted(b.had, key=lambda u: (-len(b.had[u]), u))[0]


def run_conversation(assistant: Assistant, convo: dict[str, Any], titles: dict[str, str] | None = None
                     ) -> tuple[list[str], list[dict[str, Any]]]:
    """(failures, one record per turn: reply, products, writer meta, grounding audit, timings)."""
    b = assistant.bundle
    titles = titles if titles is not None else catalog_titles(b)
    user = active_user(assistant) if convo.get("user") == "active" else convo.get("user")
    state = SessionState(user_id=user)
    for pid in convo.get("viewed", []):
        state.view(pid)
    failures: list[str] = []
    records: list[dict[str, Any]] = []
    lists: list[list[dict[str, Any]]] = []
    for i, t in enumerate(convo["turns"]):
        said = LONG_MESSAGE if t["say"] == "@LONG" else t["say"]
        where = f"{convo['name']} / turn {i + 1} ({t['say'][:40]!r})"
        t0 = time.monotonic()
        turn = assistant.turn(said, state)
        first, text = None, ""
        for text in accumulate(turn.chunks):
            if first is None and text:
                first = time.monotonic() - t0
        ctx = turn.context
        products = ctx.products
        rec = {"conversation": convo["name"], "turn": i + 1, "say": t["say"], "kind": turn.intent.kind,
               "reply": text, "products": [p["product_id"] for p in products], "meta": dict(ctx.meta),
               "first_text_s": first, "seconds": time.monotonic() - t0,
               "audit": audit(text, products, titles, recent=ctx.recent, money=ctx.money),
               "raw_audit": audit(ctx.meta["raw_text"], products, titles, recent=ctx.recent, money=ctx.money)
               if ctx.meta.get("raw_text") else {}}
        records.append(rec)
        low = text.lower()

        def fail(msg: str, where: str = where) -> None:
            failures.append(f"{where}: {msg}")

        if "kind" in t and turn.intent.kind != t["kind"]:
            fail(f"kind {turn.intent.kind!r}, expected {t['kind']!r}")
        if ctx.kind != "explain":
            n = len(turn.products)
            if n < t.get("min_products", 0):
                fail(f"{n} products, expected at least {t['min_products']}")
            if n > t.get("max_products", 99):
                fail(f"{n} products, expected at most {t['max_products']}")
        for p in turn.products:
            if "max_price" in t and (p.price is None or p.price > t["max_price"] + 1e-9):
                fail(f"{p.product_id} costs {p.price}, over {t['max_price']}")
            if "min_price" in t and (p.price is None or p.price < t["min_price"] - 1e-9):
                fail(f"{p.product_id} costs {p.price}, under {t['min_price']}")
            if any(keyword_pattern(w).search(p.title) for w in t.get("title_not", [])):
                fail(f"{p.title!r} contains one of {t['title_not']}")
            if p.product_id not in b.row_of:
                fail(f"{p.product_id} is not in the catalog")
            if "all_kind" in t and p.kind != t["all_kind"]:
                fail(f"{p.product_id} is a {p.kind!r} product, expected only {t['all_kind']!r} ones")
        for s in t.get("reply_has", []):
            if s.lower() not in low:
                fail(f"reply lacks {s!r}: {text[:200]!r}")
        for s in t.get("reply_not", []):
            if s.lower() in low:
                fail(f"reply contains {s!r}")
        if len(text) > t.get("max_reply_chars", 10**9):
            fail(f"reply is {len(text)} characters")
        if rec["audit"]:
            fail(f"reply names products that are not candidates: {rec['audit']}")
        if t.get("new") and lists:
            before = {p["product_id"] for lst in lists for p in lst}
            again = before & {p.product_id for p in turn.products}
            if again:
                fail(f"shown before: {sorted(again)}")
        if "same_anchor" in t and lists:
            prev = lists[-1]
            at = t["same_anchor"]  # 1-based; -1: the last one shown
            anchor = prev[-1 if at < 0 else min(at, len(prev)) - 1]["product_id"]
            tied = sum(any(r.get("to_id") == anchor for r in p.reasons) for p in turn.products)
            if tied < min(3, len(turn.products)):
                fail(f"only {tied} products give the anchor {anchor} as a reason")
        if "explains" in t:
            prev = lists[-1] if lists else []
            want = prev if t["explains"] == "all" else prev[t["explains"] - 1: t["explains"]]
            got = [p["product_id"] for p in products]
            if got != [p["product_id"] for p in want]:
                fail(f"explained {got}, expected {[p['product_id'] for p in want]}")
            for p, w in zip(products, want, strict=False):
                if p["reasons"] != w["reasons"]:
                    fail(f"{p['product_id']}: reasons {p['reasons'][:1]} differ from those given {w['reasons'][:1]}")
        if turn.products:
            lists.append([dict(p) for p in products])
    return failures, records


def run_suite(assistant: Assistant, limit: int | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    titles = catalog_titles(assistant.bundle)
    failures, records = [], []
    for convo in load()[:limit]:
        f, r = run_conversation(assistant, convo, titles)
        failures += f
        records += r
    return failures, records
