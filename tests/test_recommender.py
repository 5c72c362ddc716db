"""Known-answer tests of the recommender and the conversation on a tiny hand-made bundle."""

from __future__ import annotations

import pytest

from assistant.chat import Assistant
from assistant.recommender import Request
from assistant.session import SessionState
from index_builder.core.bundle_reader import load_bundle
from index_builder.core.errors import UnknownProduct, UnknownUser
from tests.support.tiny_bundle import fake_encode, write_tiny_bundle


@pytest.fixture(scope="module")
def assistant(tmp_path_factory):
    folder = write_tiny_bundle(tmp_path_factory.mktemp("tiny-bundle"))
    return Assistant(load_bundle(folder), encode=fake_encode)


def ids(products):
    return [p.product_id for p in products]


def test_neighbours_of_a_viewed_product_come_from_its_cluster(assistant):
    rec = assistant.recommender.recommend(Request(seeds=[0], n=3))  # viewed C1
    assert ids(rec) == ["C2", "C3", "C4"]
    assert rec[0].reasons[0] == {"kind": "similar", "to": "WHITE PILLAR CANDLE", "to_id": "C1", "via": "viewed",
                                 "similarity": pytest.approx(0.998, abs=0.002)}


def test_purchased_items_are_never_returned(assistant):
    state = SessionState(user_id="u_candle")  # bought C1 and B1, no views: seeds are the purchases
    turn = assistant.turn("what should I buy next?", state)
    got = ids(turn.products)
    assert got and "C1" not in got and "B1" not in got
    assert {"C2", "B2"} <= set(got)  # neighbours of both purchases, kept diverse by MMR
    assert any(r["kind"] == "als" for p in turn.products for r in p.reasons)


def test_price_constraint_is_respected_and_remembered(assistant):
    state = SessionState(viewed=["C1"])
    turn = assistant.turn("something under £5", state)
    assert turn.products and all(p.price <= 5 for p in turn.products)
    turn = assistant.turn("what should I buy next?", state)
    assert all(p.price <= 5 for p in turn.products)
    assert "under 5.00" in "".join(turn.chunks), "this bundle has no currency: plain numbers"


