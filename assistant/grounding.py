"""Grounding: every product the LLM's text names must be one of the candidates, checked per sentence
before the shopper sees it (pure logic, no model, no network).

The model is told to cite ids in brackets. A segment (a sentence or a line) is checked as a whole:
- links, images and bare URLs are removed (the model's text links nowhere; :mod:`.safety` screens the
  whole reply again at the output boundary, where markup is escaped);
- a bracketed id that is not a candidate is removed (a candidate's title in brackets becomes its id);
- a **bold** name is replaced by the candidate title it matches, or by the title of the one candidate
  the segment cites; a bold name that matches no candidate drops the segment;
- a catalog title that is not a candidate drops the segment: singular or plural ("White Pillar
  Candles"), split over a line break (the line is held until the next one shows it is not), or a
  one-word title written as a name (capitalised, bold or quoted);
- each price is checked against the product mention nearest before it (else after it; else the product
  the previous sentence named), so "[A] costs £0.01 and [B] costs £0.02." fixes both;
- a segment that repeats the system prompt (6 words in a row, or the prompt's section names such as
  CANDIDATES) or uses a ``forbidden`` word, in any
  spelling ("I-Phone", "i phone", "iphones" for "iphone"), is dropped. The prompt-injection guard lives here
  too: :func:`forbidden_words` reads a shopper's message and gives the words a reply to it must not use.
Every change is counted; :attr:`Grounder.valid` tells whether any candidate survived.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from index_builder.core.search import word_forms

_SEGMENT_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=\S)|\n")
_BRACKET = re.compile(r"\[([^\[\]\n]{1,60})\]")
_BOLD = re.compile(r"\*\*([^*\n]{1,200})\*\*")
_PRICE = re.compile(r"(?:[£$€¥₹]\s?\d[\d,]*(?:\.\d{1,2})?|\b\d[\d,]*(?:\.\d{1,2})?\s?(?:GBP|USD|EUR|pounds?|dollars?|euros?)\b)",
                    re.IGNORECASE)
_WORDS = re.compile(r"[a-z0-9]+")
# the prompt's own section names, in its capitals: a reply that uses them is talking about its instructions
_PROMPT_MARKERS = re.compile(r"\b(?:CANDIDATES|CONSTRAINTS|RECENT ITEMS|LOOKING FOR|SHOPPER:|NOTES \()")
_CLAUSE = re.compile(r"[,;]|\s(?:and|or|but|while|whereas)\s|\s[-–—]\s")  # where a price stops belonging to a mention
# a message that tries to talk the model out of its instructions: what it asks for beyond the catalog is forbidden
_INJECTION = re.compile(r"\b(ignore|disregard|override|forget)\b.{0,40}\b(rules?|instructions?|prompt|above)\b|"
                        r"system prompt|your (rules|instructions)|pretend|you are now|jailbreak|developer mode",
                        re.IGNORECASE)


def norm(text: str) -> str:
    return " ".join(_WORDS.findall(text.lower()))


def singular(word: str) -> str:
    """A regular English plural's singular (candles -> candle, boxes -> box, berries -> berry); short words stay."""
    if len(word) <= 3 or word.isdigit() or word.endswith("ss"):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("us", "is")):
        return word[:-1]
    return word


def sing(text: str) -> str:
    """:func:`norm` with every word singular: how titles and text are compared."""
    return " ".join(singular(w) for w in _WORDS.findall(text.lower()))


def squash(text: str) -> str:
    """Letters and digits only: "I-Phone 15" and "iphone15" read alike."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _tokens(text: str) -> set[str]:
    return set(_WORDS.findall(text.lower()))


class CatalogTitles(dict):
    """Normalised title -> product id for a whole catalog, with what the grounder scans indexed once per
    bundle (not per reply): titles of 2+ words by their first word, and the catalog's vocabulary."""

    def __init__(self, titles: dict[str, str]) -> None:
        super().__init__(titles)
        self.by_first_word: dict[str, list[tuple[str, str]]] = {}  # singular first word -> (singular title, id)
        self.single_words: dict[str, str] = {}  # one-word titles (4+ letters), singular -> id
        for t, pid in self.items():
            st = sing(t)
            words = st.split()
            if len(words) >= 2:
                self.by_first_word.setdefault(words[0], []).append((st, pid))
            elif words and len(words[0]) >= 4 and not words[0].isdigit():
                self.single_words[words[0]] = pid
        self.vocab = {w for t in self for w in t.split()} | {singular(w) for t in self for w in t.split()}


def as_catalog(titles: dict[str, str]) -> CatalogTitles:
    return titles if isinstance(titles, CatalogTitles) else CatalogTitles(titles)


