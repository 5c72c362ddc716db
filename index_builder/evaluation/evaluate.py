"""Offline evaluation on a time split: baselines, each model the hybrid blends, and the hybrid itself.

Protocol (fixed, so numbers compare across versions):

- train = every event before the cut-off; test = the "have" events (purchases, ratings) from the cut-off
  on. The default cut-off leaves the last 10% of the events for the test, or more (up to half) when
  that would evaluate fewer than ``MIN_TEST_USERS`` users (a ratings set whose last tenth is mostly new
  users' first ratings). Events without a timestamp cannot be placed on either side and are left out (counted).
- Evaluated users: those with a positive interaction in train and at least one test product they did
  not have in train (the truth: discovery). Products they had in train are never recommended. Users
  left out (no train history, nothing new) are counted. A labelled variant lets repeat purchases count.
- Tuning runs on a validation split carved from the end of train (a window as long as the test's),
  never on test: ALS regularisation and alpha, the EASE lambda, then the hybrid's blend settings.
- The hybrid is scored by the chat's own ranking (``Assistant.user_candidates`` + ``pick_scored``: what
  ``Assistant.user_top_n`` returns; the candidates are kept to try many blend weights on them) on a bundle assembled in memory from the train split (the assistant is imported inside the functions
  that run it, so ``index_builder`` does not import ``assistant`` at import time).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from index_builder.core.constants import (
    DEFAULT_EVENT_WEIGHTS,
    DEFAULT_HAD_TYPES,
    EVENT_TYPE,
    HAD,
    POPULARITY,
    PRODUCT_ID,
    PRODUCT_IDX,
    TS,
    USER_ID,
    USER_IDX,
    WEIGHT,
)
from index_builder.core.errors import InputError
from index_builder.evaluation.metrics import KS, ndcg_at_k, summarize
from index_builder.evaluation.ratings import rating_errors
from index_builder.evaluation.repeats import TifuKnn, orders, recency_frequency, top_frequency
from index_builder.scoring.shards import user_shards
from index_builder.stages import buy_again
from index_builder.stages.als import ALSParams, factor_matrix, train_als
from index_builder.stages.interactions import aggregate
from index_builder.stages.itemitem import DEFAULT_LAMBDA, MAX_ITEMS, TOP_K, ease_weights, gram_matrix, prune

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

MODELS = ("popularity", "random_in_cluster", "content", "als", "item_item", "trending", "hybrid")
# the all-items track (truth: everything bought in the test window): the field's repeat baselines, the buy-again
# model alone, the discovery list alone, and the chat's list (due reorders, then new products)
ALL_ITEMS_MODELS = ("top_frequency", "recency_frequency", "tifu_knn", "buy_again", "discovery", "hybrid")
TIFU_ALPHAS = (0.5, 0.7, 0.9, 1.0)
CHAT_N = 10  # the all-items track scores the chat's list as if it showed 10 new products (its share of reorders
# is a share of that: the chat's 5 get half as many), so that it is tuned and scored at the same size
REORDER_SHARES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
REORDER_PROBABILITIES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6)
DEFAULT_TEST_SHARE = 0.10  # of the events (not of the time span: a long-tailed history would leave a handful of users)
TEST_SHARES = (0.10, 0.15, 0.20, 0.25, 0.30, 0.40, 0.50)  # tried in turn until MIN_TEST_USERS are evaluated
MIN_TEST_USERS = 200  # below this an NDCG@10 moves by ~0.03 on chance alone (its standard error)


@dataclass
class EvalSettings:
    """What the evaluation needs besides the data; ``build`` fills it from its own config."""

    cutoff: str | None = None  # ISO date; default: the last 10% of the events (more when too few users): default_cutoff()
    seed: int = 42
    als: ALSParams = field(default_factory=ALSParams)
    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    had_types: tuple[str, ...] = DEFAULT_HAD_TYPES
    ease_lambda: float = DEFAULT_LAMBDA
    item_item_max_items: int = MAX_ITEMS
    item_item_top_k: int = TOP_K
    tune: bool = True
    recommender: dict[str, Any] | None = None  # blend settings to evaluate (or start tuning from); None: defaults
    als_grid: tuple[tuple[float, float], ...] = ((0.1, 1.0), (0.1, 10.0), (1.0, 1.0), (1.0, 10.0))  # (reg, alpha)
    ease_grid: tuple[float, ...] = (50.0, 100.0, 200.0, 400.0, 800.0)
    max_tune_users: int = 2000  # validation users the blend search scores per setting (UCI has ~1,000)
    max_test_users: int = 5000  # test users scored (a seeded sample beyond; UCI has 1,294): +-0.004 NDCG@10 at 5,000
    ease_tune_max_items: int = 4000  # the EASE lambda is tuned on the Gram of the most bought products only
    ks: tuple[int, ...] = KS
    processes: int | None = None  # processes that rank users at once (None: the cores this process may use)


@dataclass
class Split:
    """One time split, on the driver: what train holds and what each user then had."""

    name: str
    train_end: dt.datetime
    test_end: dt.datetime | None
    interactions: pd.DataFrame  # train (user, product) pairs: weight, purchased, had, last_ts, user_idx, product_idx
    users: pd.DataFrame  # user_id -> user_idx over train
    truth: dict[str, set[int]]  # product rows new to the user
    truth_repeat: dict[str, set[int]]  # every test product, repeats included
    left_out: dict[str, int]
    spark: Any = None  # the session ALS fits in
    _frame: Any = None
    buy_again: pd.DataFrame | None = None  # the buy-again table at train_end (a model of the window before)
    buy_again_info: dict[str, Any] = field(default_factory=dict)

    def train_frame(self) -> DataFrame:
        """The train pairs as a cached Spark frame (user_idx, product_idx, weight): what ALS fits on."""
        if self._frame is None:
            self._frame = self.spark.createDataFrame(self.interactions[[USER_IDX, PRODUCT_IDX, WEIGHT]]).cache()
        return self._frame

    def release(self) -> None:
        if self._frame is not None:
            self._frame.unpersist()


@dataclass
class Fitted:
    """The collaborative models fitted on one split's train part."""

    item_factors: np.ndarray | None
    user_factors: np.ndarray | None
    item_neighbours: np.ndarray | None
    item_weights: np.ndarray | None


# ---------------------------------------------------------------------------------------------------
# splitting (pandas, on the events the build collects for the bundle anyway)
# ---------------------------------------------------------------------------------------------------
def _to_datetime(value: Any) -> dt.datetime:
    ts = pd.Timestamp(value)
    return (ts.tz_convert("UTC") if ts.tzinfo else ts.tz_localize("UTC")).to_pydatetime()


def _utc(ts: pd.Series) -> pd.Series:
    return pd.to_datetime(ts, utc=True)


def time_bounds(events: pd.DataFrame) -> tuple[dt.datetime | None, dt.datetime | None, int]:
    """(first, last) event timestamps and the number of events without one."""
    dated = events[TS].dropna()
    if not len(dated):
        return None, None, len(events)
    ts = _utc(dated)
    return _to_datetime(ts.min()), _to_datetime(ts.max()), len(events) - len(dated)


