"""Candidates, hybrid scoring, filters, diversity and reasons: the core of every answer.

:func:`blend` is the one scoring function; the chat and the offline evaluation both call it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .bundle_reader import Bundle
from .config import RecommenderConfig


@dataclass
class Request:
    """One recommendation request, already resolved to product rows."""

    user_id: str | None = None
    seeds: list[int] = field(default_factory=list)  # product rows, most relevant first
    seed_kind: str = "viewed"  # viewed | bought | anchor
    query: str | None = None
    max_price: float | None = None
    min_price: float | None = None
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    exclude_rows: set[int] = field(default_factory=set)  # e.g. products already shown or viewed
    n: int | None = None


@dataclass
class Recommendation:
    row: int
    product_id: str
    title: str
    price: float | None
    score: float
    content: float
    als: float
    popularity: float
    reasons: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"product_id": self.product_id, "title": self.title, "price": self.price,
                "score": round(self.score, 4), "reasons": self.reasons}


def blend(content: np.ndarray, als: np.ndarray, popularity: np.ndarray, cfg: RecommenderConfig) -> np.ndarray:
    """The hybrid score: weighted sum of content similarity, normalised ALS score and popularity."""
    return cfg.w_content * content + cfg.w_als * als + cfg.w_popularity * popularity


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first (argpartition, then a small sort)."""
    if k >= len(values):
        return np.argsort(-values, kind="stable")
    part = np.argpartition(-values, k)[:k]
    return part[np.argsort(-values[part], kind="stable")]


