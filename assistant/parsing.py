"""Deterministic message parsing: prices, comparatives, references to shown items, keywords, needs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

NUM = r"(\d+(?:[.,]\d{1,2})?)"
CUR = r"(?:£|\$|€|gbp\s*|usd\s*|eur\s*)?"
UNIT = r"(?:\s*(?:pounds?|quid|gbp|dollars?|bucks|euros?|£|p\b))?"

_BETWEEN = re.compile(rf"\bbetween\s+{CUR}{NUM}{UNIT}\s*(?:and|to|-)\s*{CUR}{NUM}{UNIT}")
_RANGE = re.compile(rf"{CUR}{NUM}{UNIT}\s*(?:-|to)\s*{CUR}{NUM}{UNIT}(?=\s|$|[,.!?])")
_MAX = re.compile(
    rf"(?:\bunder|\bbelow|\bless than|\bcheaper than|\bno more than|\bnot more than|\bup to|\bmax(?:imum)?|"
    rf"\bat most|\bwithin|<=?)\s*(?:a\s+)?{CUR}{NUM}{UNIT}"
)
_MAX_AFTER = re.compile(rf"{CUR}{NUM}{UNIT}\s*(?:or less|or under|or cheaper|max\b|tops\b)")
_MIN = re.compile(
    rf"(?:\bover|\babove|\bmore than|\bat least|\bmin(?:imum)?|\bpricier than|>=?)\s*{CUR}{NUM}{UNIT}"
)
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

_STOP = {"a", "an", "the", "some", "any", "more", "of", "for", "me", "please", "something", "things", "stuff",
         "items", "products", "product", "item", "ones", "one", "thing", "show", "just", "only", "anything",
         "with", "i", "want", "like", "really", "so", "that", "this", "these", "those", "it"}
_KW_END = r"(?=$|[,.!?;:]|\s+(?:but|please|under|below|over|above|less|more|cheaper|at|for|with|between)\b)"
_EXCLUDE = re.compile(r"\b(?:not interested in|don'?t (?:want|like|show(?: me)?)|nothing with|no more|without|except|"
                      r"excluding|exclude|hate|avoid|skip|no|not)\s+(?:any\s+)?([a-z][a-z' -]*?)" + _KW_END)
_INCLUDE = re.compile(r"\b(?:only|just|nothing but|strictly)\s+(?:show\s+(?:me\s+)?)?(?:the\s+)?([a-z][a-z' -]*?)" + _KW_END)
_ASK_FOR = re.compile(r"\b(?:recommend|suggest|find|show)\s+(?:me\s+|us\s+)?(?:a|an|some|any)\s+(.+)")
_NEED = re.compile(r"\b(?:gifts?|presents?|something|anything)\s+for\s+(.+)|"
                   r"\b(?:i need|i'?m looking for|looking for|i want|do you have|have you got|i'?d like|find me|"
                   r"show me|got any|searching for)\s+(.+)")


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


def _num(text: str) -> float:
    return float(text.replace(",", "."))


def _keywords(text: str) -> list[str]:
    out = []
    for part in re.split(r"\s*(?:,|\bor\b|\band\b|/)\s*", text):
        words = [w for w in part.strip(" '-").split() if w not in _STOP]
        if words:
            out.append(" ".join(words))
    return out


def _clean_need(text: str) -> str:
    need = text.strip(" ?!.")
    return re.sub(r"^(?:a|an|the|some|my)\s+", "", need)


def parse_message(message: str) -> Intent:
    """Turn one chat message into an :class:`Intent` (no model, no state: pure and deterministic)."""
    text = " ".join((message or "").lower().replace("’", "'").split())
    intent = Intent()
    if not text:
        intent.kind = "empty"
        return intent
    if _GREETING.match(text):
        intent.kind = "greeting"
        return intent

    rest = text
    if m := _BETWEEN.search(rest) or _RANGE.search(rest):
        lo, hi = sorted((_num(m.group(1)), _num(m.group(2))))
        intent.min_price, intent.max_price = lo, hi
        rest = rest.replace(m.group(0), " ")
    if m := _MAX.search(rest) or _MAX_AFTER.search(rest):
        intent.max_price = _num(m.group(1))
        rest = rest.replace(m.group(0), " ")
    if m := _MIN.search(rest):
        intent.min_price = _num(m.group(1))
        rest = rest.replace(m.group(0), " ")
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
    intent.exclude = [k for k in dict.fromkeys(intent.exclude) if not re.fullmatch(r"[\d.]+|thanks?", k)]
    intent.include = [k for k in dict.fromkeys(intent.include) if k not in intent.exclude]

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
        need = (m.group(1) or m.group(2) or "").strip(" ?!.")
        need = re.sub(r"^(?:a|an|the|some|my)\s+", "", need)
        if _keywords(need):
            intent.kind, intent.query = "need", need
    elif _HELP.search(rest) and not _RECOMMEND.search(rest):
        intent.kind = "help"
    elif not (_RECOMMEND.search(rest) or intent.include or intent.exclude or intent.cheaper or intent.pricier
              or intent.ref is not None):
        words = _keywords(re.sub(r"[^a-z' -]", " ", rest))
        if words:  # a bare need such as "candles", "tea lover gift" or "napkins under £1"
            intent.kind, intent.query = "need", " ".join(words)
    if intent.kind == "recommend" and intent.ref is not None and not _RECOMMEND.search(rest):
        intent.kind = "more_like"  # "#3" or "the second one" alone: more like it
    return intent