def test_cheaper_means_below_what_was_shown(assistant):
    state = SessionState(viewed=["C4"])
    first = assistant.turn("what should I buy next?", state).products
    cheaper = assistant.turn("something cheaper", state).products
    median = sorted(p.price for p in first)[len(first) // 2]
    assert cheaper and all(p.price <= median for p in cheaper)


def test_a_catalog_without_prices_says_so_instead_of_an_empty_answer(assistant):
    import dataclasses

    import numpy as np

    b = assistant.bundle
    unpriced = Assistant(dataclasses.replace(b, prices=np.full(len(b.prices), np.nan)), encode=fake_encode)
    state = SessionState(viewed=["C1"])
    for message in ("something under £5", "something cheaper", "over 10 please"):
        turn = unpriced.turn(message, state)
        assert turn.products, message
        assert "catalog has no prices" in "".join(turn.chunks)
        assert state.max_price is None and state.min_price is None, "no price filter sticks to later requests"
    assert "no prices" not in "".join(unpriced.turn("what should I buy next?", state).chunks)


def test_the_second_one_resolves_to_the_last_list(assistant):
    state = SessionState(viewed=["M1"])
    shown = ids(assistant.turn("what should I buy next?", state).products)
    second = shown[1]
    turn = assistant.turn("more like the second one", state)
    assert turn.intent.ref == 1 and state.anchor == second
    assert second not in ids(turn.products)
    assert turn.products[0].reasons[0]["to_id"] == second


def test_refinements_keep_the_anchor_and_a_plain_question_drops_it(assistant):
    state = SessionState(viewed=["M1"])
    assistant.turn("what should I buy next?", state)
    assistant.turn("more like the second one", state)
    anchor = state.anchor
    turn = assistant.turn("under £5", state)
    assert state.anchor == anchor and turn.products[0].reasons[0]["to_id"] == anchor
    assistant.turn("what should I buy next?", state)
    assert state.anchor is None


def test_only_and_no_keywords(assistant):
    state = SessionState(viewed=["B1"])
    only = assistant.turn("only candles", state).products
    assert only and all("CANDLE" in p.title for p in only)
    state = SessionState(viewed=["B1"])
    nobags = assistant.turn("no bags", state).products
    assert nobags and all("BAG" not in p.title for p in nobags)


def test_free_text_need_for_an_anonymous_shopper(assistant):
    turn = assistant.turn("a gift for a tea lover", SessionState())
    assert turn.intent.kind == "need"
    assert set(ids(turn.products)[:2]) == {"T1", "T2"}
    assert turn.products[0].reasons[0]["kind"] == "query"


def test_something_different_shows_new_products(assistant):
    state = SessionState(viewed=["C1"])
    first = set(ids(assistant.turn("what should I buy next?", state).products))
    second = set(ids(assistant.turn("show me something different", state).products))
    assert second and not first & second


def test_why_explains_the_shown_product(assistant):
    state = SessionState(viewed=["C1"])
    shown = assistant.turn("what should I buy next?", state).products
    turn = assistant.turn("why the first one?", state)
    reply = "".join(turn.chunks)
    assert [p["product_id"] for p in turn.context.products] == [shown[0].product_id]
    assert shown[0].display_title in reply and "White Pillar Candle you viewed" in reply
    assert turn.context.products[0]["reasons"] == shown[0].reasons, "why repeats the reasons given"


def test_sessions_are_isolated(assistant):
    a, b = SessionState(), SessionState()
    assistant.mark_viewed(a, "C1")
    assistant.turn("under £3", a)
    assert b.viewed == [] and b.max_price is None and b.shown == []
    assert a.session_id != b.session_id
    only_b = assistant.turn("what should I buy next?", b)
    assert ids(only_b.products)  # best sellers for a fresh anonymous session, no filters leaked
    assert any(p.price > 3 for p in only_b.products)


def test_unclear_and_empty_messages_get_help_not_errors(assistant):
    for message, expect in [("", "Type a message first"), ("hello", "Hello!"), ("help", "Here is what I understand")]:
        turn = assistant.turn(message, SessionState())
        assert turn.products == [] and expect in "".join(turn.chunks)


def test_api_rejects_unknown_ids_with_friendly_messages(assistant):
    with pytest.raises(UnknownUser, match="unknown customer id 'nobody'.*leave it empty"):
        assistant.recommend_api("nobody", [], "hi")
    with pytest.raises(UnknownProduct, match="unknown product id.*'X9'.*not in the catalog"):
        assistant.recommend_api("", ["C1", "X9"], "what should I buy next?")
    out = assistant.recommend_api("u_mug", ["C1"], "what should I buy next?")
    assert out["reply"] and {p["product_id"] for p in out["products"]}.isdisjoint({"M1", "M2", "C1"})
    assert set(out["products"][0]) == {"product_id", "title", "display_title", "price", "score", "kind", "reasons"}
    assert out["products"][0]["kind"] == "new"  # the mini bundle has no buy-again table
    assert out["session_id"] and out["writer"] == "template"


def test_top_k_is_an_exact_sort_with_ties_by_row():
    """top_k skips most of a long array by a sampled threshold; it must still equal a full sort (largest
    first, equal values by the lower row), with ties, -inf, float32, mostly zeros and k beyond the array."""
    import numpy as np

    from assistant.recommender import top_k

    rng = np.random.default_rng(1)
    cases = 0
    for n in (1, 7, 4096, 5000, 100_000):
        for values in (rng.random(n), rng.integers(0, 4, n).astype(float),
                       np.where(rng.random(n) < 0.5, -np.inf, rng.random(n)),
                       np.round(rng.random(n), 2).astype(np.float32),
                       np.where(rng.random(n) < 0.999, 0.0, rng.random(n))):  # an item-item row: mostly zeros
            for k in (0, 1, 10, 100, 1000, n, n + 3):
                expected = np.lexsort((np.arange(n), -values))[:k]
                assert np.array_equal(top_k(values, k), expected), (n, k, values.dtype)
                cases += 1
    assert cases == 5 * 5 * 7
