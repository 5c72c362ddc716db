"""Find products by the words of their titles (or their id) as a shopper types: the sidebar's product picker.

An inverted index from title words to product rows, built once per bundle; the last word of a query
matches as a prefix ("cand" finds candles). Results come best-sellers first. A million titles index in a
few seconds and answer in about a millisecond, so the picker never ships the whole catalog to the browser.
The recommender's keyword filters ("only candles", "no bags") read the same index
(:meth:`ProductSearch.title_matches`) instead of a regex over every candidate's title.
"""

from __future__ import annotations

import bisect
import re
import threading

import numpy as np

WORD = re.compile(r"\w+")  # the words a regex's \b sees, so a keyword's whole-word match is a word of the index
KEYWORD_CACHE = 256  # keywords whose matching rows are kept


def _stem(word: str) -> str:
    for suffix in ("ies", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def _keyword_parts(keyword: str) -> list[tuple[str, str]]:
    """For each word of a keyword: (the literal text every match begins with, the regex of the word, singular
    or plural)."""
    parts = []
    for w in keyword.lower().split():
        base = _stem(w)
        if base.endswith("y"):  # toy, toys; candy, candies
            parts.append((base[:-1], re.escape(base[:-1]) + r"(?:ys?|ies)"))
        else:
            parts.append((base, re.escape(base) + r"(?:s|es|ies)?"))
    return parts


def keyword_pattern(keyword: str) -> re.Pattern[str]:
    """Case-insensitive whole-word match of every word of a keyword, singular or plural."""
    return re.compile(r"\b" + r"\W+".join(regex for _, regex in _keyword_parts(keyword)) + r"\b", re.IGNORECASE)


class ProductSearch:
    """Title-word search over a bundle's products; thread-safe, built lazily (or eagerly with :meth:`warm`)."""

    def __init__(self, titles: list[str], product_ids: list[str], popularity_rank: np.ndarray) -> None:
        self._titles = titles
        self._ids = product_ids
        self._rank = np.asarray(popularity_rank)
        self._lock = threading.Lock()
        self._vocab: list[str] | None = None
        self._rows: list[np.ndarray] = []
        self._row_of_id = None
        self._matches: dict[str, np.ndarray] = {}

    def warm(self) -> ProductSearch:
        """Build the index now (in a thread, at app start, so the first keystroke does not wait)."""
        with self._lock:
            if self._vocab is None:
                postings: dict[str, list[int]] = {}
                for row, title in enumerate(self._titles):
                    for word in set(WORD.findall(title.lower())):
                        postings.setdefault(word, []).append(row)
                vocab = sorted(postings)
                self._rows = [np.asarray(postings[w], dtype=np.int64) for w in vocab]
                self._row_of_id = {pid.lower(): i for i, pid in enumerate(self._ids)}
                self._vocab = vocab
        return self

    def _prefixed(self, prefix: str) -> np.ndarray:
        vocab = self._vocab
        lo = bisect.bisect_left(vocab, prefix)
        hi = bisect.bisect_left(vocab, prefix + "\uffff")
        if hi - lo == 1:
            return self._rows[lo]
        return np.unique(np.concatenate(self._rows[lo:hi])) if hi > lo else np.zeros(0, dtype=np.int64)

    def _exact(self, word: str) -> np.ndarray:
        i = bisect.bisect_left(self._vocab, word)
        return self._rows[i] if i < len(self._vocab) and self._vocab[i] == word else np.zeros(0, dtype=np.int64)

    def _words_like(self, literal: str, regex: str) -> np.ndarray:
        """Rows with a title word that ``regex`` matches whole (only the vocabulary's words that begin with
        ``literal`` can)."""
        whole = re.compile(regex)
        vocab = self._vocab
        lo = bisect.bisect_left(vocab, literal)
        hi = bisect.bisect_left(vocab, literal + "\uffff")
        found = [self._rows[i] for i in range(lo, hi) if whole.fullmatch(vocab[i])]
        return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)

    def title_matches(self, keyword: str) -> np.ndarray:
        """Sorted rows whose titles match :func:`keyword_pattern` (every word whole, singular or plural, in
        order); the last :data:`KEYWORD_CACHE` keywords are kept."""
        key = " ".join(keyword.lower().split())
        found = self._matches.get(key)
        if found is not None:
            return found
        self.warm()
        parts = _keyword_parts(key)
        if len(parts) == 1 and WORD.fullmatch(parts[0][0]):  # one word: a title matches iff one of its words does
            found = self._words_like(*parts[0])
        else:  # the rows with a word beginning like each word of the keyword, then the regex on their titles
            for literal, _ in parts:
                for word in WORD.findall(literal):
                    rows = self._prefixed(word)
                    found = rows if found is None else np.intersect1d(found, rows, assume_unique=True)
            candidates = np.arange(len(self._titles)) if found is None else found
            pattern, titles = keyword_pattern(key), self._titles
            found = np.asarray([r for r in candidates.tolist() if pattern.search(titles[r].lower())], dtype=np.int64)
        with self._lock:
            if len(self._matches) >= KEYWORD_CACHE:
                self._matches.pop(next(iter(self._matches)))
            self._matches[key] = found
        return found

    def search(self, query: str, limit: int = 50) -> list[int]:
        """Rows whose titles contain every word of ``query`` (the last one as a prefix), best-sellers first;
        a product id typed in full comes first."""
        self.warm()
        words = WORD.findall(query.lower())
        if not words:
            return []
        found = None
        for word in words[:-1]:
            rows = self._exact(word)
            found = rows if found is None else np.intersect1d(found, rows, assume_unique=True)
        last = words[-1]
        if found is None:
            found = self._prefixed(last)
        elif len(found) <= 5_000:  # few rows left: read their titles rather than merge every word with the prefix
            starts = re.compile(r"\b" + re.escape(last))
            found = np.asarray([r for r in found.tolist() if starts.search(self._titles[r].lower())], dtype=np.int64)
        else:
            found = np.intersect1d(found, self._prefixed(last), assume_unique=True)
        out: list[int] = []
        exact = self._row_of_id.get(query.strip().lower())
        if exact is not None:
            out.append(exact)
        if found is not None and len(found):
            best = found[np.argsort(self._rank[found], kind="stable")[:limit]]
            out += [int(r) for r in best if r != exact]
        return out[:limit]
