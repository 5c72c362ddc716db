"""The scripted conversation suite (tests/support/conversations.json) with the template writer on the real UCI
bundle, one test per conversation; plus the session API and the conversation-level fixes."""

from __future__ import annotations

import time

import pytest

from assistant.chat import Assistant
from assistant.session import SessionStore
from index_builder.core.errors import UnknownUser
from tests.support.conversation_suite import active_user, load, run_conversation

CONVERSATIONS = load()


@pytest.fixture(scope="module")
def assistant(uci_bundle):
    folder, _ = uci_bundle
    return Assistant.from_path(folder)


def test_the_suite_is_big_enough():
    assert len(CONVERSATIONS) >= 40 and sum(len(c["turns"]) > 1 for c in CONVERSATIONS) >= 20


@pytest.mark.parametrize("convo", CONVERSATIONS, ids=[c["name"] for c in CONVERSATIONS])
def test_conversation(assistant, convo):
    failures, records = run_conversation(assistant, convo)
    assert not failures, "\n".join(failures)
    assert all(r["meta"].get("writer") == "template" for r in records)


def test_a_long_message_is_cut_quickly(assistant):
    from assistant.session import SessionState

    t0 = time.monotonic()
    turn = assistant.turn("gift " * 200_000, SessionState())
    text = "".join(turn.chunks)
    assert time.monotonic() - t0 < 3.0
    assert "read only the first 500" in text and len(text) < 3000


def test_prices_are_written_in_the_bundles_currency(assistant):
    from assistant.session import SessionState

    assert assistant.bundle.currency == "GBP"
    text = "".join(assistant.turn("between £10 and £20", SessionState()).chunks)
    assert "£" in text and "between £10.00 and £20.00" in text


def test_api_sessions_continue_a_conversation(assistant):
    user = active_user(assistant)
    first = assistant.recommend_api(user, [], "what should I buy next?")
    sid = first["session_id"]
    new = [p for p in first["products"] if p["kind"] == "new"]  # 5 new products, after any due reorders
    assert len(sid) == 32 and first["writer"] == "template" and len(new) == 5
    assert [p["kind"] for p in first["products"]] == ["reorder"] * (len(first["products"]) - 5) + ["new"] * 5
    second = assistant.recommend_api("", [], "more like the second one", session_id=sid)
    assert second["session_id"] == sid
    anchor = first["products"][1]["product_id"]
    assert any(r.get("to_id") == anchor for p in second["products"] for r in p["reasons"])
    why = assistant.recommend_api("", [], "why #1?", session_id=sid)
    assert second["products"][0]["display_title"] in why["reply"]
    cheap = assistant.recommend_api("", [], "under £2", session_id=sid)
    later = assistant.recommend_api("", [], "what else?", session_id=sid)
    assert all(p["price"] <= 2 for p in cheap["products"] + later["products"]), "constraints persist in the session"
    other = assistant.recommend_api(user, [], "what else?")
    assert other["session_id"] != sid
    gone = assistant.recommend_api("", [], "what should I buy next?", session_id="no-such-session")
    assert gone["session_id"] != "no-such-session" and "expired or is unknown" in gone["reply"]
    with pytest.raises(UnknownUser):
        assistant.recommend_api("not-a-customer", [], "hi", session_id=sid)


def test_session_store_expires_idle_sessions_and_is_bounded():
    clock = [0.0]
    store = SessionStore(ttl_s=60, max_sessions=3, clock=lambda: clock[0])
    a, _ = store.get(None)
    clock[0] = 30
    assert store.get(a.session_id)[0] is a
    clock[0] = 89
    assert store.get(a.session_id)[0] is a, "each call refreshes the idle time"
    clock[0] = 150
    fresh, why = store.get(a.session_id)
    assert fresh is not a and "expired" in why
    ids = [store.get(None)[0].session_id for _ in range(5)]
    assert len(store) == 3 and store.get(ids[-1])[0].session_id == ids[-1]
    assert store.get(ids[0])[1], "the least recently used sessions are dropped first"