def choose_cutoffs(lo: dt.datetime, hi: dt.datetime, cutoff: str | dt.datetime | None
                   ) -> tuple[dt.datetime, dt.datetime]:
    """(validation cut-off, test cut-off). The validation window is as long as the test window. ``cutoff``:
    a date given by the user (checked), the default's datetime (:func:`default_cutoff`), or None for the
    last ``DEFAULT_TEST_SHARE`` of the time span."""
    if isinstance(cutoff, dt.datetime):
        test_cut = cutoff
    elif cutoff:
        try:
            test_cut = _to_datetime(cutoff)
        except (ValueError, TypeError) as exc:
            raise InputError(f"--eval-cutoff {cutoff!r} is not a date (use YYYY-MM-DD)") from exc
    else:
        test_cut = lo + (hi - lo) * (1 - DEFAULT_TEST_SHARE)
    if not lo < test_cut <= hi:
        raise InputError(f"--eval-cutoff {test_cut:%Y-%m-%d} is outside the events' time span "
                         f"({lo:%Y-%m-%d} .. {hi:%Y-%m-%d}); pick a date inside it")
    val_cut = test_cut - (hi - test_cut)
    if val_cut <= lo + (test_cut - lo) / 2:  # keep at least half of train for the validation fit
        val_cut = lo + (test_cut - lo) * (1 - DEFAULT_TEST_SHARE)
    return val_cut, test_cut


def users_with_truth(events: pd.DataFrame, cut: dt.datetime, s: EvalSettings) -> int:
    """How many users a test split at ``cut`` evaluates (as :func:`make_split` counts them, without aggregating):
    a positive event before ``cut`` and a "have" event from it on for a product they did not have before."""
    ts = _utc(events[TS])
    before = (ts < cut).to_numpy()
    positive = events[EVENT_TYPE].map(s.event_weights).fillna(0).to_numpy() > 0
    had = events[EVENT_TYPE].isin(list(s.had_types)).to_numpy()
    users = set(events.loc[before & positive, USER_ID].astype(str))
    had_pairs = events.loc[before & had, [USER_ID, PRODUCT_ID]].astype(str).drop_duplicates()
    test = events.loc[(ts >= cut).to_numpy() & had, [USER_ID, PRODUCT_ID]].astype(str).drop_duplicates()
    test = test[test[USER_ID].isin(users)]
    new = test.merge(had_pairs, how="left", on=[USER_ID, PRODUCT_ID], indicator=True)
    return int(new.loc[new["_merge"] == "left_only", USER_ID].nunique())


def default_cutoff(events: pd.DataFrame, s: EvalSettings) -> tuple[dt.datetime, float, int]:
    """(cut-off, share of the dated events after it, users it evaluates): the last ``DEFAULT_TEST_SHARE`` of
    the events, or the first larger share of :data:`TEST_SHARES` that evaluates ``MIN_TEST_USERS`` users
    (the share with the most users when none does)."""
    ts = np.sort(_utc(events[TS].dropna()).to_numpy())
    best: tuple[dt.datetime, float, int] | None = None
    for share in TEST_SHARES:
        cut = _to_datetime(ts[min(len(ts) - 1, int(len(ts) * (1 - share)))])
        if cut <= _to_datetime(ts[0]):
            break
        n = users_with_truth(events, cut, s)
        if best is None or n > best[2]:
            best = (cut, share, n)
        if n >= MIN_TEST_USERS:
            return cut, share, n
    return best if best is not None else (_to_datetime(ts[-1]), 0.0, 0)


def make_split(name: str, events: pd.DataFrame, products: pd.DataFrame, train_end: dt.datetime,
               test_end: dt.datetime | None, s: EvalSettings, spark: Any = None) -> Split:
    """Train interactions before ``train_end``; truth = "have" events in [train_end, test_end).

    ``events``: the canonical events (user_id, product_id, event_type, value, ts); ``products``: the
    bundle's product table, whose row is the product_idx. ``spark`` is where ALS will fit the train pairs.
    """
    ts = _utc(events[TS])
    train_mask = (ts < train_end).to_numpy()
    test_mask = (ts >= train_end).to_numpy()  # undated events (NaT) are on neither side
    if test_end is not None:
        test_mask &= (ts < test_end).to_numpy()
    row_of = pd.Series(np.arange(len(products)), index=products[PRODUCT_ID].astype(str))
    inter = aggregate(events[train_mask], s.event_weights, tuple(s.had_types))
    inter[PRODUCT_IDX] = inter[PRODUCT_ID].map(row_of)
    inter = inter[inter[PRODUCT_IDX].notna()].astype({PRODUCT_IDX: "int64"})
    user_ids = np.sort(inter.loc[inter[WEIGHT] > 0, USER_ID].unique())
    users_pdf = pd.DataFrame({USER_ID: user_ids, USER_IDX: np.arange(len(user_ids), dtype=np.int32)})
    inter[USER_IDX] = inter[USER_ID].map(pd.Series(users_pdf[USER_IDX].to_numpy(), index=user_ids))
    test = events[test_mask]
    test = test[test[EVENT_TYPE].isin(list(s.had_types))]
    test_pdf = pd.DataFrame({USER_ID: test[USER_ID].astype(str), PRODUCT_IDX: test[PRODUCT_ID].astype(str).map(row_of)})
    test_pdf = test_pdf.dropna().drop_duplicates()
    with_history = set(user_ids)
    had = inter[inter[HAD].astype(bool)].groupby(USER_ID)[PRODUCT_IDX].agg(set).to_dict()
    truth: dict[str, set[int]] = {}
    truth_repeat: dict[str, set[int]] = {}
    left = {"no_train_history": 0, "nothing_new": 0}
    for uid, rows in test_pdf.groupby(USER_ID)[PRODUCT_IDX]:
        uid, rows = str(uid), {int(r) for r in rows}
        if uid not in with_history:
            left["no_train_history"] += 1
            continue
        truth_repeat[uid] = rows
        new = rows - had.get(uid, set())
        if new:
            truth[uid] = new
        else:
            left["nothing_new"] += 1
    log.info("evaluate: %s split at %s: %d train pairs, %d users evaluated, left out %s",
             name, f"{train_end:%Y-%m-%d %H:%M}", len(inter), len(truth), left)
    inter = inter[inter[USER_IDX].notna()].astype({USER_IDX: "int32"}).reset_index(drop=True)
    return Split(name, train_end, test_end, inter, users_pdf, truth, truth_repeat, left, spark=spark)


# ---------------------------------------------------------------------------------------------------
# fitting (Spark for ALS, the driver for EASE)
# ---------------------------------------------------------------------------------------------------
def fit_als(split: Split, n_products: int, params: ALSParams) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    if len(split.users) < 2:
        return None, None
    model = train_als(split.train_frame(), params)
    return (factor_matrix(model.itemFactors, n_products, params.rank, name="item factors"),
            factor_matrix(model.userFactors, len(split.users), params.rank, name="user factors"))


