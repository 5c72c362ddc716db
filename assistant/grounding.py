"""Grounding: every product the LLM's text names must be one of the candidates, checked per sentence
before the shopper sees it (pure logic, no model, no network).

The model is told to cite ids in brackets. A segment (a sentence or a line) is checked as a whole:
- a bracketed id that is not a candidate is removed (a candidate's title in brackets becomes its id);
- a **bold** name is replaced by the candidate title it matches, or by the title of the one candidate
  the segment cites; a bold name that matches no candidate drops the segment;
- a catalog title that is not a candidate drops the segment;
- a price next to a cited candidate is rewritten to that candidate's price;
- a segment that repeats the system prompt (6 words in a row) or uses a ``forbidden`` word is dropped;
- ``<`` and ``>`` are escaped, so model text cannot inject markup.
Every change is counted; :attr:`Grounder.valid` tells whether any candidate survived.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

_SEGMENT_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=\S)|\n")
_BRACKET = re.compile(r"\[([^\[\]\n]{1,60})\]")
_BOLD = re.compile(r"\*\*([^*\n]{1,200})\*\*")
_PRICE = re.compile(r"(?:[£$€¥₹]\s?\d[\d,]*(?:\.\d{1,2})?|\b\d[\d,]*(?:\.\d{1,2})?\s?(?:GBP|USD|EUR|pounds?|dollars?|euros?)\b)",
                    re.IGNORECASE)
_WORDS = re.compile(r"[a-z0-9]+")


def norm(text: str) -> str:
    return " ".join(_WORDS.findall(text.lower()))


def _tokens(text: str) -> set[str]:
    return set(_WORDS.findall(text.lower()))


class CatalogTitles(dict):
    """Normalised title -> product id for a whole catalog, with what the grounder scans indexed once per
    bundle (not per reply): titles of 2+ words by their first word, and the catalog's vocabulary."""

    def __init__(self, titles: dict[str, str]) -> None:
        super().__init__(titles)
        self.by_first_word: dict[str, list[tuple[str, str]]] = {}
        for t, pid in self.items():
            if len(t.split()) >= 2:
                self.by_first_word.setdefault(t.split()[0], []).append((t, pid))
        self.vocab = {w for t in self for w in t.split()}


def as_catalog(titles: dict[str, str]) -> CatalogTitles:
    return titles if isinstance(titles, CatalogTitles) else CatalogTitles(titles)


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
        self._allowed = {norm(t) for t in self.context_titles}
        self._mentionable = [f" {t} " for t in set(self._by_title) | self._allowed]
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
            out = self.check(seg)
            if out:
                yield out

    def finish(self) -> Iterator[str]:
        seg, self._buffer = self._buffer, ""
        if seg.strip():
            out = self.check(seg)
            if out:
                yield out

    def ground_all(self, chunks: Iterable[str]) -> str:
        parts = [s for c in chunks for s in self.feed(c)]
        return "".join(parts + list(self.finish()))

    # -- one segment --------------------------------------------------------------------------------
    def check(self, seg: str) -> str:
        """The segment as the shopper may see it ("" when it must be dropped)."""
        if self._shingles and self._leaks(seg):
            self.counts["system_prompt_leak"] += 1
            return ""
        if self.forbidden and self.forbidden & set(norm(seg).split()):
            self.counts["off_catalog_request"] += 1
            return ""
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
        if len({c.product_id for c in cited}) == 1:
            c = cited[0]

            def price(m: re.Match[str]) -> str:
                if norm(m.group(0)) != norm(c.price_text):
                    self.counts["price_fixed"] += 1
                return c.price_text
            seg = _PRICE.sub(price, seg)
        for c in cited:
            if c.product_id not in self.cited:
                self.cited.append(c.product_id)
        return html.escape(seg, quote=False).replace("&amp;", "&")

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
        text = norm(seg)
        if not text:
            return False
        words = text.split()
        padded = f" {text} "
        for w in set(words):
            for t, pid in self._catalog.by_first_word.get(w, ()):
                if pid in self._candidate_ids or t in self._by_title or t in self._allowed:
                    continue
                if f" {t} " in padded:
                    # part of a title that may be named ("heart t light holder" inside "white hanging heart
                    # t light holder") is fine
                    if any(f" {t} " in m for m in self._mentionable):
                        continue
                    return True
        return False

    def _leaks(self, seg: str) -> bool:
        words = norm(seg).split()
        return any(" ".join(words[i:i + 6]) in self._shingles for i in range(max(0, len(words) - 5)))


class _Drop(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _looks_like_id(text: str) -> bool:
    """Short tokens with a digit ("85123A", "id 42", "P-1002"), as models write product ids."""
    t = text.strip().lower().removeprefix("id").strip(" :#")
    return bool(re.fullmatch(r"[a-z0-9_\-./]{1,24}", t)) and any(ch.isdigit() for ch in t)


def candidates_from(products: Sequence[dict[str, Any]], money: Callable[[float | None], str]) -> list[Candidate]:
    """Candidates from the writer's product dicts (``product_id``, ``title``, ``price``)."""
    from .text import readable_title

    return [Candidate(product_id=p["product_id"], title=readable_title(p["title"]), price_text=money(p["price"]),
                      aliases=(p["title"],)) for p in products]


def context_titles(products: Sequence[dict[str, Any]], recent: Sequence[str] = ()) -> list[str]:
    """Titles a reply may mention without recommending them: what the reasons refer to, and recent items."""
    out = list(recent)
    for p in products:
        for r in list(p.get("reasons", ())) + list(p.get("extra", ())):
            out += [r[k] for k in ("to", "with") if r.get(k)]
    return out


VIOLATIONS = ("unknown_id", "invented_name", "non_candidate_name", "system_prompt_leak", "off_catalog_request")


def audit(text: str, products: Sequence[dict[str, Any]], catalog_titles: dict[str, str], *,
          recent: Sequence[str] = (), secret: str = "", money: Callable[[float | None], str] = str) -> dict[str, int]:
    """How many non-candidate products (and system-prompt repeats) a finished text shows: the grounder's
    own checks, counted instead of applied. 0 everywhere means the text is grounded."""
    g = Grounder(candidates_from(products, money), catalog_titles, secret=secret,
                 context_titles=context_titles(products, recent))
    g.ground_all([text])
    return {k: g.counts[k] for k in VIOLATIONS if g.counts[k]}
