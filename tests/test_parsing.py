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
    # prices: pence, thousands separators, decimal commas, quid
    ("under 50p", {"max_price": 0.5}),
    ("over 99p", {"min_price": 0.99}),
    ("under 75 pence", {"max_price": 0.75}),
    ("between 50p and £2", {"min_price": 0.5, "max_price": 2.0}),
    ("between 20 and 80p", {"min_price": 0.2, "max_price": 0.8}),
    ("under £1,000", {"max_price": 1000.0}),
    ("under £1,299.99", {"max_price": 1299.99}),
    ("under 10,000 pounds", {"kind": "recommend", "max_price": 10000.0, "query": None}),
    ("£1,000-£2,000", {"min_price": 1000.0, "max_price": 2000.0}),
    ("under €12,50", {"max_price": 12.5}),
    ("under 1.000 euros", {"max_price": 1000.0}),
    ("under 1.000,50 euros", {"max_price": 1000.5}),
    ("under £5 p&p included", {"max_price": 5.0}),
    ("something but cheaper", {"kind": "recommend", "cheaper": True, "exclude": []}),
    ("under 5 quid", {"max_price": 5.0}),
    ("5 quid max", {"max_price": 5.0}),
    ("mugs under 5, no bags", {"max_price": 5.0, "exclude": ["bags"]}),
    # a cheaper / pricier refinement said as a want is not a new need
    ("I need something cheaper", {"kind": "recommend", "cheaper": True, "query": None}),
    ("I want something cheaper", {"kind": "recommend", "cheaper": True, "query": None}),
    ("I want something less expensive", {"kind": "recommend", "cheaper": True, "query": None}),
    ("I want something under £5", {"kind": "recommend", "max_price": 5.0, "query": None}),
    ("do you have anything cheaper?", {"kind": "recommend", "cheaper": True, "query": None}),
    ("have you got anything more affordable?", {"kind": "recommend", "cheaper": True, "query": None}),
    ("show me something pricier", {"kind": "recommend", "pricier": True, "query": None}),
    ("I'd like something more expensive", {"kind": "recommend", "pricier": True, "query": None}),
    ("I need candles but cheaper", {"kind": "need", "query": "candles", "cheaper": True}),
    ("I'm looking for cheaper candles", {"kind": "need", "query": "candles", "cheaper": True}),
    # anything but X: an exclusion, not a search for "but X"
    ("anything but candles", {"kind": "recommend", "exclude": ["candles"], "query": None}),
    ("everything but candles", {"kind": "recommend", "exclude": ["candles"], "query": None}),
    ("anything except candles", {"kind": "recommend", "exclude": ["candles"], "query": None}),
    ("all but candles", {"kind": "recommend", "exclude": ["candles"], "query": None}),
    ("anything other than candles please", {"kind": "recommend", "exclude": ["candles"], "query": None}),
    ("do you have anything but candles?", {"kind": "recommend", "exclude": ["candles"], "query": None}),
    ("I'm looking for mugs, no bags", {"kind": "need", "query": "mugs", "exclude": ["bags"]}),
    ("not the first one", {"exclude": []}),
    # ages are not prices
    ("gifts for 5 to 10 year olds", {"kind": "need", "min_price": None, "max_price": None}),
    ("toys for ages 3-5", {"kind": "need", "min_price": None, "max_price": None}),
    ("something for a 7 year old", {"kind": "need", "min_price": None, "max_price": None}),
    ("gift for kids 8-12", {"kind": "need", "min_price": None, "max_price": None}),
    ("a present for a 3-year-old", {"kind": "need", "min_price": None, "max_price": None}),
    ("toys for kids aged 4 to 6", {"kind": "need", "min_price": None, "max_price": None}),
    ("toys for kids under 5", {"kind": "need", "min_price": None, "max_price": None}),
    ("toys for 5 to 10 year olds under £20", {"kind": "need", "min_price": None, "max_price": 20.0}),
    ("toys for kids under 5 pounds", {"kind": "need", "min_price": None, "max_price": 5.0}),
    ("gifts between £5 and £10", {"min_price": 5.0, "max_price": 10.0}),
    ("5 to 10 pounds", {"min_price": 5.0, "max_price": 10.0}),
    ("candles 2-4", {"min_price": 2.0, "max_price": 4.0}),
]


@pytest.mark.parametrize(("message", "expected"), CASES, ids=[c[0] or "<empty>" for c in CASES])
def test_parse(message, expected):
    intent = parse_message(message)
    got = {k: getattr(intent, k) for k in expected}
    assert got == expected


@pytest.mark.parametrize(("message", "words"), [
    ("gifts for 5 to 10 year olds", "5 to 10 year olds"),
    ("toys for ages 3-5", "ages 3-5"),
    ("something for a 7 year old", "7 year old"),
    ("gift for kids 8-12", "kids 8-12"),
    ("toys for 5 to 10 year olds under £20", "5 to 10 year olds"),
])
def test_an_age_stays_in_the_need(message, words):
    assert words in parse_message(message).query