def with_buy_again(split: Split, events: pd.DataFrame, s: EvalSettings, window: dt.timedelta,
                   lo: dt.datetime) -> Split:
    """The split with its buy-again table: a model fitted on the window before ``split.train_end`` (features
    from before it, labels in it), predicting at ``train_end``; none when that window starts before the
    events do or holds too few repeat orders (a ratings set: nobody rates a movie twice)."""
    start = split.train_end - window
    if start <= lo:
        split.buy_again_info = {"skipped": f"the window before {split.train_end:%Y-%m-%d} starts before the events"}
        return split
    model = buy_again.fit(events, tuple(s.had_types), start, split.train_end, seed=s.seed)
    if model is None:
        split.buy_again_info = {"skipped": f"fewer than {buy_again.MIN_POSITIVES} repeat orders in "
                                           f"{start:%Y-%m-%d} .. {split.train_end:%Y-%m-%d}"}
        return split
    split.buy_again = buy_again.predict_table(model, events, tuple(s.had_types), split.train_end)
    split.buy_again_info = model.fitted_on
    return split


# ---------------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------------
CANDIDATE_KEYS = 12
CONTENT_BLOCK = 16_000_000  # similarities the content model computes at once (64 MB of float32)
RECENT = 5  # the recent products a user's content and random-in-cluster baselines start from
CONTENT_MARGIN = 1e-4  # cosines this close to the k-th are scored again exactly (float32 noise is ~1e-6)


