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


# plurals that are not the singular plus -s/-es (knife, knives); each pair matches both ways
_IRREGULAR = {"knife": "knives", "wife": "wives", "life": "lives", "leaf": "leaves", "loaf": "loaves",
              "shelf": "shelves", "half": "halves", "wolf": "wolves", "calf": "calves", "elf": "elves",
              "scarf": "scarves", "thief": "thieves", "sheaf": "sheaves", "child": "children", "mouse": "mice",
              "man": "men", "woman": "women", "person": "people", "goose": "geese", "tooth": "teeth", "foot": "feet"}
_SINGULAR_OF = {plural: single for single, plural in _IRREGULAR.items()}
_SIBILANT = ("s", "x", "z", "ch", "sh")


def _singulars(word: str) -> set[str]:
    """The singulars ``word`` may be the regular (or listed irregular) plural of, and ``word`` itself. Where the
    ending is ambiguous every reading is kept (cookies: cookie or cooky; boxes: box or boxe): a reading that is
    no word matches no title. Short stems are not read at all, so "toes" never becomes "to"."""
    out = {word}
    if word in _SINGULAR_OF:
        out.add(_SINGULAR_OF[word])
    if word.endswith("s") and len(word) > 3 and not word.endswith(("ss", "us", "is")):
        out.add(word[:-1])  # candles, plates, toys, pies, sleeves
        if word.endswith("ies") and len(word) > 4:
            out.add(word[:-3] + "y")  # berries, candies
        if word.endswith("es") and len(word) > 4 and word[:-2].endswith(_SIBILANT + ("o",)):
            out.add(word[:-2])  # boxes, glasses, dishes, matches, tomatoes
    return out


def _plurals(single: str) -> set[str]:
    """The regular plural of a singular (and the listed irregular one)."""
    if single in _IRREGULAR:
        return {_IRREGULAR[single]}
    out = set()
    if single.endswith("y") and len(single) > 1 and single[-2] not in "aeiou":
        out.add(single[:-1] + "ies")  # berry, candy
    elif single.endswith(_SIBILANT):
        out.add(single + "es")  # box, glass, dish, bus
    else:
        out.add(single + "s")  # candle, toy, knife (knifes too)
        if single.endswith("o"):
            out.add(single + "es")  # tomato
    return out


def word_forms(word: str) -> list[str]:
    """Every form a keyword word matches as a whole title word: itself, its singulars and their plurals
    (candle and candles both give candle, candles), longest first."""
    word = word.lower()
    singles = _singulars(word)
    forms = set(singles)
    for single in singles - {word} or singles:  # a word read as a plural is not made plural again (candleses)
        forms |= _plurals(single)
    return sorted(forms, key=lambda f: (-len(f), f))


def keyword_pattern(keyword: str) -> re.Pattern[str]:
    """Case-insensitive whole-word match of every word of a keyword, singular or plural (:func:`word_forms`)."""
    return re.compile(r"\b" + r"\W+".join("(?:" + "|".join(map(re.escape, word_forms(w))) + ")"
                                         for w in keyword.lower().split()) + r"\b", re.IGNORECASE)


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

    @staticmethod
    def _union(arrays: list[np.ndarray]) -> np.ndarray:
        arrays = [a for a in arrays if len(a)]
        if len(arrays) == 1:
            return arrays[0]
        return np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, dtype=np.int64)

    def _all_words(self, text: str) -> np.ndarray:
        """Rows whose titles hold every word of ``text`` whole (all rows when it has none)."""
        found = None
        for word in WORD.findall(text):
            rows = self._exact(word)
            found = rows if found is None else np.intersect1d(found, rows, assume_unique=True)
        return np.arange(len(self._titles)) if found is None else found

    def title_matches(self, keyword: str) -> np.ndarray:
        """Sorted rows whose titles match :func:`keyword_pattern` (every word whole, singular or plural, in
        order); the last :data:`KEYWORD_CACHE` keywords are kept."""
        key = " ".join(keyword.lower().split())
        found = self._matches.get(key)
        if found is not None:
            return found
        self.warm()
        words = key.split()
        if not words:
            found = np.zeros(0, dtype=np.int64)
        elif len(words) == 1 and all(WORD.fullmatch(f) for f in word_forms(words[0])):
            # one word: a title matches iff one of its words is one of the forms
            found = self._union([self._exact(f) for f in word_forms(words[0])])
        else:  # every form's words are whole title words: the rows holding them, then the regex on their titles
            for w in words:
                rows = self._union([self._all_words(f) for f in word_forms(w)])
                found = rows if found is None else np.intersect1d(found, rows, assume_unique=True)
            pattern, titles = keyword_pattern(key), self._titles
            found = np.asarray([r for r in found.tolist() if pattern.search(titles[r].lower())], dtype=np.int64)
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
