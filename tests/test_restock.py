"""Buy-again in the chat, on the tiny hand-made bundle with a buy-again table: reorders with their reasons
beside new products, the steering messages, and the kind each product is."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.chat import Assistant
from assistant.recommender import reorder_slots, with_reorders
from assistant.session import SessionState
from assistant.ui import cards_html
from index_builder.core.bundle_reader import load_bundle
from tests.support.tiny_bundle import BUY_AGAIN, fake_encode, write_tiny_bundle


@pytest.fixture(scope="module")
def assistant(tmp_path_factory):
    folder = write_tiny_bundle(tmp_path_factory.mktemp("tiny-restock"), buy_again=BUY_AGAIN)
    return Assistant(load_bundle(folder), encode=fake_encode)


@pytest.fixture(scope="module")
def no_table(tmp_path_factory):
    return Assistant(load_bundle(write_tiny_bundle(tmp_path_factory.mktemp("tiny-plain"))), encode=fake_encode)


def kinds(products):
    return [(p.product_id, p.kind) for p in products]


def test_with_reorders_gives_the_due_ones_their_slots_and_keeps_every_new_one():
    due = (np.array([7, 3, 9]), np.array([0.9, 0.5, 0.2]))
    assert reorder_slots(5, 0.4) == 2 and reorder_slots(5, 0.0) == 0 and reorder_slots(5, 1.0) == 5
    assert reorder_slots(5, 0.1) == 1 and reorder_slots(10, 0.1) == 1 and reorder_slots(5, 0.5) == 3  # halves round up
    assert with_reorders(due, [1, 2, 4, 5, 6, 8], 5, 0.4, 0.3) == [
        (7, "reorder"), (3, "reorder"), (1, "new"), (2, "new"), (4, "new"), (5, "new"), (6, "new")]
    assert with_reorders(due, [1, 2], 5, 1.0, 0.6) == [(7, "reorder"), (1, "new"), (2, "new")]  # 0.5 < 0.6: not due
    assert with_reorders(due, [1, 2], 5, 0.0, 0.0) == [(1, "new"), (2, "new")]


def test_a_known_customer_gets_the_due_reorder_first_with_its_reason_then_new_products(assistant):
    state = SessionState(user_id="u_candle")
    turn = assistant.turn("what should I buy next?", state)
    got = kinds(turn.products)
    assert got[0] == ("C1", "reorder"), got  # probability 0.8 >= 0.3: due; B1 (0.1) is not
    assert ("B1", "reorder") not in got and all(kind == "new" for _, kind in got[1:]) and len(got) == 1 + 5
    assert turn.products[0].reasons[0] == {"kind": "reorder", "orders": 6, "every_days": 30, "last_days": 41,
                                           "probability": 0.8}
    reply = "".join(turn.chunks)
    assert "you ordered it 6 times, about every 30 days; the last was 41 days ago" in reply
    assert "Buy again" in reply and "New for you" in reply
    api = assistant.recommend_api("u_candle", [], "what should I buy next?")
    assert [p["kind"] for p in api["products"]][:2] == ["reorder", "new"]


@pytest.mark.parametrize("message", ["just my usual", "what do I need to restock?", "reorder my usual stuff"])
def test_my_usual_lists_only_past_products_most_likely_first(assistant, message):
    turn = assistant.turn(message, SessionState(user_id="u_candle"))
    assert kinds(turn.products) == [("C1", "reorder"), ("B1", "reorder")]
    assert "you ordered it once, 20 days ago, and it is often ordered again" in "".join(turn.chunks)


@pytest.mark.parametrize("message", ["only new things", "something I have not bought before", "show me something new"])
def test_only_new_things_has_no_reorder_and_stays_until_a_plain_question(assistant, message):
    state = SessionState(user_id="u_candle")
    turn = assistant.turn(message, state)
    assert turn.products and all(p.kind == "new" for p in turn.products)
    assert {"C1", "B1"}.isdisjoint(p.product_id for p in turn.products)
    cheaper = assistant.turn("something cheaper", state)  # a refinement keeps the steer
    assert all(p.kind == "new" for p in cheaper.products)
    again = assistant.turn("what should I buy next?", state)  # so does a plain question: they said only new ones
    assert again.products and all(p.kind == "new" for p in again.products)
    fresh = assistant.turn("start over", state) and assistant.turn("what should I buy next?", state)
    assert fresh.products[0].kind == "reorder"  # starting over brings the usual mix back


def test_reorders_obey_the_filters(assistant):
    state = SessionState(user_id="u_candle")
    turn = assistant.turn("just my usual under £1.50", state)  # both past products cost 2.00
    assert turn.products == [] and "could not find products that fit under 1.50" in "".join(turn.chunks)
    turn = assistant.turn("just my usual, no candles", SessionState(user_id="u_candle"))
    assert kinds(turn.products) == [("B1", "reorder")]


def test_my_usual_says_why_when_there_is_nothing_to_restock(assistant, no_table):
    anonymous = assistant.turn("just my usual", SessionState())
    assert "only suggest restocks for a known customer" in "".join(anonymous.chunks)
    assert all(p.kind == "new" for p in anonymous.products)
    movie_like = no_table.turn("what do I need to restock?", SessionState(user_id="u_candle"))
    assert "no repeat orders to learn restocking from" in "".join(movie_like.chunks)
    assert movie_like.products and all(p.kind == "new" for p in movie_like.products)
    plain = no_table.turn("what should I buy next?", SessionState(user_id="u_candle"))
    assert all(p.kind == "new" for p in plain.products)  # no table: no reorder, ever


def test_switching_customer_drops_the_previous_ones_reorders(assistant):
    state, _ = assistant.api_session("u_candle", [], None)
    first = assistant.turn("what should I buy next?", state)
    assert first.products[0].product_id == "C1"
    other, _ = assistant.switch_customer(state, "u_mug")
    turn = assistant.turn("just my usual", other)
    assert {p.product_id for p in turn.products} == {"M1"}  # u_mug's own past product, never u_candle's


def test_viewing_a_product_asks_for_discovery_not_restocking(assistant):
    state = SessionState(user_id="u_candle", viewed=["M1"])
    turn = assistant.turn("what should I buy next?", state)
    assert turn.products and all(p.kind == "new" for p in turn.products)


def test_cards_group_reorders_and_new_products(assistant):
    turn = assistant.turn("what should I buy next?", SessionState(user_id="u_candle"))
    shown = turn.context.products
    page = cards_html(shown, None)
    assert page.index("Buy again") < page.index('data-kind="reorder"') < page.index("New for you")
    assert "ordered 6x, about every 30 days; last 41 days ago" in page
    assert page.count('data-testid="product-card"') == len(shown)


@pytest.mark.parametrize(("message", "steer", "query"), [
    ("just my usual", "only", None), ("what do I need to restock?", "only", None), ("restock candles", "only", "candles"),
    ("I have run out of tea", "only", "tea"), ("not my usual", "off", None), ("I don't want my usual", "off", None),
    ("I dont want to restock", "off", None), ("only new things", "off", None), ("show me new mugs", "off", "mugs"),
    ("candles I haven't tried", "off", "candles"), ("new year cards", None, "new year cards"), ("renew", None, "renew"),
])
def test_the_steering_messages_parse_with_what_else_they_say(message, steer, query):
    from assistant.parsing import parse_message

    intent = parse_message(message)
    assert (intent.reorders, intent.query) == (steer, query) and not intent.include and not intent.exclude


def test_restock_a_kind_of_product_lists_only_those_past_products(assistant):
    turn = assistant.turn("restock candles", SessionState(user_id="u_candle"))
    assert kinds(turn.products) == [("C1", "reorder")]


def test_after_my_usual_a_new_question_is_asked_the_usual_way(assistant):
    state = SessionState(user_id="u_candle")
    assert kinds(assistant.turn("just my usual", state).products) == [("C1", "reorder"), ("B1", "reorder")]
    mugs = assistant.turn("show me mugs", state)
    assert mugs.products and all(p.kind == "new" for p in mugs.products) and mugs.products[0].product_id.startswith("M")
    state = SessionState(user_id="u_candle")
    assistant.turn("just my usual", state)
    like = assistant.turn("more like #1", state)  # more like the candle: new products, not an empty list
    assert like.products and all(p.kind == "new" for p in like.products)
    assert kinds(assistant.turn("not my usual", SessionState(user_id="u_candle")).products)[0][1] == "new"


def test_the_list_the_evaluation_scores_is_the_one_the_chat_shows(assistant):
    turn = assistant.turn("what should I buy next?", SessionState(user_id="u_candle"))
    assert assistant.user_list("u_candle", 5) == [(p.row, p.kind) for p in turn.products]
