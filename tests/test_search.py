"""Keyword matching of title words: singular and plural match each other, whole words only."""

from __future__ import annotations

import numpy as np
import pytest

from index_builder.core.search import ProductSearch, keyword_pattern

# (keyword, a title it must match, a title it must not match)
PAIRS = [
    ("candles", "SET OF 3 CANDLE", "CANDLEHOLDER"),
    ("candle", "RED CANDLES", "CANDLESTICK"),
    ("bottles", "HOT WATER BOTTLE", "BOTTLEOPENER"),
    ("bottle", "GLASS BOTTLES", "BOTT"),
    ("plates", "PAPER PLATE", "PLATED SPOON"),
    ("plate", "PAPER PLATES", "PLAT"),
    ("boxes", "TOY BOX", "BOXER SHORTS"),
    ("box", "SET OF 3 BOXES", "BOXE"),
    ("glasses", "WINE GLASS", "GLASSWARE"),
    ("glass", "WINE GLASSES", "GLAS"),
    ("berries", "BERRY BOWL", "BERR"),
    ("berry", "MIXED BERRIES", "BERRIE"),
    ("dishes", "SOAP DISH", "DISHCLOTH"),
    ("dish", "SOAP DISHES", "DISHE"),
    ("knives", "BUTTER KNIFE", "KNIT HAT"),
    ("knife", "BUTTER KNIVES", "KNIFER"),
    ("leaves", "GOLD LEAF GARLAND", "LEAFLET"),
    ("leaf", "IVY LEAVES", "LEAFLET"),
    ("sleeves", "LAPTOP SLEEVE", "SLEEF"),
    ("toys", "WOODEN TOY", "TOYBOX"),
    ("cookies", "COOKIE CUTTER", "COOK BOOK"),
    ("tomatoes", "TOMATO PLANTER", "TOM"),
    ("pies", "PIE DISH", "PIER"),
    ("matches", "MATCH BOX", "MATCHA TEA"),
    ("tea", "TEAS OF THE WORLD", "TEAPOT"),
    ("tea", "GREEN TEA", "TEACUP"),
    ("cup", "TEA CUPS", "CUPCAKE CASES"),
    ("red candles", "RED CANDLE", "RED CANDLEHOLDER"),
    ("tea lovers", "TEA-LOVER MUG", "TEALOVER MUG"),
    ("bus", "LONDON BUS", "BU"),
    ("glass", "GLASS", "GLA"),
]


@pytest.mark.parametrize(("keyword", "hit", "miss"), PAIRS, ids=[f"{k}|{h}" for k, h, _ in PAIRS])
def test_keyword_matches_singular_and_plural_as_whole_words(keyword, hit, miss):
    pattern = keyword_pattern(keyword)
    assert pattern.search(hit), f"{keyword!r} should match {hit!r}"
    assert not pattern.search(miss), f"{keyword!r} should not match {miss!r}"


def test_short_words_do_not_match_everything():
    for keyword in ("tea", "to", "us", "as", "is", "3", "of"):
        pattern = keyword_pattern(keyword)
        assert not pattern.search("TEAPOT TOTE BUS CASE IRIS"), keyword
    assert not keyword_pattern("toes").search("GIFT TO YOU"), "toes is not 'to'"
    assert not keyword_pattern("uses").search("MADE IN US"), "uses is not 'us'"


def test_title_matches_read_off_the_index_agree_with_the_regex():
    titles = [pair[1] for pair in PAIRS] + [pair[2] for pair in PAIRS]
    s = ProductSearch(titles, [f"P{i}" for i in range(len(titles))], np.arange(1, len(titles) + 1))
    for keyword in {pair[0] for pair in PAIRS}:
        pattern = keyword_pattern(keyword)
        want = [i for i, t in enumerate(titles) if pattern.search(t)]
        assert s.title_matches(keyword).tolist() == want, keyword
    assert titles.index("SET OF 3 CANDLE") in s.title_matches("candles").tolist()
    assert titles.index("GOLD LEAF GARLAND") in s.title_matches("leaves").tolist()


def test_title_matches_multi_word_irregular_and_empty_keywords():
    titles = ["BUTTER KNIFE", "SET OF 6 BUTTER KNIVES", "BUTTER DISH", "GOLD LEAF", "T-LIGHT HOLDER",
              "HEART T-LIGHTS", "MEN'S SOCKS", "SNOWMAN"]
    s = ProductSearch(titles, [f"P{i}" for i in range(len(titles))], np.arange(1, len(titles) + 1))
    assert s.title_matches("butter knives").tolist() == [0, 1]
    assert s.title_matches("t-light").tolist() == [4, 5]
    assert s.title_matches("man").tolist() == [6], "men is the plural of man; SNOWMAN is another word"
    assert s.title_matches("gold leaves").tolist() == [3]
    assert s.title_matches("").tolist() == []