def forbidden_words(message: str, catalog_titles: dict[str, str]) -> set[str]:
    """The words a reply must not use for this message: when it reads as a prompt injection, the
    :func:`off_catalog_words` it asks for (the :class:`Grounder`'s ``forbidden``); otherwise none."""
    return off_catalog_words(message, catalog_titles) if _INJECTION.search(message) else set()


def off_catalog_words(message: str, catalog_titles: dict[str, str]) -> set[str]:
    """Words of the shopper's message that appear in no catalog title (what an injection asks for), with
    the words a short piece or a number is glued to ("I-Phone 15" -> "iphone", "iphone15")."""
    vocab = as_catalog(catalog_titles).vocab
    words = norm(message).split()
    out = {w for w in words if len(w) >= 4 and w not in vocab and not w.isdigit()}
    for n in (2, 3):
        for i in range(len(words) - n + 1):
            part = words[i:i + n]
            if any(len(w) <= 2 or w.isdigit() for w in part) and not all(w.isdigit() for w in part):
                joined = "".join(part)
                if len(joined) >= 4 and joined not in vocab:
                    out.add(joined)
    return out - COMMON


COMMON = set(["ignore", "your", "rules", "instructions", "previous", "above", "system", "prompt", "print", "show", "tell", "reveal", "repeat", "please", "recommend", "suggest", "instead", "only", "just", "what", "should", "next", "want", "need", "from", "with", "that", "this", "there", "their", "these", "those", "about", "would", "could", "like", "give", "list", "products", "product", "anything", "something", "everything", "nothing", "write", "reply", "answer", "pretend", "jailbreak", "developer", "mode", "forget", "disregard", "override", "mind", "every", "other", "shop", "store", "catalog", "items", "item"])


@dataclass
class Candidate:
    product_id: str
    title: str  # as it should read (readable case)
    price_text: str
    aliases: tuple[str, ...] = ()  # other spellings (the raw title)


