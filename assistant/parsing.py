"""Deterministic message parsing: prices, comparatives, references to shown items, keywords, needs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# a price: currency, number, unit, each a named group (tag c, n, u) so that one pattern can hold two prices
_CUR = r"£|\$|€|gbp\s*|usd\s*|eur\s*"
# 1,299.99 / 1.299,99 / 10,000 (a separator before exactly three digits groups thousands) / 12,50 / 3.5 / 50
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?|\d{1,3}(?:\.\d{3})+(?:,\d{1,2})?|\d+(?:[.,]\d{1,2})?"
_UNITS = r"pounds?|quid|gbp|dollars?|bucks|euros?|pence|cents?|£|p\b"
_PENCE = {"p", "pence", "cent", "cents"}


def _price(tag: str) -> str:
    return rf"(?P<{tag}c>{_CUR})?(?P<{tag}n>{_NUM})(?!\d)(?P<{tag}u>\s*(?:{_UNITS}))?"


_BETWEEN = re.compile(rf"\bbetween\s+{_price('a')}\s*(?:and|to|-)\s*{_price('b')}")
_RANGE = re.compile(rf"{_price('a')}\s*(?:-|to)\s*{_price('b')}(?=\s|$|[,.!?])")
_MAX = re.compile(
    rf"(?:\bunder|\bbelow|\bless than|\bcheaper than|\bno more than|\bnot more than|\bup to|\bmax(?:imum)?|"
    rf"\bat most|\bwithin|<=?)\s*(?:a\s+)?{_price('a')}"
)
_MAX_AFTER = re.compile(rf"{_price('a')}\s*(?:or less|or under|or cheaper|max\b|tops\b)")
_MIN = re.compile(
    rf"(?:\bover|\babove|\bmore than|\bat least|\bmin(?:imum)?|\bpricier than|>=?)\s*{_price('a')}"
)
# an age is not a price: "5 to 10 year olds", "a 3-year-old", "ages 3-5", "aged 4 to 6", "kids 8-12", "kids under 5"
_AGE_UNIT = r"(?:years?|yrs?|y/o|yo)\b(?:[\s-]*olds?\b)?"
_AGE = re.compile(
    rf"\b\d+(?:\s*(?:-|–|to)\s*\d+)?\s*\+?\s*-?\s*{_AGE_UNIT}|"
    r"\b(?:ages?|aged)\s+\d+(?:\s*(?:-|–|to)\s*\d+)?(?:\s*\+)?|"
    r"\b(?:kids?|children|child|boys?|girls?|toddlers?|teens?|teenagers?|babies|baby)\s+(?:aged?\s+|ages\s+)?"
    r"(?:(?:under|over|below|above)\s+)?\d+(?:\s*(?:-|–|to)\s*\d+)?(?:\s*\+)?"
)
_PRICE_NEXT = re.compile(rf"\s*(?:[.,]\d|{_UNITS}|{_CUR})")  # "kids under 5 pounds" is a price after all
_CHEAPER = re.compile(r"\b(cheaper|less expensive|lower price|more affordable|budget|inexpensive|too expensive|too pricey)\b")
_PRICIER = re.compile(r"\b(more expensive|pricier|fancier|premium|higher end|more upmarket|too cheap)\b")

_ORDINALS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4,
             "fifth": 5, "5th": 5, "last": -1}
_REF_WORD = re.compile(r"\b(first|1st|second|2nd|third|3rd|fourth|4th|fifth|5th|last)\b(?:\s+(?:one|item|product|option))?")
_REF_NUM = re.compile(r"(?:#\s*|\b(?:number|no\.?|item|option|product)\s*)([1-9])\b")

_WHY = re.compile(r"\b(why|how come|explain|reason)\b")
_MORE_LIKE = re.compile(r"\b(more like|similar to|something like|things like|others like|like that|like this|like the|like #)")
_DIFFERENT = re.compile(r"\b(something (?:else|different)|different|other (?:things|stuff|options|ideas|products)|"
                        r"anything else|show me (?:more|others)|more options|not these|none of (?:these|those))\b")
_RESET = re.compile(r"\b(start over|reset|clear (?:filters|everything|all)|forget (?:it|that|everything))\b")
_GREETING = re.compile(r"^\s*(hi|hello|hey|hiya|good (?:morning|afternoon|evening)|thanks|thank you|cheers)\b[\s!.]*$")
_HELP = re.compile(r"\b(help|what can you do|how does this work|how do i)\b")
_RECOMMEND = re.compile(r"\b(buy next|what should i (?:buy|get)|recommend|suggest|suggestions?|ideas?|what else|"
                        r"anything for me|what do you have|show me something|surprise me)\b")

# steering between reorders and new products ("my usual" asks for past products, "only new things" for none)
_RESTOCK = re.compile(r"\b(?:(?:just |only )?(?:my|the) usual(?: stuff| things| order)?|restock(?:ing)?|re-?order(?:ing)?|"
                      r"buy (?:it |them )?again|order (?:it |them )?again|running low|run(?:ning)? out|top up|"
                      r"what (?:do )?i (?:usually|always|normally) (?:buy|get|order))\b")
_NEW_ONLY = re.compile(r"\b(?:(?:only|just|something|anything|some|show me) new(?: things| stuff| products| items| ones)?|"
                       r"new things|new to me|(?:something|anything|things|stuff|products?|items?)? ?(?:that )?i (?:have not|haven'?t|"
                       r"never|did not|didn'?t) (?:bought|buy|ordered|order|had|tried)(?: before| yet)?|never (?:bought|ordered) before|"
                       r"not (?:bought|ordered) before|nothing i(?: have|'ve)? (?:bought|ordered|had)(?: before)?)\b")

_NEGATED = re.compile(r"(?:\bnot|\bno|n't|\bdont|\bdoesnt|\bdidnt|\bnever|\bwithout|\bnothing from|\bstop)\W+(?:\w+\W+){0,2}$")

_STOP = {"a", "an", "the", "some", "any", "more", "of", "for", "me", "please", "something", "things", "stuff",
         "items", "products", "product", "item", "ones", "one", "thing", "show", "just", "only", "anything",
         "with", "i", "want", "like", "really", "so", "that", "this", "these", "those", "it", "to", "do", "what",
         "my", "on", "have", "again", "before", "now"}
_KW_END = r"(?=$|[,.!?;:]|\s+(?:but|please|under|below|over|above|less|more|cheaper|at|for|with|between)\b)"
_EXCLUDE = re.compile(r"\b(?:(?:anything|everything|all)\s+(?:but|except(?: for)?|other than|apart from|besides|bar)|"
                      r"other than|apart from|not interested in|don'?t (?:want|like|show(?: me)?)|nothing with|no more|"
                      r"without|except|excluding|exclude|hate|avoid|skip|no|not)\s+(?:any\s+)?([a-z][a-z' -]*?)" + _KW_END)
_INCLUDE = re.compile(r"\b(?:only|just|nothing but|strictly)\s+(?:show\s+(?:me\s+)?)?(?:the\s+)?([a-z][a-z' -]*?)" + _KW_END)
_ASK_FOR = re.compile(r"\b(?:recommend|suggest|find|show)\s+(?:me\s+|us\s+)?(?:a|an|some|any)\s+(.+)")
_NEED = re.compile(r"\b(?:gifts?|presents?|something|anything)\s+for\s+(.+)|"
                   r"\b(?:i need|i'?m looking for|looking for|i want|do you have|have you got|i'?d like|find me|"
                   r"show me|got any|searching for)\s+(.+)")


# intents answered without looking for products (so without an LLM): the chat and the LLM writer both read this
NO_PRODUCT_KINDS = frozenset({"greeting", "help", "empty", "reset"})


@dataclass
class Intent:
    """What one message asks for. ``ref`` is a 0-based index into the last shown list (-1 = last)."""

    kind: str = "recommend"  # recommend | need | more_like | explain | different | reset | greeting | help | empty
    max_price: float | None = None
    min_price: float | None = None
    cheaper: bool = False
    pricier: bool = False
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    ref: int | None = None
    query: str | None = None
    reorders: str | None = None  # "only": their past products ("my usual") | "off": only new ones | None: as before


def _num(text: str) -> float:
    """A number as typed: 1,299.99, 1.299,99, 1,000, 12,50, 3.5 (one or two digits after the last separator are
    decimals; three are a thousands group)."""
    whole, frac = text, ""
    if m := re.search(r"[.,](\d{1,2})$", text):
        whole, frac = text[: m.start()], m.group(1)
    return float(re.sub(r"[.,]", "", whole) + ("." + frac if frac else ""))


def _value(m: re.Match[str], tag: str, pence: bool = False) -> float:
    """The price a match's ``tag`` group holds, in pounds (50p: 0.5, but £5 p&p is £5); ``pence``: a bare number
    is pence too."""
    unit, sign = (m.group(tag + "u") or "").strip(), m.group(tag + "c")
    value = _num(m.group(tag + "n"))
    return value / 100 if not sign and (unit in _PENCE or (pence and not unit)) else value


def _bounds(m: re.Match[str]) -> tuple[float, float]:
    """A range's two prices, low first; "20 to 80p" is in pence at both ends."""
    hi_pence = (m.group("bu") or "").strip() in _PENCE
    return tuple(sorted((_value(m, "a", pence=hi_pence), _value(m, "b"))))


