"""Find products by the words of their titles (or their id) as a shopper types: the sidebar's product picker.

An inverted index from title words to product rows, built once per bundle; the last word of a query
matches as a prefix ("cand" finds candles). Results come best-sellers first. A million titles index in a
few seconds and answer in about a millisecond, so the picker never ships the whole catalog to the browser.
"""

from __future__ import annotations

import bisect
import re
import threading

import numpy as np

WORD = re.compile(r"[a-z0-9]+")


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