@dataclass
class Grounder:
    """Feed model text as it streams; take back only checked segments.

    ``catalog_titles``: normalised title -> product id for the whole catalog (to spot real products that
    are not candidates); ``secret``: text that must never be repeated (the system prompt).
    """

    candidates: Sequence[Candidate]
    catalog_titles: dict[str, str] = field(default_factory=dict)
    secret: str = ""
    forbidden: set[str] = field(default_factory=set)  # words that must not appear (what an injection asked for)
    context_titles: Iterable[str] = ()  # products the reasons or the shopper's history name: may be mentioned
    counts: Counter = field(default_factory=Counter)
    cited: list[str] = field(default_factory=list)
    _buffer: str = ""

    def __post_init__(self) -> None:
        self._by_id = {c.product_id.lower(): c for c in self.candidates}
        self._by_title = {}
        for c in self.candidates:
            for t in (c.title, *c.aliases):
                self._by_title[norm(t)] = c
        self._candidate_ids = {c.product_id for c in self.candidates}
        self._allowed = {sing(t) for t in self.context_titles}
        self._mentionable = [f" {sing(t)} " for t in set(self._by_title)] + [f" {t} " for t in self._allowed]
        self._mentionable_words = {w for m in self._mentionable for w in m.split()}
        # where a candidate is named in plain text: its title's words, any separators, singular or plural
        self._title_res = [(re.compile(r"\b" + r"[\W_]+".join(
            "(?:" + "|".join(map(re.escape, word_forms(w))) + ")" if i == len(t.split()) - 1 else re.escape(w)
            for i, w in enumerate(t.split())) + r"\b", re.IGNORECASE), c) for t, c in self._by_title.items() if t]
        self._forbidden_forms = {singular(squash(w)) for w in self.forbidden if len(squash(w)) >= 4}
        self._held: tuple[str, str] | None = None  # (raw, checked) of a line that may continue on the next
        self._last: Candidate | None = None  # the product the latest segment named (for a price after it)
        words = norm(self.secret).split()
        self._shingles = {" ".join(words[i:i + 6]) for i in range(max(0, len(words) - 5))}
        self._catalog = as_catalog(self.catalog_titles)

    @property
    def valid(self) -> bool:
        return bool(self.cited)

    # -- streaming ----------------------------------------------------------------------------------
    def feed(self, text: str) -> Iterator[str]:
        """Add streamed text; yield the segments that are complete and checked."""
        self._buffer += text
        while True:
            m = _SEGMENT_END.search(self._buffer)
            if not m:
                return
            seg, self._buffer = self._buffer[: m.end()], self._buffer[m.end():]
            yield from self._segment(seg)

    def finish(self) -> Iterator[str]:
        seg, self._buffer = self._buffer, ""
        if seg.strip():
            yield from self._segment(seg)
        if self._held is not None:
            held, self._held = self._held[1], None
            if held:
                yield held

    def _segment(self, seg: str) -> Iterator[str]:
        """Check one segment; a line that stops mid-sentence is held until the next shows whether a catalog
        title runs across the line break."""
        if self._held is not None:
            raw, checked = self._held
            self._held = None
            joined = raw.rstrip() + " " + seg
            if self._names_other_product(joined, []) and not self._names_other_product(seg, []):
                self.counts["non_candidate_name"] += 1
                return  # the title spans the break: neither line is shown
            if checked:
                yield checked
        out = self.check(seg)
        if seg.endswith("\n") and not re.search(r"[.!?:;)]\s*$", seg.rstrip("\n")) and seg.strip():
            self._held = (seg, out)
            return
        if out:
            yield out

    def ground_all(self, chunks: Iterable[str]) -> str:
        parts = [s for c in chunks for s in self.feed(c)]
        return "".join(parts + list(self.finish()))

    # -- one segment --------------------------------------------------------------------------------
    def check(self, seg: str) -> str:
        """The segment as the shopper may see it ("" when it must be dropped)."""
        if (self._shingles and self._leaks(seg)) or (self.secret and _PROMPT_MARKERS.search(seg)):
            self.counts["system_prompt_leak"] += 1
            return ""
        if self._forbidden_forms and self._uses_forbidden(seg):
            self.counts["off_catalog_request"] += 1
            return ""
        seg, links = _strip_links(seg)
        if links:
            self.counts["link_removed"] += links
        cited: list[Candidate] = []

        def bracket(m: re.Match[str]) -> str:
            inner = m.group(1).strip()
            c = self._by_id.get(inner.lower()) or self._by_title.get(norm(inner))
            if c is None:
                if _looks_like_id(inner):
                    self.counts["unknown_id"] += 1
                    return ""
                return m.group(0)
            if inner.lower() != c.product_id.lower():
                self.counts["title_as_id"] += 1
            cited.append(c)
            return f"[{c.product_id}]"

        seg = _BRACKET.sub(bracket, seg)
        bolds = list(_BOLD.finditer(seg))
        if bolds:
            def bold(m: re.Match[str]) -> str:
                name = m.group(1).strip()
                c = self._match_title(name)
                if c is None and len(set(map(id, cited))) == 1:
                    c = cited[0]
                    self.counts["name_replaced"] += 1
                if c is None:
                    raise _Drop("invented_name")
                if c not in cited:
                    cited.append(c)
                return f"**{c.title}**"
            try:
                seg = _BOLD.sub(bold, seg)
            except _Drop as d:
                self.counts[d.reason] += 1
                return ""
        if self._names_other_product(seg, cited):
            self.counts["non_candidate_name"] += 1
            return ""
        seg = self._fix_prices(seg)
        for c in cited:
            if c.product_id not in self.cited:
                self.cited.append(c.product_id)
        return seg

    def _mentions(self, seg: str) -> list[tuple[int, Candidate]]:
        """(position, candidate) of every candidate the segment names: by id in brackets, or by title."""
        found = [(m.start(), self._by_id[m.group(1).lower()]) for m in _BRACKET.finditer(seg)
                 if m.group(1).lower() in self._by_id]
        for rx, c in self._title_res:
            found += [(m.start(), c) for m in rx.finditer(seg)]
        return sorted(found, key=lambda x: x[0])

    def _fix_prices(self, seg: str) -> str:
        """Each price becomes the price of the product named nearest before it (else after it, else the one
        the latest segment named); a price with no product to belong to is left alone."""
        mentions = self._mentions(seg)
        bounds = [0, *[m.end() for m in _CLAUSE.finditer(seg)], len(seg) + 1]

        def price(m: re.Match[str]) -> str:
            lo = max(b for b in bounds if b <= m.start())
            hi = min(b for b in bounds if b > m.start())
            here = [(at, c) for at, c in mentions if lo <= at < hi]  # the price's own clause first, then the segment
            choices = ([c for at, c in here if at < m.start()][-1:] + [c for at, c in here if at > m.start()][:1]
                       + [c for at, c in mentions if at < m.start()][-1:] + [c for at, c in mentions if at > m.start()][:1]
                       + [self._last])
            c = next((x for x in choices if x is not None), None)
            if c is None:
                return m.group(0)
            if norm(m.group(0)) != norm(c.price_text):
                self.counts["price_fixed"] += 1
            return c.price_text

        seg = _PRICE.sub(price, seg)
        if mentions:
            self._last = mentions[-1][1]
        return seg

    def _uses_forbidden(self, seg: str) -> bool:
        """A forbidden word in any spelling: each word, and each run of two or three words squashed together
        ("I-Phone 15" -> "iphone", "iphone15"), singular."""
        words = _WORDS.findall(seg.lower())
        forms = {singular(w) for w in words}
        for n in (2, 3):
            forms |= {singular("".join(words[i:i + n])) for i in range(len(words) - n + 1)}
        return bool(forms & self._forbidden_forms)

    def _match_title(self, name: str) -> Candidate | None:
        key = norm(name)
        if key in self._by_title:
            return self._by_title[key]
        words = _tokens(name)
        best, best_j = None, 0.0
        for t, c in self._by_title.items():
            tw = set(t.split())
            j = len(words & tw) / max(1, len(words | tw))
            if j > best_j:
                best, best_j = c, j
        return best if best_j >= 0.6 else None

    def _names_other_product(self, seg: str, cited: list[Candidate]) -> bool:
        text = sing(seg)
        if not text:
            return False
        words = text.split()
        padded = f" {text} "
        for w in set(words):
            for t, pid in self._catalog.by_first_word.get(w, ()):
                if pid in self._candidate_ids or t in self._allowed:
                    continue
                if f" {t} " in padded:
                    # part of a title that may be named ("heart t light holder" inside "white hanging heart
                    # t light holder") is fine
                    if any(f" {t} " in m for m in self._mentionable):
                        continue
                    return True
        singles = self._catalog.single_words
        if singles:  # a one-word title counts when written as a name: capitalised mid-sentence, bold or quoted
            for m in re.finditer(r"(?<![.!?:\n]\s)(?<!^)\b([A-Z][A-Za-z]{3,})\b|\*\*([A-Za-z]{4,})\*\*|[\"“']([A-Za-z]{4,})[\"”']",
                                 seg.strip()):
                w = singular((m.group(1) or m.group(2) or m.group(3)).lower())
                pid = singles.get(w)
                if pid is not None and pid not in self._candidate_ids and w not in self._mentionable_words:
                    return True
        return False

    def _leaks(self, seg: str) -> bool:
        words = norm(seg).split()
        return any(" ".join(words[i:i + 6]) in self._shingles for i in range(max(0, len(words) - 5)))