def _stem(word: str) -> str:
    for suffix in ("ies", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def keyword_pattern(keyword: str) -> re.Pattern[str]:
    """Case-insensitive whole-word match of every word of a keyword, singular or plural."""
    parts = [re.escape(_stem(w)) + r"(?:s|es|ies)?" if not w.endswith("y") else re.escape(w[:-1]) + r"(?:y|ies)"
             for w in keyword.lower().split()]
    return re.compile(r"\b" + r"\W+".join(parts) + r"\b", re.IGNORECASE)


class Recommender:
    """Answers :class:`Request` objects from one immutable :class:`Bundle`."""

    def __init__(self, bundle: Bundle, encode: Callable[[Sequence[str]], np.ndarray], cfg: RecommenderConfig | None = None):
        self.b = bundle
        self.encode = encode  # texts -> unit vectors with the bundle's own embedding model
        self.cfg = cfg or RecommenderConfig()
        self._lower_titles = [t.lower() for t in bundle.titles]

    # -- scores -------------------------------------------------------------------------------------
    def als_scores(self, user_id: str | None) -> np.ndarray | None:
        """The user's ALS scores over the whole catalog, divided by their maximum (None: unknown user)."""
        b = self.b
        if not user_id or not b.has_als or user_id not in b.user_rows:
            return None
        raw = b.item_factors @ b.user_factors[b.user_rows[user_id]]
        top = raw.max()
        return np.clip(raw / top, 0.0, 1.0) if top > 0 else np.zeros_like(raw)

    def _search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.b.index.ntotal)
        return self.b.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)

    # -- candidates ---------------------------------------------------------------------------------
    def candidates(self, req: Request, *, widen: bool = False, als: np.ndarray | None | bool = False
                   ) -> tuple[dict[int, float], dict[int, dict[str, Any]], np.ndarray | None]:
        """rows -> content score, rows -> the reason behind that score, and the ALS scores.

        Seed neighbours are kept to the seed's KMeans cluster; ``widen`` lifts that restriction and
        adds best sellers, for when filters leave too few products. ``als``: scores computed already.
        """
        b, cfg = self.b, self.cfg
        content: dict[int, float] = {}
        why: dict[int, dict[str, Any]] = {}

        def offer(row: int, score: float, reason: dict[str, Any]) -> None:
            if score > content.get(row, -1.0):
                content[row], why[row] = float(score), reason

        seeds = req.seeds[: cfg.max_seeds]
        if seeds:
            for seed, near in zip(seeds, self._seed_neighbours(seeds, widen), strict=False):
                base = {"kind": "similar", "to": b.titles[seed], "to_id": b.product_ids[seed], "via": req.seed_kind}
                for i, s in near:
                    if s > content.get(i, -1.0):
                        offer(i, s, {**base, "similarity": round(s, 3)})
        # Include-keywords bring their own candidates only when the seeds' neighbours are not enough.
        queries = ([req.query] if req.query else []) + (list(req.include) if widen or not seeds else [])
        if queries:
            qv = self.encode(queries)
            sims, ids = self._search(qv, cfg.query_candidates)
            for q, srow, irow in zip(queries, sims, ids, strict=True):
                for i, s in zip(irow.tolist(), srow.tolist(), strict=True):
                    if i >= 0 and s > content.get(i, -1.0):
                        offer(i, s, {"kind": "query", "query": q, "similarity": round(s, 3)})
        if als is False:
            als = self.als_scores(req.user_id)
        if als is not None:
            for i in top_k(als, cfg.als_candidates):
                content.setdefault(int(i), 0.0)
        if widen or not content:  # nothing (left) to start from: best sellers
            for i in b.popularity_order[: cfg.query_candidates]:
                content.setdefault(int(i), 0.0)
        return content, why, als

    def _seed_neighbours(self, seeds: list[int], widen: bool) -> list[list[tuple[int, float]]]:
        """Nearest products of each seed: within its KMeans cluster (exact, one matrix product per
        cluster), or, when ``widen``, anywhere in the catalog through FAISS."""
        b, cfg = self.b, self.cfg
        out = []
        if widen:  # the three most recent seeds, twice as many neighbours, any cluster
            seeds = seeds[:3]
            sims, ids = self._search(b.embeddings[seeds], cfg.neighbours_per_seed * 2 + 1)
            for seed, srow, irow in zip(seeds, sims.tolist(), ids.tolist(), strict=True):
                out.append([(i, s) for i, s in zip(irow, srow, strict=True) if i >= 0 and i != seed])
            return out
        for seed in seeds:
            c = int(b.clusters[seed])
            sims = b.member_embeddings[c] @ b.embeddings[seed]
            best = top_k(sims, cfg.neighbours_per_seed + 1)
            rows = b.members[c][best].tolist()
            out.append([(r, s) for r, s in zip(rows, sims[best].tolist(), strict=True) if r != seed])
        return out

    # -- filters ------------------------------------------------------------------------------------
    def _keyword_mask(self, rows: np.ndarray, keywords: list[str]) -> np.ndarray:
        """True where a product matches any keyword, by its title words or by meaning."""
        if not keywords:
            return np.zeros(len(rows), dtype=bool)
        sims = self.b.embeddings[rows] @ self.encode(keywords).T
        return self._title_mask(rows, keywords) | (sims.max(axis=1) >= self.cfg.keyword_similarity)

    def _title_mask(self, rows: np.ndarray, keywords: list[str]) -> np.ndarray:
        """True where a product title contains any keyword (whole words, singular or plural)."""
        pattern = re.compile("|".join(keyword_pattern(k).pattern for k in keywords), re.IGNORECASE)
        titles = self._lower_titles
        return np.fromiter((pattern.search(titles[r]) is not None for r in rows.tolist()), dtype=bool, count=len(rows))

    def allowed(self, rows: np.ndarray, req: Request) -> np.ndarray:
        b = self.b
        keep = np.ones(len(rows), dtype=bool)
        blocked = set(req.exclude_rows) | set(b.purchased.get(req.user_id or "", ())) | set(req.seeds)
        keep &= ~np.isin(rows, list(blocked)) if blocked else keep
        price = b.prices[rows]
        if req.max_price is not None:
            keep &= np.nan_to_num(price, nan=np.inf) <= req.max_price
        if req.min_price is not None:
            keep &= np.nan_to_num(price, nan=-np.inf) >= req.min_price
        if req.include:
            keep &= self._keyword_mask(rows, req.include)
        if req.exclude:
            keep &= ~self._title_mask(rows, req.exclude)
        return keep

    # -- the whole thing ----------------------------------------------------------------------------
    def recommend(self, req: Request) -> list[Recommendation]:
        """Top products for a request: candidates -> filters -> blend -> MMR -> reasons."""
        b, cfg = self.b, self.cfg
        n = req.n or cfg.n_results
        content, why, als = self.candidates(req)
        rows = np.fromiter(content, dtype=np.int64, count=len(content))
        rows = rows[self.allowed(rows, req)] if len(rows) else rows
        if len(rows) < n:  # the filters left too few: look beyond the seeds' clusters
            content, why, als = self.candidates(req, widen=True, als=als)
            rows = np.fromiter(content, dtype=np.int64, count=len(content))
            rows = rows[self.allowed(rows, req)] if len(rows) else rows
        if len(rows) == 0:
            return []
        c = np.clip(np.array([content[int(r)] for r in rows]), 0.0, 1.0)
        a = als[rows] if als is not None else np.zeros(len(rows))
        p = b.popularity[rows]
        score = blend(c, a, p, cfg)
        picks = self._mmr(rows, score, n)
        pos = {int(r): i for i, r in enumerate(rows)}
        out = []
        for r in picks:
            i = pos[r]
            out.append(Recommendation(
                row=r, **b.product(r), score=float(score[i]), content=float(c[i]), als=float(a[i]),
                popularity=float(p[i]), reasons=self.reasons(r, why.get(r), float(a[i]), als is not None),
            ))
        return out

    def _mmr(self, rows: np.ndarray, score: np.ndarray, n: int) -> list[int]:
        """Maximal marginal relevance over the 50 best: score vs. similarity to what is already picked."""
        order = np.argsort(-score, kind="stable")[:50]
        pool, pool_score = rows[order], score[order]
        emb = self.b.embeddings[pool]
        chosen: list[int] = []
        max_sim = np.zeros(len(pool))
        lam = self.cfg.mmr_lambda
        for _ in range(min(n, len(pool))):
            mmr = lam * pool_score - (1 - lam) * max_sim
            if chosen:
                mmr[chosen] = -np.inf
            j = int(np.argmax(mmr))
            chosen.append(j)
            max_sim = np.maximum(max_sim, emb @ emb[j])
        return [int(pool[j]) for j in chosen]

    def reasons(self, row: int, content_reason: dict[str, Any] | None, als: float, known_user: bool) -> list[dict[str, Any]]:
        """Structured reasons, strongest first; writers and "why?" answers read these."""
        b = self.b
        out: list[dict[str, Any]] = []
        if content_reason:
            out.append(content_reason)
        if known_user and als >= 0.25:
            out.append({"kind": "als", "strength": round(als, 3)})
        rank = int(b.popularity_rank[row])
        if b.popularity[row] > 0 and rank <= max(10, len(b.titles) // 20):
            out.append({"kind": "popular", "rank": rank, "cluster": int(b.clusters[row]),
                        "buyers": int(b.products["popularity"].iat[row])})
        if not out:
            out.append({"kind": "cluster", "cluster": int(b.clusters[row])})
        return out
