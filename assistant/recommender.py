"""Candidates, hybrid scoring, filters, diversity and reasons: the core of every answer.

:func:`blend` is the one scoring function; the chat and the offline evaluation both call it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assistant.config import RecommenderConfig
from index_builder.core.bundle_reader import Bundle

MIN_REASON_SIMILARITY = 0.3  # a weaker similarity is not given as a reason when another signal is there


def shortlist(k: int) -> int:
    """How many candidates a quantized (ivfpq) search returns for k, re-scored exactly from the vectors: 16 x k
    up to k = 32, 512 up to 64, then 8 x k (recall@k 0.999 at k = 61 and 1.0 at 121 against an exact search on
    the 1M bench bundle, where 4 x k gave 0.97)."""
    return max(8 * k, min(16 * k, 512))


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
    include_had: bool = False  # keep products the shopper already has (only the evaluation's repeat variant)
    reorders: str = "off"  # off | mixed (due reorders first, then new products) | only (their past products only)


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
    item: float = 0.0
    display_title: str = ""
    description: str = ""
    kind: str = "new"  # new: not had before | reorder: a past product due again (score = its buy-again probability)

    def as_dict(self) -> dict[str, Any]:
        return {"product_id": self.product_id, "title": self.title, "display_title": self.display_title,
                "price": self.price, "score": round(self.score, 4), "kind": self.kind, "reasons": self.reasons}

    def terms(self) -> dict[str, float]:
        return {"content": round(self.content, 3), "item": round(self.item, 3), "als": round(self.als, 3),
                "popularity": round(self.popularity, 3)}


@dataclass
class Signals:
    """The collaborative scores of one request over the whole catalog, each in [0, 1] (None: no such signal)."""

    als: np.ndarray | None = None
    item: np.ndarray | None = None
    item_sources: np.ndarray | None = None  # product rows whose item-item neighbours made ``item``
    item_source_weights: np.ndarray | None = None  # their weights (recency, 1 for what is viewed now)


@dataclass(frozen=True)
class BlendWeights:
    """The weights of :func:`blend`, shared with :meth:`Recommender.reasons` (which attributes a score to its
    signals): ``content`` x content + ``collaborative`` x the mean of the collaborative terms weighted by
    ``item``, ``als`` and ``popularity`` (their sum is ``total``; 0: no collaborative part)."""

    content: float
    collaborative: float
    item: float
    als: float
    popularity: float
    total: float

    def share(self, signal: str) -> float:
        """What one unit of a collaborative signal ("item", "als" or "popularity") adds to the score."""
        cf_share = self.collaborative / self.total if self.total > 0 else 0.0
        return cf_share * getattr(self, signal)


def blend_weights(cfg: RecommenderConfig, content_weight: float) -> BlendWeights:
    return BlendWeights(content=content_weight, collaborative=1.0 - content_weight, item=cfg.w_item, als=cfg.w_als,
                        popularity=cfg.w_popularity, total=cfg.w_item + cfg.w_als + cfg.w_popularity)


def blend(content: np.ndarray, als: np.ndarray, item: np.ndarray, popularity: np.ndarray,
          cfg: RecommenderConfig, content_weight: float) -> np.ndarray:
    """The hybrid score: ``content_weight`` x content + the rest x the weighted mean of the collaborative terms."""
    w = blend_weights(cfg, content_weight)
    cf = (w.item * item + w.als * als + w.popularity * popularity) / w.total if w.total > 0 else np.zeros_like(content)
    return w.content * content + w.collaborative * cf


def decay(age_days: np.ndarray, half_life_days: float | None) -> np.ndarray:
    """0.5 ** (age / half-life); all ones when there is no half-life."""
    if not half_life_days:
        return np.ones(len(age_days))
    return np.power(0.5, np.asarray(age_days, dtype=np.float64) / half_life_days)


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first; equal values by the lower index.

    On a long array a threshold from a strided sample first keeps the few rows that can be among the k
    largest: a comparison costs ~50x less than ``argpartition`` over 100,000 scores (1.8 ms here), which
    the evaluation and the graph run for every user. The selection on those rows is exact, so the result
    is the same as a full sort's. Mostly-equal scores (an item-item row of zeros) take the same short way.
    """
    n = len(values)
    k = max(0, min(k, n))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if n >= 4096 and n >= 64 * k:
        step = n // (16 * k)  # a sample of ~16 k values, where the k largest of all rank about k / step
        sample = values[::step]
        rank = min(len(sample), 2 * (k // step) + 2)  # a threshold below the k-th largest, with margin
        threshold = -np.partition(-sample, rank - 1)[rank - 1]
        above = np.flatnonzero(values > threshold)
        if len(above) >= k:
            return _largest(values, above, k)
        at = np.flatnonzero(values == threshold)  # the k-th largest is the threshold: fill with the first rows
        if len(above) + len(at) >= k:
            return _ordered(values, np.concatenate([above, at[: k - len(above)]]))
    return _largest(values, None, k)


def _ordered(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``rows`` by value, largest first; equal values by the lower row."""
    return rows[np.lexsort((rows, -values[rows]))]


def _largest(values: np.ndarray, rows: np.ndarray | None, k: int) -> np.ndarray:
    """The k rows with the largest values, as :func:`top_k` orders them; ``rows``: ascending rows to choose
    from (at least k), None for all."""
    sub = values if rows is None else values[rows]
    if np.isnan(sub).any():
        order = np.argsort(-sub, kind="stable")[:k]
        return order if rows is None else rows[order]
    kth = -np.partition(-sub, k - 1)[k - 1]  # from the top: partitioning at len - k crawls over many equal values
    above = np.flatnonzero(sub > kth)
    pick = np.concatenate([above, np.flatnonzero(sub == kth)[: k - len(above)]])
    return _ordered(values, pick if rows is None else rows[pick])


def reorder_slots(n: int, share: float) -> int:
    """How many of a list of ``n`` may be reorders (halves round up: 0.1 of 5 is 1, as 0.1 of 10 is 1)."""
    return max(0, min(n, int(np.floor(share * n + 0.5 + 1e-9))))


def with_reorders(due: tuple[np.ndarray, np.ndarray], discovery: Sequence[int], n: int, share: float,
                  min_probability: float) -> list[tuple[int, str]]:
    """A known customer's list as (row, kind), in two groups: their due past products (probability at least
    ``min_probability``, at most :func:`reorder_slots` of ``n``, most likely first), then the ``n`` best of
    ``discovery`` (new products): restocking takes no place from discovery. The chat shows both groups; the
    evaluation's all-items track scores the list's first k. Both call this."""
    rows, probability = due
    picked = rows[probability >= min_probability][: reorder_slots(n, share)].tolist()
    return [(int(r), "reorder") for r in picked] + [(int(r), "new") for r in discovery[:n]]


def price_mask(prices: np.ndarray, req: Request) -> np.ndarray:
    """True where a price is within the request's range (an unknown price passes no bound)."""
    ok = np.ones(len(prices), dtype=bool)
    if req.max_price is not None:
        ok &= np.nan_to_num(prices, nan=np.inf) <= req.max_price
    if req.min_price is not None:
        ok &= np.nan_to_num(prices, nan=-np.inf) >= req.min_price
    return ok


class Reasons:
    """row -> the reason behind its content score. A "similar" reason is written out only when asked for: the
    evaluation and the graph rank hundreds of candidates a user and read no reason."""

    def __init__(self, bundle: Bundle, via: str) -> None:
        self.b, self.via = bundle, via
        self._made: dict[int, dict[str, Any]] = {}
        self._similar: dict[int, tuple[int, float]] = {}  # row -> (seed row, similarity)

    def similar(self, rows: np.ndarray, seeds: np.ndarray, sims: np.ndarray) -> None:
        """Each row (without a reason yet) is like its seed, by that similarity."""
        self._similar.update(zip(rows.tolist(), zip(seeds.tolist(), sims.tolist(), strict=True), strict=True))

    def __setitem__(self, row: int, reason: dict[str, Any]) -> None:
        self._similar.pop(row, None)
        self._made[row] = reason

    def __contains__(self, row: int) -> bool:
        return row in self._made or row in self._similar

    def rows(self) -> np.ndarray:
        """Every row that has a reason."""
        return np.fromiter((*self._made, *self._similar), dtype=np.int64, count=len(self._made) + len(self._similar))

    def get(self, row: int, default: Any = None) -> dict[str, Any] | None:
        if row not in self._made and row in self._similar:
            seed, sim = self._similar.pop(row)
            self._made[row] = {"kind": "similar", "to": self.b.titles[seed], "to_id": self.b.product_ids[seed],
                               "via": self.via, "similarity": round(sim, 3)}
        return self._made.get(row, default)


class Recommender:
    """Answers :class:`Request` objects from one immutable :class:`Bundle`."""

    def __init__(self, bundle: Bundle, encode: Callable[[Sequence[str]], np.ndarray], cfg: RecommenderConfig | None = None):
        self.b = bundle
        self.encode = encode  # texts -> unit vectors with the bundle's own embedding model
        self.cfg = cfg or RecommenderConfig.from_manifest(bundle.manifest)
        # a seed's nearest products, by (seed, neighbours_per_seed) (a widened search: by (seeds, True, n)); set by
        # whoever ranks many users on one bundle's vectors and index: the evaluation (shared across the configs it
        # tries: no blend setting changes a search) and the recommendation graph (users share their products)
        self.neighbours_memo: dict[tuple, Any] | None = None
        self.popularity = self._popularity_term()
        self.popularity_order = np.argsort(-self.popularity, kind="stable")
        self.popularity_rank = np.empty(len(self.popularity), dtype=np.int64)
        self.popularity_rank[self.popularity_order] = np.arange(1, len(self.popularity) + 1)

    # -- scores -------------------------------------------------------------------------------------
    def _popularity_term(self) -> np.ndarray:
        """Buyers per product, each weighted by how recent their interaction is, over the best product's."""
        b = self.b
        n = len(b.titles)
        if b.pair_rows is None or not len(b.pair_rows):
            return np.asarray(b.popularity, dtype=np.float64).copy()
        counts = np.bincount(b.pair_rows, weights=decay(b.pair_age_days, self.cfg.popularity_half_life_days), minlength=n)
        top = counts.max()
        return counts / top if top > 0 else counts

    def als_scores(self, user_id: str | None) -> np.ndarray | None:
        """The user's ALS scores over the whole catalog, divided by their maximum (None: unknown user)."""
        b = self.b
        if not user_id or not b.has_als or user_id not in b.user_rows:
            return None
        raw = b.item_factors @ b.user_factors[b.user_rows[user_id]]
        top = raw.max()
        return np.clip(raw / top, 0.0, 1.0) if top > 0 else np.zeros_like(raw)

    def item_scores(self, user_id: str | None, viewed: Sequence[int] = (), *, recency: bool = True) -> Signals:
        """Item-item (EASE) scores of the user's past products (recency-weighted) and what they view now."""
        b = self.b
        if not b.has_item_item:
            return Signals()
        rows, ages = b.profile.get(user_id or "", (np.zeros(0, dtype=np.int64), np.zeros(0)))
        weights = decay(ages, self.cfg.history_half_life_days if recency else None)
        if len(viewed):
            rows = np.concatenate([np.asarray(viewed, dtype=np.int64), rows])
            weights = np.concatenate([np.ones(len(viewed)), weights])
        if not len(rows):
            return Signals()
        n = len(b.titles)
        # an empty slot (-1) counts into an extra bin n, with weight 0: the same sums in the same order as
        # masking the slots out first, without the two masked copies
        neighbours = b.item_neighbours[rows].ravel()
        contrib = (b.item_weights[rows] * weights[:, None]).ravel()
        scores = np.bincount(np.where(neighbours >= 0, neighbours, n), weights=contrib, minlength=n + 1)[:n]
        top = scores.max()
        if top <= 0:
            return Signals()
        return Signals(item=np.clip(scores / top, 0.0, 1.0), item_sources=rows, item_source_weights=weights)

    def signals(self, req: Request) -> Signals:
        sig = self.item_scores(req.user_id, req.seeds if req.seed_kind in ("viewed", "anchor") else ())
        sig.als = self.als_scores(req.user_id)
        return sig

    def _search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search; a quantized index's :func:`shortlist` is re-scored exactly from the vectors."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.b.faiss_kind != "ivfpq":
            return self.b.index.search(vectors, min(k, self.b.index.ntotal))
        _, ids = self.b.index.search(vectors, min(shortlist(k), self.b.index.ntotal))
        out_s = np.full((len(vectors), k), -np.inf, dtype=np.float32)
        out_i = np.full((len(vectors), k), -1, dtype=np.int64)
        for i, (vec, cand) in enumerate(zip(vectors, ids, strict=True)):
            rows, sims = self._rescored(cand, vec, k)
            out_s[i, :len(rows)], out_i[i, :len(rows)] = sims, rows
        return out_s, out_i

    def _rescored(self, candidates: np.ndarray, vec: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k candidates (FAISS ids, -1 = none) closest to ``vec`` by their exact cosine, best first."""
        rows = candidates[candidates >= 0]
        sims = self.b.vectors(rows) @ vec
        best = top_k(sims, k)
        return rows[best], sims[best]

    # -- candidates ---------------------------------------------------------------------------------
    def candidates(self, req: Request, *, widen: bool = False, signals: Signals | None = None
                   ) -> tuple[dict[int, float], Reasons, Signals]:
        """rows -> content score, rows -> the reason behind that score, and the collaborative signals.

        Seed neighbours are kept to the seed's KMeans cluster; ``widen`` lifts that restriction and
        adds best sellers, for when filters leave too few products. ``signals``: computed already.
        A row offered more than once keeps its best similarity (the first offer on ties) and the place of
        its first offer.
        """
        b, cfg = self.b, self.cfg
        content: dict[int, float] = {}
        why = Reasons(b, req.seed_kind)
        seeds = np.asarray(req.seeds[: cfg.max_seeds], dtype=np.int64)
        if len(seeds):
            near = self._remembered_neighbours(seeds.tolist(), widen)
            rows = np.concatenate([r for r, _ in near])
            sims = np.concatenate([s for _, s in near])
            source = np.repeat(seeds[: len(near)], [len(r) for r, _ in near])
            offered = sims > -1.0
            rows, sims, source = rows[offered], sims[offered], source[offered]
            if len(rows):
                by_row = np.lexsort((np.arange(len(rows)), -sims, rows))  # each row's best offer first
                best = by_row[np.r_[True, rows[by_row][1:] != rows[by_row][:-1]]]
                _, first = np.unique(rows, return_index=True)
                best = best[np.argsort(first, kind="stable")]  # in the order the rows were first offered
                content = dict(zip(rows[best].tolist(), sims[best].tolist(), strict=True))
                why.similar(rows[best], source[best], sims[best])
        # Include-keywords bring their own candidates only when the seeds' neighbours are not enough.
        queries = ([req.query] if req.query else []) + (list(req.include) if widen or not len(seeds) else [])
        if queries:
            qv = self.encode(queries)
            sims, ids = self._search(qv, cfg.query_candidates)
            for q, srow, irow in zip(queries, sims, ids, strict=True):
                for i, s in zip(irow.tolist(), srow.tolist(), strict=True):
                    if i >= 0 and s > content.get(i, -1.0):
                        content[i], why[i] = float(s), {"kind": "query", "query": q, "similarity": round(s, 3)}
        sig = signals if signals is not None else self.signals(req)
        for scores, k in ((sig.als, cfg.als_candidates), (sig.item, cfg.item_candidates)):
            if scores is not None:
                top = top_k(scores, k)
                for i in top[scores[top] > 0].tolist():
                    content.setdefault(i, 0.0)
        n_popular = cfg.query_candidates if widen or not content else cfg.popular_candidates
        for i in self.popularity_order[:n_popular].tolist():
            content.setdefault(i, 0.0)
        if len(seeds):  # every other candidate's content score is its similarity to the closest seed
            keys = np.fromiter(content, dtype=np.int64, count=len(content))
            rest = keys[~np.isin(keys, why.rows())]
            if len(rest):
                sims = b.vectors(rest) @ b.vectors(seeds).T
                closest = sims.argmax(axis=1)
                best = sims[np.arange(len(rest)), closest].astype(np.float64)
                # the similarity a reason states, to 3 decimals: float32 values times 1000 are exact in float64,
                # so numpy's rint-based rounding equals Python's round(v, 3) here
                rounded = np.round(best, 3)
                content.update(zip(rest.tolist(), np.maximum(rounded, 0.0).tolist(), strict=True))
                strong = rounded >= 0.5
                why.similar(rest[strong], seeds[closest[strong]], best[strong])
        return content, why, sig

    def _catalog_candidates(self, req: Request, content: dict[int, float]) -> None:
        """Add the best sellers within the price range (at most ``catalog_scan``), scored by likeness to
        the seeds or the stated need. With include keywords, those whose titles match, and those that match by
        meaning among the best-selling ``catalog_scan_meaning`` (reading a vector costs more than a title)."""
        b, cfg = self.b, self.cfg
        rows = self._best_sellers(req, cfg.catalog_scan)
        rows = rows[~np.isin(rows, np.fromiter(content, dtype=np.int64, count=len(content)))]
        if req.include and len(rows):  # only what can pass the keyword filter (allowed() checks these few again)
            keep = self._title_mask(rows, req.include)
            unread = np.flatnonzero(~keep[: cfg.catalog_scan_meaning])
            if len(unread):
                sims = b.vectors(rows[unread]) @ self.encode(req.include).T
                keep[unread] = sims.max(axis=1) >= cfg.keyword_similarity
            rows = rows[keep]
        if not len(rows):
            return
        vectors = b.vectors(rows)
        seeds = req.seeds[: cfg.max_seeds]
        if seeds:
            sims = (vectors @ b.vectors(seeds).T).max(axis=1)
        elif req.query:
            sims = vectors @ self.encode([req.query])[0]
        else:
            sims = np.zeros(len(rows))
        for r, sim in zip(rows.tolist(), np.clip(sims, 0.0, 1.0).tolist(), strict=True):
            content[r] = float(sim)

    def _best_sellers(self, req: Request, n: int) -> np.ndarray:
        """The n best-selling rows within the request's price range (the best-selling 4n first: at a million
        products, reading every price costs more than the rest of the turn)."""
        order = self.popularity_order
        if req.max_price is None and req.min_price is None:
            return order[:n]
        head = order[: 4 * n]
        rows = head[price_mask(self.b.prices[head], req)]
        if len(rows) < n and len(order) > len(head):
            rows = order[price_mask(self.b.prices[order], req)]
        return rows[:n]

    def _remembered_neighbours(self, seeds: list[int], widen: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`_seed_neighbours` through ``neighbours_memo`` when one is set: each seed's in-cluster neighbours
        are kept by seed, so users who share a product share its search; a widened search (three seeds in one
        FAISS call, rare) by its seeds."""
        memo, k = self.neighbours_memo, self.cfg.neighbours_per_seed
        if memo is None:
            return self._seed_neighbours(seeds, widen)
        if widen:
            key = (tuple(seeds), True, k)
            if key not in memo:
                memo[key] = self._seed_neighbours(seeds, True)
            return memo[key]
        missing = [seed for seed in dict.fromkeys(seeds) if (seed, k) not in memo]
        for seed, found in zip(missing, self._seed_neighbours(missing, False), strict=True):
            memo[(seed, k)] = found
        return [memo[(seed, k)] for seed in seeds]

    def _seed_neighbours(self, seeds: list[int], widen: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        """Nearest products of each seed, (rows, similarities) best first, the seed left out: within its KMeans
        cluster (exact, one matrix product per cluster), or, when ``widen``, anywhere in the catalog through FAISS."""
        b, cfg = self.b, self.cfg
        out = []
        if widen:  # the three most recent seeds, twice as many neighbours, any cluster
            seeds = seeds[:3]
            sims, ids = self._search(b.vectors(seeds), cfg.neighbours_per_seed * 2 + 1)
            for seed, srow, irow in zip(seeds, sims, ids, strict=True):
                keep = (irow >= 0) & (irow != seed)
                out.append((irow[keep], srow[keep]))
            return out
        for seed in seeds:
            c = int(b.clusters[seed])
            if c in b.member_embeddings:
                sims = b.member_embeddings[c] @ b.vectors(seed)
                best = top_k(sims, cfg.neighbours_per_seed + 1)
                rows, sims = b.members[c][best], sims[best]
            else:
                rows, sims = self._cell_search(seed, c, cfg.neighbours_per_seed + 1)
            keep = rows != seed
            out.append((rows[keep].astype(np.int64), sims[keep]))
        return out

    def _cell_search(self, seed: int, cluster: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The seed's k nearest products in its cluster, through the one FAISS cell that holds that cluster:
        the :func:`shortlist` by the index's (possibly quantized) scores, re-scored exactly."""
        index = self.b.index
        q = self.b.vectors([seed])
        assign = np.full((1, index.nprobe), -1, dtype=np.int64)  # -1: no further cell to visit
        assign[0, 0] = cluster
        _, ids = index.search_preassigned(q, min(shortlist(k), index.ntotal), assign, None)
        return self._rescored(ids[0], q[0], k)

    # -- filters ------------------------------------------------------------------------------------
    def _keyword_mask(self, rows: np.ndarray, keywords: list[str]) -> np.ndarray:
        """True where a product matches any keyword, by its title words or by meaning."""
        if not keywords:
            return np.zeros(len(rows), dtype=bool)
        sims = self.b.vectors(rows) @ self.encode(keywords).T
        return self._title_mask(rows, keywords) | (sims.max(axis=1) >= self.cfg.keyword_similarity)

    def title_hits(self, keyword: str) -> int:
        """How many catalog titles contain the keyword (whole words, singular or plural)."""
        return len(self.b.search.title_matches(keyword))

    def _title_mask(self, rows: np.ndarray, keywords: list[str]) -> np.ndarray:
        """True where a product title contains any keyword (whole words, singular or plural)."""
        mask = np.zeros(len(rows), dtype=bool)
        for keyword in keywords:
            hits = self.b.search.title_matches(keyword)
            if len(hits):
                at = np.minimum(np.searchsorted(hits, rows), len(hits) - 1)
                mask |= hits[at] == rows
        return mask

    def allowed(self, rows: np.ndarray, req: Request) -> np.ndarray:
        """Drop what the shopper already has (bought, rated), the seeds, ``exclude_rows``; apply price and keywords."""
        b = self.b
        keep = np.ones(len(rows), dtype=bool)
        blocked = set(req.exclude_rows)
        if req.seed_kind != "bought":  # what is viewed now, or the anchor (bought seeds are among ``had``)
            blocked |= set(req.seeds)
        if not req.include_had:
            blocked |= b.had.get(req.user_id or "", frozenset())
        keep &= ~np.isin(rows, list(blocked)) if blocked else keep
        keep &= price_mask(b.prices[rows], req)
        if req.include:
            keep &= self._keyword_mask(rows, req.include)
        if req.exclude:
            keep &= ~self._title_mask(rows, req.exclude)
        return keep

    # -- the whole thing ----------------------------------------------------------------------------
    def content_weight(self, req: Request) -> float:
        return self.cfg.w_content_history if req.seed_kind == "bought" else self.cfg.w_content

    def recommend(self, req: Request) -> list[Recommendation]:
        """Top products for a request: candidates -> filters -> blend -> MMR -> reasons; with ``req.reorders``,
        the customer's due past products first (:func:`with_reorders`), or only those."""
        n = req.n or self.cfg.n_results
        due = self.due(req)
        if req.reorders == "only":
            return [self.reorder(req.user_id or "", int(r), float(p)) for r, p in zip(*[a[:n] for a in due], strict=True)]
        found = self.scored_candidates(req)
        if found is None and not len(due[0]):
            return []
        rows, t, why, sig = found if found is not None else (np.zeros(0, dtype=np.int64), {}, None, None)
        cw = self.content_weight(req)
        score, picks = self.pick(rows, t, req) if found is not None else (np.zeros(0), [])
        pos = {int(r): i for i, r in enumerate(rows)}
        probability = dict(zip(due[0].tolist(), due[1].tolist(), strict=True))
        return [self.reorder(req.user_id or "", r, probability[r]) if kind == "reorder" else
                self.recommendation(r, {k: float(v[pos[r]]) for k, v in t.items()}, why.get(r), sig, cw,
                                    score=float(score[pos[r]]))
                for r, kind in with_reorders(due, picks, n, self.cfg.reorder_share, self.cfg.reorder_min_probability)]

    def due(self, req: Request) -> tuple[np.ndarray, np.ndarray]:
        """(rows, buy-again probabilities) of the customer's past products that pass the request's filters, most
        likely first; empty unless ``req.reorders`` asks for them and the bundle has a buy-again table."""
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0))
        if req.reorders == "off" or self.b.reorders is None or not req.user_id:
            return empty
        rows, probability = self.b.reorders.of(req.user_id)
        if not len(rows):
            return empty
        keep = self.allowed(rows, dataclasses.replace(req, include_had=True, seeds=[], seed_kind="bought"))
        if req.query and keep.any():  # "restock candles": their past products that match, by title or meaning
            keep[keep] = self._keyword_mask(rows[keep], [req.query])
        return rows[keep], probability[keep]

    def reorder(self, user_id: str, row: int, probability: float) -> Recommendation:
        """A due past product, with the figures of its orders as its reason."""
        figures = self.b.reorders.figures(user_id, row) if self.b.reorders is not None else None
        reason = {"kind": "reorder", **(figures or {"probability": round(probability, 3)})}
        return Recommendation(row=row, **self.b.product(row), score=probability, content=0.0, als=0.0, popularity=0.0,
                              reasons=[reason], kind="reorder")

    def scored_candidates(self, req: Request
                          ) -> tuple[np.ndarray, dict[str, np.ndarray], Reasons, Signals] | None:
        """The candidates that pass the request's filters with their four blend terms (None: no candidate).

        Only :data:`~assistant.config.BLEND_ONLY` settings are left to apply: the evaluation's blend
        search scores many of those on one call's result (:meth:`pick`).
        """
        n = req.n or self.cfg.n_results
        verdict = np.zeros(len(self.b.titles), dtype=np.int8)  # 0: not checked yet, 1: allowed, 2: filtered out

        def passing(content: dict[int, float]) -> np.ndarray:  # each row goes through allowed() once a request
            rows = np.fromiter(content, dtype=np.int64, count=len(content))
            new = rows[verdict[rows] == 0]
            if len(new):
                verdict[new] = np.where(self.allowed(new, req), 1, 2)
            return rows[verdict[rows] == 1]

        content, why, sig = self.candidates(req)
        rows = passing(content)
        if len(rows) < n:  # the filters left too few: look beyond the seeds' clusters
            content, why, sig = self.candidates(req, widen=True, signals=sig)
            rows = passing(content)
        if len(rows) < n and (req.max_price is not None or req.min_price is not None or req.include):
            # still too few: every product that passes the filters (the best-selling CATALOG_SCAN of them)
            self._catalog_candidates(req, content)
            rows = passing(content)
        if len(rows) == 0:
            return None
        return rows, self.terms(rows, content, sig), why, sig

    def pick(self, rows: np.ndarray, terms: dict[str, np.ndarray], req: Request) -> tuple[np.ndarray, list[int]]:
        """Blend the terms with this config's weights, then pick the list by MMR: (every row's score, picks)."""
        cfg = self.cfg
        score = blend(terms["content"], terms["als"], terms["item"], terms["popularity"], cfg, self.content_weight(req))
        return score, self._mmr(rows, score, req.n or cfg.n_results)

    def terms(self, rows: np.ndarray, content: dict[int, float], sig: Signals) -> dict[str, np.ndarray]:
        """The four blend terms of each row, each in [0, 1]."""
        zeros = np.zeros(len(rows))
        keys = np.fromiter(content, dtype=np.int64, count=len(content))
        values = np.fromiter(content.values(), dtype=np.float64, count=len(content))
        order = np.argsort(keys, kind="stable")
        at = order[np.minimum(np.searchsorted(keys, rows, sorter=order), len(keys) - 1)] if len(keys) else rows[:0]
        return {"content": np.clip(np.where(keys[at] == rows, values[at], 0.0) if len(keys) else zeros, 0.0, 1.0),
                "als": sig.als[rows] if sig.als is not None else zeros,
                "item": sig.item[rows] if sig.item is not None else zeros,
                "popularity": self.popularity[rows]}

    def recommendation(self, row: int, terms: dict[str, float], content_reason: dict[str, Any] | None, sig: Signals,
                       content_weight: float, score: float = 0.0) -> Recommendation:
        return Recommendation(row=row, **self.b.product(row), score=score, content=terms["content"], als=terms["als"],
                              popularity=terms["popularity"], item=terms["item"],
                              reasons=self.reasons(row, content_reason, terms, sig, content_weight))

    def _mmr(self, rows: np.ndarray, score: np.ndarray, n: int) -> list[int]:
        """Maximal marginal relevance over the best 50 (or 2n): score vs. similarity to what is already picked."""
        order = np.argsort(-score, kind="stable")[: max(50, 2 * n)]
        pool, pool_score = rows[order], score[order]
        lam = self.cfg.mmr_lambda
        if lam >= 1.0:
            return [int(r) for r in pool[:n]]
        emb = self.b.vectors(pool)
        chosen: list[int] = []
        max_sim = np.zeros(len(pool))
        relevance, mmr = lam * pool_score, np.empty(len(pool))
        for _ in range(min(n, len(pool))):
            np.subtract(relevance, np.multiply(1 - lam, max_sim, out=mmr), out=mmr)
            j = int(mmr.argmax())
            chosen.append(j)
            np.maximum(max_sim, emb @ emb[j], out=max_sim)
            max_sim[j] = np.inf  # picked: its MMR is -inf from now on (1 - lam > 0)
        return pool[chosen].tolist()

    def reasons(self, row: int, content_reason: dict[str, Any] | None, terms: dict[str, float], sig: Signals,
                content_weight: float) -> list[dict[str, Any]]:
        """Structured reasons, the signal that added most to the score first; writers and "why?" read these."""
        b, cfg = self.b, self.cfg
        w = blend_weights(cfg, content_weight)
        ranked: list[tuple[float, dict[str, Any]]] = []
        weak = content_reason is not None and content_reason.get("similarity", 1.0) < MIN_REASON_SIMILARITY
        if content_reason and not weak:
            ranked.append((w.content * terms["content"], content_reason))
        if terms["item"] >= 0.2 and sig.item_sources is not None:
            source = self._item_source(row, sig)
            if source is not None:
                ranked.append((w.share("item") * terms["item"],
                               {"kind": "also_bought", "with": b.titles[source], "with_id": b.product_ids[source],
                                "strength": round(terms["item"], 3)}))
        if sig.als is not None and terms["als"] >= 0.25:
            ranked.append((w.share("als") * terms["als"], {"kind": "als", "strength": round(terms["als"], 3)}))
        rank = int(self.popularity_rank[row])
        if self.popularity[row] > 0 and rank <= max(10, len(b.titles) // 20):
            reason = {"kind": "popular", "rank": rank, "cluster": int(b.clusters[row]),
                      "buyers": int(b.products["popularity"].iat[row])}
            if cfg.popularity_half_life_days:
                reason["recent_days"] = cfg.popularity_half_life_days
            ranked.append((w.share("popularity") * terms["popularity"], reason))
        ranked.sort(key=lambda t: -t[0])
        out = [r for _, r in ranked]
        if not out:
            out.append(content_reason if content_reason else {"kind": "cluster", "cluster": int(b.clusters[row])})
        return out

    def _item_source(self, row: int, sig: Signals) -> int | None:
        """The shopper's product whose item-item weight towards ``row`` counts most."""
        nb = self.b.item_neighbours[sig.item_sources]
        hit = nb == row
        if not hit.any():
            return None
        contrib = np.where(hit, self.b.item_weights[sig.item_sources] * sig.item_source_weights[:, None], 0.0).sum(axis=1)
        j = int(np.argmax(contrib))
        return int(sig.item_sources[j]) if contrib[j] > 0 else None