def _strip_links(seg: str) -> tuple[str, int]:
    """The segment without Markdown links or images (their text stays) and without bare URLs; how many."""
    from assistant.safety import _ANGLE_LINK, _IMAGE, _LINK, _REFERENCE, _URL

    n = 0

    def count(repl):
        def sub(m: re.Match[str]) -> str:
            nonlocal n
            n += 1
            return repl(m)
        return sub

    seg = _IMAGE.sub(count(lambda m: ""), seg)
    seg = _LINK.sub(count(lambda m: m.group(1)), seg)
    seg = _REFERENCE.sub(count(lambda m: ""), seg)
    seg = _ANGLE_LINK.sub(count(lambda m: ""), seg)
    seg = _URL.sub(count(lambda m: ""), seg)
    return (re.sub(r"[ \t]{2,}", " ", seg) if n else seg), n


class _Drop(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _looks_like_id(text: str) -> bool:
    """Short tokens with a digit ("85123A", "id 42", "P-1002"), as models write product ids."""
    t = text.strip().lower().removeprefix("id").strip(" :#")
    return bool(re.fullmatch(r"[a-z0-9_\-./]{1,24}", t)) and any(ch.isdigit() for ch in t)


def candidates_from(products: Sequence[dict[str, Any]], money: Callable[[float | None], str]) -> list[Candidate]:
    """Candidates from the writer's product dicts (``product_id``, ``title``, ``price``)."""
    from index_builder.core.text import readable_title

    return [Candidate(product_id=p["product_id"], title=readable_title(p["title"]), price_text=money(p["price"]),
                      aliases=(p["title"],)) for p in products]


def context_titles(products: Sequence[dict[str, Any]], recent: Sequence[str] = ()) -> list[str]:
    """Titles a reply may mention without recommending them: what the reasons refer to, and recent items."""
    out = list(recent)
    for p in products:
        for r in list(p.get("reasons", ())) + list(p.get("extra", ())):
            out += [r[k] for k in ("to", "with") if r.get(k)]
    return out


VIOLATIONS = ("unknown_id", "invented_name", "non_candidate_name", "system_prompt_leak", "off_catalog_request",
              "link_removed")


def audit(text: str, products: Sequence[dict[str, Any]], catalog_titles: dict[str, str], *,
          recent: Sequence[str] = (), secret: str = "", money: Callable[[float | None], str] = str) -> dict[str, int]:
    """How many non-candidate products (and system-prompt repeats) a finished text shows: the grounder's
    own checks, counted instead of applied. 0 everywhere means the text is grounded."""
    g = Grounder(candidates_from(products, money), catalog_titles, secret=secret,
                 context_titles=context_titles(products, recent))
    g.ground_all([text])
    return {k: g.counts[k] for k in VIOLATIONS if g.counts[k]}
