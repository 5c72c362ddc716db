"""Message parsing table: every row is a message and the parts of the Intent it must produce."""

from __future__ import annotations

import pytest

from assistant.parsing import parse_message

CASES = [
    ("what should I buy next?", {"kind": "recommend"}),
    ("", {"kind": "empty"}),
    ("hello!", {"kind": "greeting"}),
    ("help", {"kind": "help"}),
    ("something cheaper", {"kind": "recommend", "cheaper": True}),
    ("more expensive ones please", {"pricier": True}),
    ("under 5 pounds", {"max_price": 5.0}),
    ("anything below £3.50?", {"max_price": 3.5}),
    ("£5 or less", {"max_price": 5.0}),
    ("no more than 10 quid", {"max_price": 10.0, "exclude": []}),
    ("between 2 and 10 pounds", {"min_price": 2.0, "max_price": 10.0}),
    ("£2-£4", {"min_price": 2.0, "max_price": 4.0}),
    ("over 20 euros", {"min_price": 20.0}),
    ("only candles", {"include": ["candles"]}),
    ("just mugs and cups", {"include": ["mugs", "cups"]}),
    ("no bags", {"exclude": ["bags"]}),
    ("no bags please, under £4", {"exclude": ["bags"], "max_price": 4.0}),
    ("not interested in christmas stuff", {"exclude": ["christmas"]}),
    ("more like the second one", {"kind": "more_like", "ref": 1}),
    ("#3", {"kind": "more_like", "ref": 2}),
    ("something like number 2 but cheaper", {"kind": "more_like", "ref": 1, "cheaper": True}),
    ("the last one looks nice, more like that", {"kind": "more_like", "ref": -1}),
    ("why the first one?", {"kind": "explain", "ref": 0}),
    ("why?", {"kind": "explain", "ref": None}),
    ("show me something different", {"kind": "different"}),
    ("a gift for a tea lover", {"kind": "need", "query": "tea lover"}),
    ("I'm looking for garden decorations", {"kind": "need", "query": "garden decorations"}),
    ("candles", {"kind": "need", "query": "candles"}),
    ("start over", {"kind": "reset"}),
]


@pytest.mark.parametrize(("message", "expected"), CASES, ids=[c[0] or "<empty>" for c in CASES])
def test_parse(message, expected):
    intent = parse_message(message)
    got = {k: getattr(intent, k) for k in expected}
    assert got == expected