class Scorer:
    """A train-split bundle (assembled in memory) and the chat's assistant on it; ranks for every model."""

    def __init__(self, split: Split, products: pd.DataFrame, embeddings: np.ndarray, index: Any,
                 fitted: Fitted, recommender: dict[str, Any] | None, seed: int):
        from assistant.chat import Assistant
        from index_builder.core.bundle_reader import assemble_bundle

        inter = split.interactions
        pop = inter[inter[WEIGHT] > 0].groupby(PRODUCT_IDX)[USER_ID].nunique()
        prods = products.copy()
        prods[POPULARITY] = pop.reindex(range(len(prods)), fill_value=0).to_numpy(dtype=np.int64)
        manifest = {"version": f"eval-{split.name}", "recommender": recommender or {}}
        self.bundle = assemble_bundle(
            folder=Path("."), manifest=manifest, products=prods, embeddings=embeddings, index=index,
            users=split.users, interactions=inter, item_factors=fitted.item_factors, user_factors=fitted.user_factors,
            item_neighbours=fitted.item_neighbours, item_weights=fitted.item_weights, buy_again=split.buy_again)
        self.assistant = Assistant(self.bundle, encode=_no_text)
        # the seeds' nearest products, shared by every config tried: the vectors and the index never change here
        self._neighbours: dict[tuple, Any] = {}
        self.assistant.recommender.neighbours_memo = self._neighbours
        self.split = split
        self.seed = seed
        self.n = len(prods)
        # the hybrid's filtered candidates and their terms, by candidate_key() and then by (user, k, repeat):
        # the blend search tries many weights on the same candidates; the CANDIDATE_KEYS last used keys are kept
        # (a coordinate-search round visits 8 with the default grid: ~15 MB each on 2,000 users)
        self._candidates: dict[Any, dict[tuple[str, int, bool], Any]] = {}
        self._candidates_of: Any = None  # the bundle they were computed on
        self._key_of: Any = None  # the recommender whose candidate key ``_key`` is
        self._key: Any = None
        self._vectors32: np.ndarray | None = None  # the content baseline's float32 vectors

    def configure(self, recommender: dict[str, Any]) -> None:
        from assistant.config import RecommenderConfig
        from assistant.recommender import Recommender

        cfg = RecommenderConfig.from_manifest({"recommender": recommender})
        self.assistant.recommender = Recommender(self.bundle, _no_text, cfg)
        self.assistant.recommender.neighbours_memo = self._neighbours
        self.assistant.cfg = cfg

    # -- the models ---------------------------------------------------------------------------------
    def _top(self, scores: np.ndarray, uid: str, k: int, repeat: bool) -> list[int]:
        from assistant.recommender import top_k

        s = np.asarray(scores, dtype=np.float64).copy()
        if not repeat:
            had = list(self.bundle.had.get(uid, ()))
            s[had] = -np.inf
        picks = top_k(s, k)
        return [int(r) for r in picks if np.isfinite(s[r])]

    def _scored_candidates(self, uid: str, k: int, repeat: bool) -> Any:
        """(rows, terms, request) of the hybrid for this user (None: no candidate), computed once per candidate key."""
        if self._candidates_of is not self.bundle:
            self._candidates, self._candidates_of = {}, self.bundle
        rec = self.assistant.recommender
        if self._key_of is not rec:  # one key per configuration (computing it costs as much as a cache hit)
            self._key_of, self._key = rec, rec.cfg.candidate_key()
        key = self._key
        cache = self._candidates.pop(key, {})
        self._candidates[key] = cache  # the most recently used last
        while len(self._candidates) > CANDIDATE_KEYS:
            del self._candidates[next(iter(self._candidates))]
        if (uid, k, repeat) not in cache:
            cache[(uid, k, repeat)] = self.assistant.user_candidates(uid, k, include_had=repeat)
        return cache[(uid, k, repeat)]

    def _recent(self, uid: str, n: int = RECENT) -> np.ndarray:
        rows, _ = self.bundle.profile.get(uid, (np.zeros(0, dtype=np.int64), None))
        return rows[:n]

    def rank(self, model: str, uid: str, k: int, repeat: bool = False) -> list[int]:
        b = self.bundle
        rec = self.assistant.recommender
        if model == "hybrid":
            from assistant.chat import pick_scored

            return [r for r, _ in pick_scored(rec, self._scored_candidates(uid, k, repeat))]
        if model == "buy_again":  # the user's past products by the buy-again model alone
            return b.reorders.of(uid)[0][:k].tolist() if b.reorders is not None else []
        if model == "chat":  # the chat's list for a list of CHAT_N (Assistant.user_list): reorders, then new products
            from assistant.recommender import with_reorders

            discovery = self.rank("hybrid", uid, max(k, CHAT_N))
            due = rec.due(self.assistant.user_request(uid, CHAT_N))
            return [r for r, _ in with_reorders(due, discovery, CHAT_N, rec.cfg.reorder_share,
                                                rec.cfg.reorder_min_probability)][:k]
        if model == "popularity":
            return self._top(b.popularity, uid, k, repeat)
        if model == "trending":
            return self._top(rec.popularity, uid, k, repeat)
        if model == "als":
            als = rec.als_scores(uid)
            return self._top(als, uid, k, repeat) if als is not None else []
        if model == "item_item":
            item = rec.item_scores(uid, recency=False).item  # plain binary EASE
            return self._top(item, uid, k, repeat) if item is not None else []
        if model == "content":
            scores = next(self._content_scores([uid]))[1]
            return self._content_top(scores, uid, k, repeat) if scores is not None else []
        recent = self._recent(uid)
        if not len(recent):
            return []
        if model == "random_in_cluster":  # the tutorials: random products from the clusters of the recent items
            rng = np.random.default_rng([self.seed, zlib.crc32(uid.encode())])
            in_pool = np.zeros(self.n, dtype=bool)
            in_pool[np.concatenate([b.members[int(c)] for c in np.unique(b.clusters[recent])])] = True
            return self._top(rng.random(self.n) * in_pool, uid, k, repeat)
        raise ValueError(f"unknown model {model!r}")

    def _content_scores(self, users: list[str]) -> Iterable[tuple[str, np.ndarray | None]]:
        """(user, each product's best cosine to the user's recent products; None: no history), in order.

        The similarities of a block of users come from one matrix product (one per user read the whole
        embedding matrix for five columns: 23 ms a user at 100,000 products)."""
        if self._vectors32 is None:  # a big bundle's float16 vectors: one float32 copy makes the products 4x faster
            self._vectors32 = np.asarray(self.bundle.embeddings, dtype=np.float32)
        emb = self._vectors32
        block = max(1, CONTENT_BLOCK // (RECENT * max(1, self.n)))
        for lo in range(0, len(users), block):
            part = users[lo:lo + block]
            recent = [self._recent(u) for u in part]
            sims = np.asarray(emb[np.concatenate(recent)], dtype=np.float32) @ emb.T if any(map(len, recent)) else None
            at = 0
            for u, rows in zip(part, recent, strict=True):
                yield u, sims[at:at + len(rows)].max(axis=0) if len(rows) else None
                at += len(rows)

    def _content_top(self, scores: np.ndarray, uid: str, k: int, repeat: bool) -> list[int]:
        """The content baseline's top ``k``, the same on every CPU and however the users were split up.

        The blocked float32 product of :meth:`_content_scores` computes a pair's cosine with a BLAS kernel
        that depends on the pair's place in the block (and on the CPU's instruction set), so near-equal
        cosines (two products with the same text) could swap places between a run in one process and one
        in two. The blocked scores only shortlist: every product within ``CONTENT_MARGIN`` of the k-th is
        scored again exactly (float32 products are exact in float64, summed in one fixed order), and ties
        go to the lower row."""
        s = np.asarray(scores, dtype=np.float64).copy()
        if not repeat:
            s[list(self.bundle.had.get(uid, ()))] = -np.inf
        finite = np.isfinite(s)
        if not finite.any():
            return []
        from assistant.recommender import top_k

        kth = s[top_k(s, k)[-1]]
        short = np.flatnonzero(finite & (s >= kth - CONTENT_MARGIN))
        recent = np.asarray(self._vectors32[self._recent(uid)], dtype=np.float64)
        exact = np.einsum("ij,kj->ik", recent, np.asarray(self._vectors32[short], dtype=np.float64),
                          optimize=False).max(axis=0)
        order = np.lexsort((short, -exact))[:k]
        return [int(r) for r in short[order]]

    def per_user(self, model: str, users: Iterable[str], k: int = 10) -> np.ndarray:
        """NDCG@k of each user, in the order given."""
        truth = self.split.truth
        return np.array([ndcg_at_k(self.rank(model, u, k), truth[u], k) for u in users])

    def rankings(self, model: str, users: Iterable[str], k: int = max(KS), repeat: bool = False) -> list[list[int]]:
        """Each user's top ``k`` rows by ``model``, in the order given."""
        if model == "content":
            return [self._content_top(v, u, k, repeat) if v is not None else []
                    for u, v in self._content_scores(list(users))]
        return [self.rank(model, u, k, repeat) for u in users]

    def score(self, model: str, users: Iterable[str] | None = None, *, k: int = max(KS), repeat: bool = False,
              ks: Iterable[int] = KS, run: Callable[[tuple], list[list[int]]] | None = None) -> dict[str, float]:
        """The metrics of ``model`` over ``users`` (default: every user with a truth). ``run``: the
        :func:`~index_builder.scoring.shards.user_shards` runner of :meth:`rankings` over these same users, to rank them in parallel."""
        truth = self.split.truth_repeat if repeat else self.split.truth
        users = list(truth) if users is None else list(users)
        ranked = run((model, k, repeat)) if run is not None else self.rankings(model, users, k, repeat)
        return summarize(dict(zip(users, ranked, strict=True)), {u: truth[u] for u in users}, n_catalog=self.n, ks=ks)


def _no_text(texts):
    raise RuntimeError("the offline evaluation embeds no text")


# ---------------------------------------------------------------------------------------------------
# tuning on the validation split
# ---------------------------------------------------------------------------------------------------
def blend_grid(window_days: float) -> dict[str, list[Any]]:
    """The values tried for each blend setting; half-lives scale with the test window's length."""
    w = max(window_days, 1.0)
    return {
        # w_item stays 1: the collaborative weights only matter relative to each other (blend divides by their sum)
        "w_als": [0.0, 0.15, 0.3, 0.5, 1.0],
        "w_popularity": [0.0, 0.25, 0.5, 1.0, 1.5],
        "popularity_half_life_days": [None, round(w / 4, 1), round(w / 2, 1), round(w, 1), round(3 * w, 1)],
        "history_half_life_days": [None, round(w, 1), round(2 * w, 1), round(6 * w, 1)],
        "w_content_history": [0.0, 0.05, 0.1, 0.2],
        "mmr_lambda": [1.0, 0.9, 0.75],
    }


def setting_key(settings: dict[str, Any]) -> tuple:
    """One blend setting as a hashable key (a trace row's score left out)."""
    return tuple(sorted((k, v) for k, v in settings.items() if k != "ndcg@10"))


def coordinate_search(objective: Callable[[dict[str, Any]], np.ndarray], start: dict[str, Any],
                      grid: dict[str, list[Any]], rounds: int = 3, z: float = 1.0
                      ) -> tuple[dict[str, Any], float, list[dict]]:
    """Improve one setting at a time over its grid; stop when a round changes nothing.

    ``objective`` returns one score per user (the same users every call). A change is kept only when
    its mean per-user gain exceeds ``z`` standard errors of the paired differences: a few hundred
    users make NDCG@10 move by chance, and a setting chosen on noise does not carry over to the test.
    A setting met again in a later round (a round that changes nothing revisits most of the previous
    one's) is not scored again: ``objective`` is deterministic. The trace lists every setting visited.
    """
    scored: dict[tuple, np.ndarray] = {}

    def score(settings: dict[str, Any]) -> np.ndarray:
        key = setting_key(settings)
        if key not in scored:
            scored[key] = np.asarray(objective(settings), dtype=np.float64)
        return scored[key]

    best = dict(start)
    current = score(best)
    trace = [{**best, "ndcg@10": round(float(current.mean()), 5)}]
    for _ in range(rounds):
        changed = False
        for name, values in grid.items():
            for value in values:
                if value == best[name]:
                    continue
                trial = {**best, name: value}
                got = score(trial)
                trace.append({**trial, "ndcg@10": round(float(got.mean()), 5)})
                gain = got - current
                se = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else 0.0
                if gain.mean() > 0 and gain.mean() > z * se:
                    best, current, changed = trial, got, True
        if not changed:
            break
    return best, float(current.mean()), trace


def _sample(users: list[str], n: int, seed: int) -> list[str]:
    if len(users) <= n:
        return users
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(users, size=n, replace=False).tolist())