def _keywords(text: str) -> list[str]:
    out = []
    for part in re.split(r"\s*(?:,|\bor\b|\band\b|/)\s*", text):
        words = [w for w in part.strip(" '-").split() if w not in _STOP]
        if words:
            out.append(" ".join(words))
    return out


def _clean_need(text: str) -> str:
    """What a need asks for, without the refinements said with it ("something cheaper", "mugs, no bags",
    "candles but pricier"): those are filters, and words such as "cheaper" or "bags" would mislead the search."""
    need = _PRICIER.sub(" ", _CHEAPER.sub(" ", _EXCLUDE.sub(" ", text)))
    need = " ".join(need.split()).strip(" ?!.,;:")
    need = re.sub(r"(?:\s+|^)(?:but|and|or|please|though)$", "", need).strip(" ?!.,;:")
    return re.sub(r"^(?:a|an|the|some|my)\s+", "", need)


def parse_message(message: str) -> Intent:
    """Turn one chat message into an :class:`Intent` (no model, no state: pure and deterministic)."""
    text = " ".join(re.sub(r"[\ue000-\uf8ff]", " ", (message or "").lower().replace("’", "'")).split())  # private use: the ages' marks
    intent = Intent()
    if not text:
        intent.kind = "empty"
        return intent
    if _GREETING.match(text):
        intent.kind = "greeting"
        return intent

    # ages are set aside (a private-use character each) while prices are read, then put back for the need
    ages = [m for m in _AGE.finditer(text) if not _PRICE_NEXT.match(text, m.end())]
    rest = text
    for i, m in reversed(list(enumerate(ages))):
        rest = rest[: m.start()] + chr(0xE000 + i) + rest[m.end():]
    if m := _BETWEEN.search(rest) or _RANGE.search(rest):
        intent.min_price, intent.max_price = _bounds(m)
        rest = rest.replace(m.group(0), " ")
    if m := _MAX.search(rest) or _MAX_AFTER.search(rest):
        intent.max_price = _value(m, "a")
        rest = rest.replace(m.group(0), " ")
    if m := _MIN.search(rest):
        intent.min_price = _value(m, "a")
        rest = rest.replace(m.group(0), " ")
    # "my usual" / "only new things": a steer, not a keyword ("new things") or an exclusion ("not bought before");
    # "not my usual" steers away. What else the message says ("restock candles", "new mugs") is read as usual.
    if found := list(_NEW_ONLY.finditer(rest)):
        intent.reorders = "off"
    elif found := list(_RESTOCK.finditer(rest)):
        intent.reorders = "only"
        if negation := _NEGATED.search(rest[: found[0].start()]):  # "not my usual", "I don't want my usual"
            intent.reorders = "off"
            rest = rest[: negation.start()] + " " + rest[negation.end():]
            found = list(_RESTOCK.finditer(rest))
    for m in reversed(found):
        rest = rest[: m.start()] + " " + rest[m.end():]
    masked = rest

    def unmask(text: str) -> str:
        for i, m in enumerate(ages):
            text = text.replace(chr(0xE000 + i), m.group(0))
        return text

    rest = unmask(masked)
    if intent.max_price is None and _CHEAPER.search(rest):
        intent.cheaper = True
    if intent.min_price is None and _PRICIER.search(rest):
        intent.pricier = True

    if m := _REF_NUM.search(rest):
        intent.ref = int(m.group(1)) - 1
    elif m := _REF_WORD.search(rest):
        n = _ORDINALS[m.group(1)]
        intent.ref = -1 if n == -1 else n - 1

    for m in _EXCLUDE.finditer(rest):
        intent.exclude += _keywords(m.group(1))
    for m in _INCLUDE.finditer(rest):
        intent.include += _keywords(m.group(1))
    # a number, a thanks or a shown item ("not the first one") is no keyword
    intent.exclude = [k for k in dict.fromkeys(intent.exclude)
                      if not (re.fullmatch(r"[\d.]+|thanks?", k) or _REF_WORD.fullmatch(k))]
    intent.include = [k for k in dict.fromkeys(intent.include) if k not in intent.exclude and not _REF_WORD.fullmatch(k)]

    if _RESET.search(rest):
        intent.kind = "reset"
    elif _WHY.search(rest):
        intent.kind = "explain"
    elif _MORE_LIKE.search(rest) and intent.ref is not None:
        intent.kind = "more_like"
    elif _DIFFERENT.search(rest):
        intent.kind = "different"
    elif (m := _ASK_FOR.search(rest)) and _keywords(_clean_need(m.group(1))):  # "recommend me a book"
        intent.kind, intent.query = "need", _clean_need(m.group(1))
    elif (m := _NEED.search(rest)) and not _RECOMMEND.search(rest):
        need = _clean_need(m.group(1) or m.group(2) or "")
        if _keywords(need):  # "I need something cheaper" asks for no new thing: a refinement
            intent.kind, intent.query = "need", need
    elif _HELP.search(rest) and not _RECOMMEND.search(rest):
        intent.kind = "help"
    elif not (_RECOMMEND.search(rest) or intent.include or intent.exclude or intent.cheaper or intent.pricier
              or intent.ref is not None):
        words = _keywords(re.sub(r"[^a-z' \ue000-\ue0ff-]", " ", masked))  # an age keeps its digits
        if words:  # a bare need such as "candles", "tea lover gift", "napkins under £1" or "toys for ages 3-5"
            intent.kind, intent.query = "need", unmask(" ".join(words))
    if intent.kind == "recommend" and intent.ref is not None and not _RECOMMEND.search(rest):
        intent.kind = "more_like"  # "#3" or "the second one" alone: more like it
    return intent
