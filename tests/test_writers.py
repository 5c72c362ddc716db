"""Writers: the template snapshot, and the contract every writer (template now, LLM later) must meet."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from assistant.writers import ReplyContext, TemplateWriter

SNAPSHOTS = Path(__file__).with_name("snapshots")

PRODUCTS = [
    {"number": 1, "product_id": "21733", "title": "RED HANGING HEART T-LIGHT HOLDER", "price": 2.95, "score": 0.84,
     "reasons": [{"kind": "similar", "to": "WHITE HANGING HEART T-LIGHT HOLDER", "to_id": "85123A", "via": "viewed",
                  "similarity": 0.901}, {"kind": "als", "strength": 0.72}]},
    {"number": 2, "product_id": "22423", "title": "REGENCY CAKESTAND 3 TIER", "price": 12.75, "score": 0.61,
     "reasons": [{"kind": "popular", "rank": 1, "cluster": 3, "buyers": 881}]},
    {"number": 3, "product_id": "85099B", "title": "JUMBO BAG RED RETROSPOT", "price": None, "score": 0.5,
     "reasons": [{"kind": "query", "query": "tea lover", "similarity": 0.41}]},
]


def context(kind="recommend", products=PRODUCTS, **kw):
    base = {"kind": kind, "message": "what should I buy next?", "products": products,
            "user": {"user_id": "17850", "known": True},
            "constraints": {"max_price": None, "min_price": None, "include": [], "exclude": [], "query": None,
                            "summary": ""},
            "notes": [], "variant": 0, "currency": "GBP"}
    base.update(kw)
    return ReplyContext(**base)


@pytest.mark.parametrize("name,ctx", [
    ("template_recommend", context()),
    ("template_explain", context(kind="explain", products=PRODUCTS[:1])),
    ("template_nothing", context(products=[], constraints={**context().constraints, "summary": "under £0.10"})),
])
def test_template_snapshot(name, ctx):
    got = TemplateWriter().render(ctx)
    expected = (SNAPSHOTS / f"{name}.txt").read_text().rstrip("\n")
    assert got == expected


def test_template_varies_with_turn_and_reasons():
    writer = TemplateWriter()
    first, second = writer.render(context(variant=0)), writer.render(context(variant=1))
    assert first.splitlines()[0] != second.splitlines()[0]
    assert "very close to the White Hanging Heart T-Light Holder you viewed" in first
    assert "best seller in this group (#1 in the shop, 881 buyers)" in first
    assert 'matches "tea lover"' in first and "price not given" in first
    assert "RED HANGING" not in first, "titles in capitals read as shouting: shown in a readable case"


def test_prices_use_the_shops_currency_or_none():
    assert "**Regency Cakestand 3 Tier** — £12.75" in TemplateWriter().render(context())
    assert "— $12.75" in TemplateWriter().render(context(currency="USD"))
    plain = TemplateWriter().render(context(currency=None))
    assert "— 12.75:" in plain and "£" not in plain


def test_missing_variable_raises():
    import jinja2

    ctx = context()
    ctx.constraints = {}
    with pytest.raises(jinja2.UndefinedError):
        TemplateWriter().render(ctx)


CATALOG = ["RED HANGING HEART T-LIGHT HOLDER", "REGENCY CAKESTAND 3 TIER", "JUMBO BAG RED RETROSPOT",
           "WHITE HANGING HEART T-LIGHT HOLDER", "PARTY BUNTING", "ASSORTED COLOUR BIRD ORNAMENT"]


@pytest.fixture(scope="module")
def fault_server():
    from tests.support.fault_server import FaultServer

    server = FaultServer()
    server.reply = ("A few ideas, plus the Party Bunting everyone loves.\n"
                    "1. **Red Hanging Heart T-Light Holder** [21733] £2.95: close to the White Hanging Heart "
                    "T-Light Holder you viewed.\n2. **Regency Cakestand 3 Tier** [22423] £12.75: a best seller.\n")
    yield server
    server.close()


def template_writer(_server):
    return TemplateWriter()


def llm_writer(server):
    from assistant.grounding import norm
    from assistant.llm import LLMSettings, LLMWriter

    return LLMWriter(LLMSettings(base_url=server.url("ok"), model="m"), catalog_titles={norm(t): t for t in CATALOG})


@pytest.mark.parametrize("make", [template_writer, llm_writer])
def test_writer_contract_streams_and_names_only_candidates(make, fault_server):
    """Every writer streams several chunks and names no product outside the candidate list."""
    from assistant.writers import final_text

    candidates = PRODUCTS[:2]
    chunks = list(make(fault_server).write(context(products=candidates)))
    text = final_text(chunks).upper()
    assert len(chunks) > 2
    named = {t for t in CATALOG if re.search(re.escape(t), text)}
    allowed = {p["title"] for p in candidates} | {"WHITE HANGING HEART T-LIGHT HOLDER"}  # a reason's viewed item
    assert named <= allowed
    assert {p["title"] for p in candidates} <= named