# ---------------------------------------------------------------------------------------------------
# the whole evaluation
# ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def spent(costs: dict[str, float], part: str) -> Iterator[None]:
    """Add the seconds the block takes to ``costs[part]`` (the manifest's ``metrics.cost_s``)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        costs[part] = round(costs.get(part, 0.0) + time.perf_counter() - start, 2)


@dataclass
class EvalResult:
    metrics: dict[str, Any]  # the manifest's "metrics" section
    als: ALSParams  # chosen on validation: what the published bundle is fitted with
    ease_lambda: float
    recommender: dict[str, Any]  # the blend settings chosen on validation (manifest["recommender"])
    span: TimeSpan | None = None  # where the splits were cut (the build's buy-again model uses the test window)


def evaluate(spark: Any, events: pd.DataFrame, products_pdf: pd.DataFrame, embeddings: np.ndarray,
             index: Any, s: EvalSettings, say: Callable[..., None] = log.info,
             als_chosen: Callable[[ALSParams], None] | None = None) -> EvalResult | None:
    """Tune on validation, score every model on test; None (with a logged reason) when there is no time split.

    ``events``: the canonical events on the driver (the build collects them for the bundle); the splits are
    made there, ALS fits in ``spark``. ``als_chosen(params)`` is called as soon as the ALS parameters are
    settled, so that the caller can start its final fit while the blend search works in Python.

    The Spark fits overlap the driver's Python work: the ALS grid runs while the EASE lambdas are scored,
    and the test split's ALS fit while the blend is searched (in :func:`~index_builder.scoring.shards.user_shards` processes).
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-als") as background:
        return _evaluate(spark, events, products_pdf, embeddings, index, s, say, als_chosen, background)


def _evaluate(spark: Any, events: pd.DataFrame, products_pdf: pd.DataFrame, embeddings: np.ndarray, index: Any,
              s: EvalSettings, say: Callable[..., None], als_chosen: Callable[[ALSParams], None] | None,
              background: ThreadPoolExecutor) -> EvalResult | None:
    """The stages in order: split, tune (item-item, ALS, blend) on validation, score the test split, report.

    The test split's ALS fit (and the caller's final fit, ``als_chosen``) starts as soon as the ALS
    parameters are settled: during tuning when there is tuning, else before the test split is scored.
    """
    costs: dict[str, float] = {}
    with spent(costs, "split"):
        span = time_split(events, s, say)
        if span is None:
            return None
        chosen = given_choices(s, span)
        test = make_split("test", events, products_pdf, span.test_cut, None, s, spark)

    def start_test_fit(params: ALSParams) -> Future:
        fit = background.submit(fit_als, test, len(products_pdf), params)
        if als_chosen is not None:
            als_chosen(params)
        return fit

    window = span.hi - span.test_cut
    with spent(costs, "buy-again models"):
        with_buy_again(test, events, s, window, span.lo)
    test_fit: Future | None = None
    if s.tune:
        with spent(costs, "split"):
            val = make_split("validation", events, products_pdf, span.val_cut, span.test_cut, s, spark)
        with spent(costs, "buy-again models"):
            with_buy_again(val, events, s, window, span.lo)
        chosen, test_fit = tune_on_validation(val, products_pdf, embeddings, index, chosen, span.window, s, say,
                                              start_test_fit, events, costs)
        val.release()
    if test_fit is None:  # not tuned: the given parameters
        test_fit = start_test_fit(chosen.als)
    with spent(costs, "score the test split"):
        scored = score_test(test, test_fit, products_pdf, embeddings, index, chosen, s, say, events)
    test.release()
    metrics = report_metrics(span, test, scored, chosen, s)
    with spent(costs, "RMSE of ratings"):
        ratings = rating_errors(spark, events, span.val_cut, span.test_cut, seed=s.seed, say=say) if spark else None
    if ratings is not None:  # explicit ratings: how well the stars themselves are predicted
        metrics["ratings"] = ratings
    else:  # a purchase log: nothing was fitted
        costs.pop("RMSE of ratings")
    metrics["cost_s"] = costs
    say("evaluate: seconds by part: %s", ", ".join(f"{k} {v:.1f}" for k, v in metrics["cost_s"].items()))
    return EvalResult(metrics=metrics, als=chosen.als, ease_lambda=chosen.ease_lambda, recommender=chosen.recommender,
                      span=span)


# -- the stages ---------------------------------------------------------------------------------------
@dataclass
class TimeSpan:
    """The events' time span and the two cut-offs in it (validation, test)."""

    lo: dt.datetime
    hi: dt.datetime
    undated: int  # events without a timestamp, on neither side
    val_cut: dt.datetime
    test_cut: dt.datetime

    @property
    def window(self) -> float:
        """The test window's length in days."""
        return (self.hi - self.test_cut).total_seconds() / 86400


def time_split(events: pd.DataFrame, s: EvalSettings, say: Callable[..., None]) -> TimeSpan | None:
    """Stage "split": where the validation and the test splits start; None (said why) when the events carry no time."""
    lo, hi, undated = time_bounds(events)
    if lo is None or lo == hi:
        say("evaluate: skipped: the events carry no usable timestamps, so there is no time split")
        return None
    cutoff: str | dt.datetime | None = s.cutoff
    if not cutoff:
        cutoff, share, n = default_cutoff(events, s)
        say("evaluate: default cut-off %s: the last %.0f%% of the dated events, %d users with a truth%s", f"{cutoff:%Y-%m-%d %H:%M}",
            100 * share, n, "" if n >= MIN_TEST_USERS else f" (fewer than {MIN_TEST_USERS} at every share tried)")
    val_cut, test_cut = choose_cutoffs(lo, hi, cutoff)
    if val_cut != test_cut - (hi - test_cut):  # a window as long as the test's would leave too little to fit on
        before = events[(_utc(events[TS]) < test_cut).to_numpy()]
        val_cut, share, n = default_cutoff(before, s)
        say("evaluate: validation cut-off %s: the last %.0f%% of the events before the test, %d users with a truth",
            f"{val_cut:%Y-%m-%d %H:%M}", 100 * share, n)
    return TimeSpan(lo, hi, undated, val_cut, test_cut)


@dataclass
class Choices:
    """What the test split is scored with (and the build publishes): given, or chosen on validation."""

    als: ALSParams
    ease_lambda: float
    recommender: dict[str, Any]  # the blend settings
    tuning: dict[str, Any]  # metrics["tuning"], less its "chosen"
    baselines: dict[str, float] = field(default_factory=dict)  # the repeat baselines' half-life and TIFU alpha


def given_choices(s: EvalSettings, span: TimeSpan) -> Choices:
    """The settings' own choices, before any tuning."""
    from assistant.config import RecommenderConfig

    rec_cfg = RecommenderConfig.from_manifest({"recommender": s.recommender}).tuned()
    tuning: dict[str, Any] = {"split": {"train_end": span.val_cut.isoformat(), "test_end": span.test_cut.isoformat()}}
    return Choices(s.als, s.ease_lambda, rec_cfg, tuning, {"half_life_days": round(4 * span.window, 1), "tifu_alpha": 0.9})


@dataclass
class Validation:
    """The validation split being tuned on: the users scored, the Gram, the scorer and the ALS grid's fits."""

    split: Split
    users: list[str]  # a seeded sample of the users with a truth
    gram: Any  # the item-item Gram of the most bought products
    scorer: Scorer
    als_fits: dict[tuple[float, float], Future]  # (reg, alpha) -> (item factors, user factors), fitting in Spark
    n_products: int


def tune_on_validation(val: Split, products_pdf: pd.DataFrame, embeddings: np.ndarray, index: Any, given: Choices,
                       window: float, s: EvalSettings, say: Callable[..., None],
                       start_test_fit: Callable[[ALSParams], Future], events: pd.DataFrame,
                       costs: dict[str, float] | None = None) -> tuple[Choices, Future | None]:
    """The tuning stages in order: item-item, ALS, the blend. Returns the choices and the test split's ALS fit,
    started (``start_test_fit``) as soon as ALS is chosen; (the given choices, None) with too few validation users."""
    tuning = dict(given.tuning)
    if len(val.truth) < 10:
        tuning["skipped"] = f"only {len(val.truth)} validation users; defaults kept"
        say("evaluate: tuning skipped (%s)", tuning["skipped"])
        return replace(given, tuning=tuning), None
    costs = {} if costs is None else costs
    with spent(costs, "tune item-item"):  # the ALS grid fits in Spark meanwhile (start_validation submits it)
        v = start_validation(val, products_pdf, embeddings, index, given.recommender, s)
        tuning["users"] = len(v.users)
        item_item = tune_item_item(v, given.recommender, given.ease_lambda, s, say)
    if item_item.scores is not None:
        tuning["item_item_lambda"] = item_item.scores
    with spent(costs, "tune ALS"):  # what the grid's fits still need after the item-item tuning, then scoring
        als = tune_als(v, given.recommender, s, say)
    tuning["als"] = als.scores
    test_fit = start_test_fit(als.params)  # fits in Spark while the blend is searched here
    with spent(costs, "tune the blend"):
        blend = tune_blend(v, item_item, als, given.recommender, window, s, say)
    tuning["blend"] = blend.record
    with spent(costs, "tune reorders"):
        recommender, tuning["reorders"] = tune_reorders(v, blend.recommender, s, say)
    with spent(costs, "tune repeat baselines"):
        baselines, tuning["repeat_baselines"] = tune_repeat_baselines(val, events, products_pdf, window, s, say)
    return Choices(als.params, item_item.ease_lambda, recommender, tuning, baselines), test_fit


def _row_of(products_pdf: pd.DataFrame) -> dict[str, int]:
    """product_id -> bundle row."""
    return dict(zip(products_pdf[PRODUCT_ID].astype(str), range(len(products_pdf)), strict=True))


def _ndcg_of(lists: dict[str, list[int]] | list[list[int]], users: list[str], truth: dict[str, set[int]],
             k: int = 10) -> np.ndarray:
    ranked = lists if isinstance(lists, list) else [lists[u] for u in users]
    return np.array([ndcg_at_k(r, truth[u], k) for r, u in zip(ranked, users, strict=True)])


def tune_reorders(v: Validation, rec_cfg: dict[str, Any], s: EvalSettings, say: Callable[..., None],
                  z: float = 1.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stage "tune reorders": the share of a known customer's list given to due reorders and the buy-again
    probability that makes one due, best on validation's all-items NDCG@10 (the chat's list,
    :func:`~assistant.recommender.with_reorders`, on the chosen blend's new products). Reorders are kept only
    when they gain more than ``z`` standard errors over none; no buy-again table: none."""
    from assistant.recommender import with_reorders

    off = {**rec_cfg, "reorder_share": 0.0}
    if v.split.buy_again is None:
        return off, {"skipped": v.split.buy_again_info.get("skipped", "no buy-again table"), "chosen": off["reorder_share"]}
    truth = v.split.truth_repeat
    users = _sample(sorted(truth), s.max_tune_users, s.seed)
    scorer = v.scorer
    scorer.configure(rec_cfg)
    rec = scorer.assistant.recommender
    discovery = scorer.rankings("hybrid", users, CHAT_N)
    due = [rec.due(scorer.assistant.user_request(u, CHAT_N)) for u in users]
    scores: dict[tuple[float, float], np.ndarray] = {}
    for share in REORDER_SHARES:
        for p in REORDER_PROBABILITIES if share > 0 else REORDER_PROBABILITIES[:1]:
            lists = [[r for r, _ in with_reorders(d, disc, CHAT_N, share, p)][:10]
                     for d, disc in zip(due, discovery, strict=True)]
            scores[(share, p)] = _ndcg_of(lists, users, truth)
    none = scores[(0.0, REORDER_PROBABILITIES[0])]
    (share, p), best = max(scores.items(), key=lambda kv: (kv[1].mean(), -kv[0][0], kv[0][1]))
    gain = best - none
    se = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else 0.0
    if not (gain.mean() > 0 and gain.mean() > z * se):
        share, p, best = 0.0, REORDER_PROBABILITIES[0], none
    record = {"users": len(users), "model": v.split.buy_again_info, "ndcg@10": round(float(best.mean()), 5),
              "ndcg@10_none": round(float(none.mean()), 5), "share": share, "min_probability": p,
              "grid": [{"share": a, "min_probability": b, "ndcg@10": round(float(x.mean()), 5)} for (a, b), x in scores.items()]}
    say("evaluate: reorders on validation (all items, %d users): share %s, probability >= %s -> ndcg@10 %.4f "
        "(none: %.4f)", len(users), share, p, best.mean(), none.mean())
    return {**rec_cfg, "reorder_share": share, "reorder_min_probability": p}, record


def tune_repeat_baselines(val: Split, events: pd.DataFrame, products_pdf: pd.DataFrame, window: float,
                          s: EvalSettings, say: Callable[..., None]) -> tuple[dict[str, float], dict[str, Any]]:
    """The recency-weighted frequency's half-life and TIFU-KNN's alpha, best on validation's all-items NDCG@10."""
    truth = val.truth_repeat
    users = _sample(sorted(truth), s.max_tune_users, s.seed)
    o = orders(events, tuple(s.had_types), val.train_end, _row_of(products_pdf))
    w = max(window, 1.0)
    lives = {hl: float(_ndcg_of(recency_frequency(o, val.train_end, hl, users, 10), users, truth).mean())
             for hl in (round(w / 4, 1), round(w, 1), round(4 * w, 1), round(16 * w, 1))}
    by_alpha = TifuKnn(o, len(products_pdf)).rankings(TIFU_ALPHAS, users, 10)
    alphas = {a: float(_ndcg_of(lists, users, truth).mean()) for a, lists in by_alpha.items()}
    chosen = {"half_life_days": max(lives, key=lives.get), "tifu_alpha": max(alphas, key=alphas.get)}
    say("evaluate: repeat baselines on validation: half-life %s days, TIFU-KNN alpha %s", chosen["half_life_days"],
        chosen["tifu_alpha"])
    return chosen, {"half_life_days": {str(k): round(v, 5) for k, v in lives.items()},
                    "tifu_alpha": {str(k): round(v, 5) for k, v in alphas.items()}, "chosen": chosen}


def start_validation(val: Split, products_pdf: pd.DataFrame, embeddings: np.ndarray, index: Any,
                     rec_cfg: dict[str, Any], s: EvalSettings) -> Validation:
    """The tuning's shared state; the ALS grid is submitted here, before the EASE lambdas are scored."""
    n = len(products_pdf)
    tune_users = _sample(sorted(val.truth), s.max_tune_users, s.seed)
    # each lambda tried inverts the Gram: 30 s at 10,000 products, 2 s at 4,000
    gram = gram_matrix(val.interactions, max_items=min(s.item_item_max_items, s.ease_tune_max_items))
    base = Fitted(None, None, None, None)
    scorer = Scorer(val, products_pdf, embeddings, index, base, rec_cfg, s.seed)
    # the ALS grid fits in Spark while the EASE lambdas are scored here (submitted together, the small
    # jobs of the four fits also fill each other's scheduling gaps)
    grid_pool = ThreadPoolExecutor(max_workers=len(s.als_grid), thread_name_prefix="als-grid")
    grid_fits = {ra: grid_pool.submit(fit_als, val, n, ALSParams(
        rank=s.als.rank, reg_param=ra[0], alpha=ra[1], max_iter=s.als.max_iter, seed=s.seed)) for ra in s.als_grid}
    grid_pool.shutdown(wait=False)
    return Validation(val, tune_users, gram, scorer, grid_fits, n)


@dataclass
class ItemItemChoice:
    """What "tune item-item" chose."""

    ease_lambda: float
    neighbours: np.ndarray | None  # the pruned EASE weights at that lambda
    weights: np.ndarray | None
    scores: dict[str, float] | None  # validation NDCG@10 by lambda tried; None: none was tried


def tune_item_item(v: Validation, rec_cfg: dict[str, Any], lam: float, s: EvalSettings,
                   say: Callable[..., None]) -> ItemItemChoice:
    """Stage "tune item-item": the EASE lambda of ``s.ease_grid`` best on validation (ties: the smaller);
    ``lam`` when there is nothing to try."""
    gram, n, scorer = v.gram, v.n_products, v.scorer
    if not (len(gram.rows) >= 2 and s.ease_grid):
        nb, wt = prune(ease_weights(gram.matrix, lam), gram.rows, n, s.item_item_top_k)
        return ItemItemChoice(lam, nb, wt, None)
    ease_scores: dict[float, float] = {}
    best: tuple | None = None  # ((ndcg, -lambda), lambda, its pruned weights): the best kept, not all five
    for lam_ in s.ease_grid:
        pruned = prune(ease_weights(gram.matrix, lam_), gram.rows, n, s.item_item_top_k)
        scorer.bundle = _with(scorer.bundle, item_neighbours=pruned[0], item_weights=pruned[1])
        scorer.configure(rec_cfg)
        ease_scores[lam_] = scorer.score("item_item", v.users, ks=(10,))["ndcg@10"]
        if best is None or (ease_scores[lam_], -lam_) > best[0]:
            best = ((ease_scores[lam_], -lam_), lam_, pruned)
    assert best is not None
    lam, (nb, wt) = best[1], best[2]
    scores = {str(k): score for k, score in ease_scores.items()}
    say("evaluate: EASE lambda on validation %s -> %s", scores, lam)
    return ItemItemChoice(lam, nb, wt, scores)


@dataclass
class ALSChoice:
    """What "tune ALS" chose."""

    params: ALSParams
    item_factors: np.ndarray | None  # the grid's fit with those parameters
    user_factors: np.ndarray | None
    scores: list[dict[str, float]]  # validation NDCG@10 of each (reg_param, alpha) of the grid


def tune_als(v: Validation, rec_cfg: dict[str, Any], s: EvalSettings, say: Callable[..., None]) -> ALSChoice:
    """Stage "tune ALS": the (regParam, alpha) of ``s.als_grid`` best on validation, from the grid's fits."""
    scorer = v.scorer
    als_scores = {}
    fits = {ra: future.result() for ra, future in v.als_fits.items()}
    for reg, alpha in s.als_grid:
        scorer.bundle = _with(scorer.bundle, item_factors=fits[(reg, alpha)][0],
                              user_factors=fits[(reg, alpha)][1])
        scorer.configure(rec_cfg)
        als_scores[(reg, alpha)] = scorer.score("als", v.users, ks=(10,))["ndcg@10"]
    best_reg, best_alpha = max(als_scores, key=lambda k: als_scores[k])
    als = ALSParams(rank=s.als.rank, reg_param=best_reg, alpha=best_alpha, max_iter=s.als.max_iter, seed=s.seed)
    scores = [{"reg_param": r, "alpha": a, "ndcg@10": score} for (r, a), score in als_scores.items()]
    say("evaluate: ALS on validation %s -> regParam %s alpha %s", scores, best_reg, best_alpha)
    item_f, user_f = fits[(best_reg, best_alpha)]
    return ALSChoice(als, item_f, user_f, scores)


@dataclass
class BlendChoice:
    """What "tune the blend" chose."""

    recommender: dict[str, Any]  # the blend settings chosen
    record: dict[str, Any]  # metrics["tuning"]["blend"]


def tune_blend(v: Validation, item_item: ItemItemChoice, als: ALSChoice, rec_cfg: dict[str, Any], window: float,
               s: EvalSettings, say: Callable[..., None]) -> BlendChoice:
    """Stage "tune the blend": a coordinate search from ``rec_cfg``, on the chosen ALS and item-item models."""
    scorer = v.scorer
    scorer.bundle = _with(scorer.bundle, item_factors=als.item_factors, user_factors=als.user_factors,
                          item_neighbours=item_item.neighbours, item_weights=item_item.weights)

    def hybrid_ndcg(users: list[str], settings: dict[str, Any]) -> np.ndarray:
        scorer.configure(settings)
        return scorer.per_user("hybrid", users)

    grid = blend_grid(window)
    # the users are shared out over the cores: each process keeps its users' candidates between settings
    with user_shards(hybrid_ndcg, v.users, s.processes) as objective:
        searched, best, trace = coordinate_search(objective, rec_cfg, grid)
        # each component alone is a candidate too: the blend is never worse on validation than one of its parts
        alone = {name: float(np.mean(objective(settings))) for name, settings in component_settings(rec_cfg).items()}
    chosen, source = searched, "search"
    for name, score in alone.items():
        if score > best:
            chosen, best, source = component_settings(rec_cfg)[name], score, name
    scored = len({setting_key(t) for t in trace})
    record = {"chosen": chosen, "ndcg@10": round(best, 5), "tried": len(trace), "scored": scored,
              "chosen_from": source, "components": {k: round(v, 5) for k, v in alone.items()}}
    say("evaluate: blend on validation (%d settings tried, %d scored; alone: %s) -> %s (from %s), ndcg@10 %.4f",
        len(trace), scored, {k: round(v, 4) for k, v in alone.items()}, chosen, source, best)
    return BlendChoice(chosen, record)


def component_settings(start: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The blend settings under which the hybrid ranks by one of its components alone (no MMR): item-item
    (plain EASE, no recency), ALS, trending (the start's popularity half-life), all-time popularity, and
    likeness to the shopper's recent products. The hybrid's candidates hold each component's best
    products, so each scores about what the component does as a model."""
    off = {"w_item": 0.0, "w_als": 0.0, "w_popularity": 0.0, "w_content_history": 0.0, "mmr_lambda": 1.0}
    return {
        "item_item": {**start, **off, "w_item": 1.0, "history_half_life_days": None},
        "als": {**start, **off, "w_als": 1.0},
        "trending": {**start, **off, "w_popularity": 1.0},
        "popularity": {**start, **off, "w_popularity": 1.0, "popularity_half_life_days": None},
        "content": {**start, **off, "w_content_history": 1.0},
    }


@dataclass
class ScoredModels:
    """The test split's metrics."""

    models: dict[str, Any]  # metrics by model: truth = the products new to the user
    repeats: dict[str, Any]  # the all-items track's metrics by model: truth = every test product
    users: list[str]  # the users scored
    repeat_users: list[str]


def score_test(test: Split, test_fit: Future, products_pdf: pd.DataFrame, embeddings: np.ndarray, index: Any,
               chosen: Choices, s: EvalSettings, say: Callable[..., None], events: pd.DataFrame) -> ScoredModels:
    """Stage "score the test split": every model, fitted on the test split's train part with the choices."""
    n = len(products_pdf)
    item_f, user_f = test_fit.result()
    gram = gram_matrix(test.interactions, max_items=s.item_item_max_items)
    nb, wt = (prune(ease_weights(gram.matrix, chosen.ease_lambda), gram.rows, n, s.item_item_top_k)
              if len(gram.rows) >= 2 else (None, None))
    scorer = Scorer(test, products_pdf, embeddings, index, Fitted(item_f, user_f, nb, wt), chosen.recommender, s.seed)
    models: dict[str, Any] = {}
    repeat: dict[str, Any] = {}
    test_users = _sample(sorted(test.truth), s.max_test_users, s.seed)
    repeat_users = _sample(sorted(test.truth_repeat), s.max_test_users, s.seed)

    # One set of processes ranks both tracks' users (sorted lists, so each track's users come back in its own
    # order): a user on both keeps the hybrid's candidates from the first track for the all-items lists
    # (discovery and the chat's list are the hybrid's candidates again), a third of the test split's cost at 100k.
    among = {"new": set(test_users), "all": set(repeat_users)}

    def ranked(users: list[str], job: tuple[str, int, bool, str]) -> list[list[int]]:
        model, k, repeat, track = job
        return scorer.rankings(model, [u for u in users if u in among[track]], k, repeat)

    k = max(s.ks)
    truth_all = {u: test.truth_repeat[u] for u in repeat_users}
    with user_shards(ranked, sorted(among["new"] | among["all"]), s.processes) as run_both:
        def run(job: tuple[str, int, bool]) -> list[list[int]]:
            return run_both((*job, "new"))

        def run_all(job: tuple[str, int, bool]) -> list[list[int]]:
            return run_both((*job, "all"))

        for model in MODELS:
            models[model] = scorer.score(model, test_users, ks=s.ks, run=run)
            say("evaluate: %-17s ndcg@10 %.4f  hr@10 %.3f", model, models[model]["ndcg@10"], models[model]["hr@10"])
        lists = repeat_baselines(test, events, products_pdf, chosen.baselines, repeat_users, k, s)
        lists["buy_again"] = run_all(("buy_again", k, True))
        lists["discovery"] = run_all(("hybrid", k, False))
        lists["hybrid"] = run_all(("chat", k, False))
    for model in ALL_ITEMS_MODELS:
        ranked_lists = lists[model] if isinstance(lists[model], list) else [lists[model][u] for u in repeat_users]
        repeat[model] = summarize(dict(zip(repeat_users, ranked_lists, strict=True)), truth_all, n_catalog=n, ks=s.ks)
        say("evaluate: all items: %-17s ndcg@10 %.4f  hr@10 %.3f", model, repeat[model]["ndcg@10"], repeat[model]["hr@10"])
    return ScoredModels(models, repeat, test_users, repeat_users)


def repeat_baselines(split: Split, events: pd.DataFrame, products_pdf: pd.DataFrame, params: dict[str, float],
                     users: list[str], k: int, s: EvalSettings) -> dict[str, dict[str, list[int]]]:
    """The all-items track's baselines (:mod:`~index_builder.evaluation.repeats`) on the split's train orders."""
    o = orders(events, tuple(s.had_types), split.train_end, _row_of(products_pdf))
    return {"top_frequency": top_frequency(o, users, k),
            "recency_frequency": recency_frequency(o, split.train_end, params["half_life_days"], users, k),
            "tifu_knn": TifuKnn(o, len(products_pdf)).rankings((params["tifu_alpha"],), users, k)[params["tifu_alpha"]]}


def report_metrics(span: TimeSpan, test: Split, scored: ScoredModels, chosen: Choices,
                   s: EvalSettings) -> dict[str, Any]:
    """The manifest's "metrics" section: the protocol, each model's metrics, and what tuning chose."""
    als, lam, rec_cfg = chosen.als, chosen.ease_lambda, chosen.recommender
    return {
        "protocol": {
            "split": "time", "cutoff": span.test_cut.isoformat(), "test_end": span.hi.isoformat(),
            "train_start": span.lo.isoformat(), "validation_cutoff": span.val_cut.isoformat(),
            "truth": f"products from {', '.join(s.had_types)} events at or after the cut-off that the user did not have before it",
            "filtered": "products the user had in train are never recommended",
            "users_evaluated": len(scored.users), "users_left_out": test.left_out,
            "undated_events_left_out": span.undated,
            "users_with_truth": len(test.truth), "users_evaluated_repeats": len(scored.repeat_users), "ks": list(s.ks),
        },
        "models": scored.models,
        "all_items": {"note": "truth = every product bought in the test window, repeats included; hybrid = the "
                              "chat's list (due reorders, then new products), discovery = its new products alone",
                      "users_evaluated": len(scored.repeat_users), "buy_again": test.buy_again_info,
                      "baselines": chosen.baselines, "models": scored.repeats},
        "tuning": {**chosen.tuning, "chosen": {"als": als.as_dict(), "item_item_lambda": lam, "recommender": rec_cfg}},
    }


def _with(bundle, **changes):
    import dataclasses

    return dataclasses.replace(bundle, **changes)


def format_table(metrics: dict[str, Any], k: int = 10) -> str:
    """The metrics as a text table, one model a row."""
    cols = [f"ndcg@{k}", f"ndcg@{k}_se", f"hr@{k}", f"precision@{k}", f"recall@{k}", f"map@{k}", f"coverage@{k}"]
    lines = [f"{'model':<18}" + "".join(f"{c.replace(f'ndcg@{k}_se', '± se'):>14}" for c in cols)]
    for name, row in metrics["models"].items():
        lines.append(f"{name:<18}" + "".join(f"{row.get(c, float('nan')):>14.4f}" for c in cols))
    p = metrics["protocol"]
    lines.append(f"cut-off {p['cutoff'][:10]}, {p['users_evaluated']} users evaluated, left out {p['users_left_out']}")
    a = metrics.get("all_items")
    if a and a.get("models"):
        lines.append(f"all items (truth: everything bought next, repeats included; {a['users_evaluated']} users):")
        for name, row in a["models"].items():
            lines.append(f"{name:<18}" + "".join(f"{row.get(c, float('nan')):>14.4f}" for c in cols))
    r = metrics.get("ratings")
    if r:
        lines.append(f"RMSE of the stars on {r['test_ratings']:,} test ratings ({r['cold_left_out']:,} cold left out): "
                     + ", ".join(f"{name} {value:.4f}" for name, value in r["models"].items()))
    return "\n".join(lines)
