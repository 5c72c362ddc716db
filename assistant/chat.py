"""The assistant: one conversation turn = parse -> update session -> recommend -> write (streamed)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .bundle_reader import Bundle, load_bundle
from .config import RecommenderConfig
from .errors import BundleError, UnknownProduct, UnknownUser
from .events import EventStore
from .parsing import Intent, parse_message
from .recommender import Recommendation, Recommender, Request
from .session import SessionState
from .writers import ReplyContext, ReplyWriter, TemplateWriter

log = logging.getLogger(__name__)

NO_PRODUCT_KINDS = {"greeting", "help", "empty", "reset"}


@dataclass
class Turn:
    intent: Intent
    products: list[Recommendation]
    context: ReplyContext
    chunks: Iterator[str]


def query_encoder(bundle: Bundle):
    """Embed shopper text with the model the bundle was built with (checked by name and dimension)."""
    from index_builder.embed import make_embedder

    ident = bundle.manifest["embedding"]
    name = bundle.manifest.get("params", {}).get("embedder", "minilm")
    embedder = make_embedder(name)
    if embedder.model != ident["model"] or embedder.dim != ident["dim"]:
        raise BundleError(f"bundle {bundle.folder} was embedded with {ident}, but {name!r} gives "
                             f"{embedder.identity()}; rebuild the bundle or install that model")
    cache: dict[str, np.ndarray] = {}

    def encode(texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            for t, v in zip(missing, embedder.encode(missing), strict=True):
                if len(cache) > 2048:
                    cache.clear()
                cache[t] = v
        return np.stack([cache[t] for t in texts])

    return encode


class Assistant:
    """Holds one immutable bundle; every turn reads from ``self.bundle`` as it was when the turn began."""

    def __init__(self, bundle: Bundle, *, writer: ReplyWriter | None = None, store: EventStore | None = None,
                 config: RecommenderConfig | None = None, encode=None) -> None:
        self.bundle = bundle
        self.writer = writer or TemplateWriter()
        self.store = store
        self.recommender = Recommender(bundle, encode or query_encoder(bundle), config)  # None: the bundle's tuned settings
        self.cfg = self.recommender.cfg

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: Any) -> Assistant:
        return cls(load_bundle(path), **kwargs)

    # -- lookups ------------------------------------------------------------------------------------
    def check_user(self, user_id: str | None) -> str | None:
        user_id = (user_id or "").strip() or None
        if user_id and user_id not in self.bundle.user_rows:
            raise UnknownUser(f"unknown customer id {user_id!r}: pick one from the list, or leave it empty to shop anonymously")
        return user_id

    def rows(self, product_ids: Sequence[str], *, strict: bool = True) -> list[int]:
        rows, unknown = [], []
        for pid in product_ids:
            row = self.bundle.row_of.get(str(pid).strip())
            (rows if row is not None else unknown).append(row if row is not None else pid)
        if unknown and strict:
            raise UnknownProduct(f"unknown product id(s) {', '.join(map(repr, unknown))}: they are not in the catalog "
                                 f"({len(self.bundle.row_of):,} products); use ids from the product list")
        return rows

    def profile(self, user_id: str | None, n: int = 5) -> list[dict[str, Any]]:
        """The user's most recent purchases (or other products they have, such as rated ones): title, price, id."""
        if not user_id:
            return []
        bought = self.bundle.had.get(user_id, frozenset())
        recent = [r for r in self.bundle.history.get(user_id, []) if r in bought][:n]
        return [self.bundle.product(r) for r in recent]

    # -- one turn -----------------------------------------------------------------------------------
    def turn(self, message: str, state: SessionState) -> Turn:
        """Apply a message to the session and produce the products and the streamed reply."""
        b = self.bundle
        intent = parse_message(message)
        notes: list[str] = []
        products: list[Recommendation] = []
        last = state.last_shown
        anchor_row = None
        if intent.kind == "reset":
            state.reset_constraints()
        self._apply_constraints(intent, state, notes)
        if intent.ref is not None:
            idx = intent.ref if intent.ref >= 0 else len(last) - 1
            if not last:
                notes.append("I have not shown you anything yet, so here are fresh picks.")
            elif not 0 <= idx < len(last):
                notes.append(f"I only showed {len(last)} products, so I used the last one.")
                idx = len(last) - 1
            if last and intent.kind == "more_like":
                state.anchor = last[max(0, min(idx, len(last) - 1))]
        refines = (intent.include or intent.exclude or intent.cheaper or intent.pricier
                   or intent.max_price is not None or intent.min_price is not None)
        if intent.kind == "need":  # a new topic
            state.query, state.anchor = intent.query, None
        elif intent.kind == "recommend" and not refines:  # a plain "what next?": back to the shopper's history
            state.query = state.anchor = None
        basis = "popular"
        if intent.kind == "explain":
            shown = [self.rows([pid], strict=False) for pid in last]
            rows = [r[0] for r in shown if r]
            if intent.ref is not None and rows:
                idx = intent.ref if intent.ref >= 0 else len(rows) - 1
                rows = [rows[min(idx, len(rows) - 1)]]
            products = self._explain(rows, state)
        elif intent.kind not in NO_PRODUCT_KINDS:
            if state.anchor:
                anchor_row = b.row_of.get(state.anchor)
            req = self.next_request(state, anchor_row, different=intent.kind == "different")
            basis = req.seed_kind if req.seeds else ("query" if req.query else "popular")
            products = self.recommender.recommend(req)
            if products:
                state.shown.append([p.product_id for p in products])
        ctx = ReplyContext(
            kind=intent.kind if intent.kind != "recommend" or not state.query else "need",
            message=message or "",
            products=[{"number": i + 1, **p.as_dict()} for i, p in enumerate(products)],
            user={"user_id": state.user_id, "known": bool(state.user_id)},
            constraints=self._constraints(state),
            notes=notes,
            variant=len(state.shown),
            basis=basis,
        )
        return Turn(intent, products, ctx, self.writer.write(ctx))

    def _apply_constraints(self, intent: Intent, state: SessionState, notes: list[str]) -> None:
        if intent.max_price is not None:
            state.max_price = intent.max_price
        if intent.min_price is not None:
            state.min_price = intent.min_price
        last_prices = [self.bundle.prices[r] for r in self.rows(state.last_shown, strict=False)]
        last_prices = [p for p in last_prices if p == p]
        if intent.cheaper:
            if last_prices:
                state.max_price = round(float(np.median(last_prices)) * self.cfg.cheaper_factor, 2)
                state.min_price = None
            else:
                notes.append("Cheaper than what? I have not shown you anything yet, so here are low-priced picks.")
                state.max_price = float(np.nanpercentile(self.bundle.prices, 25))
        if intent.pricier and last_prices:
            state.min_price = round(float(np.median(last_prices)) / self.cfg.cheaper_factor, 2)
            state.max_price = None
        if intent.include:
            state.include = list(intent.include)
            state.exclude = [k for k in state.exclude if k not in intent.include]
        if intent.exclude:
            state.exclude = list(dict.fromkeys(state.exclude + intent.exclude))
            state.include = [k for k in state.include if k not in intent.exclude]

    def next_request(self, state: SessionState, anchor_row: int | None = None, *, different: bool = False) -> Request:
        """The request behind "what should I buy next?" in this session (the evaluation scores exactly this)."""
        b = self.bundle
        viewed = self.rows(reversed(state.viewed), strict=False)
        if anchor_row is not None:
            seeds, kind = [anchor_row], "anchor"
        elif viewed:
            seeds, kind = viewed, "viewed"
        elif state.query:  # a stated need speaks for itself; purchases still count through ALS and item-item
            seeds, kind = [], "query"
        else:
            had = b.had.get(state.user_id or "", frozenset())
            seeds, kind = [r for r in b.history.get(state.user_id or "", []) if r in had], "bought"
        exclude_rows = set(viewed) if self.cfg.exclude_viewed else set()
        if different:  # nothing shown before
            exclude_rows |= set(self.rows(state.all_shown(), strict=False))
        elif anchor_row is not None:  # "more like #2": new products, not the list it came from
            exclude_rows |= set(self.rows(state.last_shown, strict=False))
        return Request(user_id=state.user_id, seeds=seeds, seed_kind=kind, query=state.query,
                       max_price=state.max_price, min_price=state.min_price, include=list(state.include),
                       exclude=list(state.exclude), exclude_rows=exclude_rows)

    def _explain(self, rows: list[int], state: SessionState) -> list[Recommendation]:
        """Recompute each shown product's reasons against the current session."""
        rec = self.recommender
        req = self.next_request(state)
        content, why, sig = rec.candidates(req)
        cw = rec.content_weight(req)
        terms = rec.terms(np.asarray(rows, dtype=np.int64), content, sig)
        out = []
        closest = rec.closest_seed(rows, req) if req.seeds else [None] * len(rows)
        for i, r in enumerate(rows):
            reason = why.get(r) or closest[i]
            out.append(rec.recommendation(r, {k: float(v[i]) for k, v in terms.items()}, reason, sig, cw))
        return out

    @staticmethod
    def _constraints(state: SessionState) -> dict[str, Any]:
        parts = []
        if state.min_price is not None and state.max_price is not None:
            parts.append(f"between £{state.min_price:.2f} and £{state.max_price:.2f}")
        elif state.max_price is not None:
            parts.append(f"under £{state.max_price:.2f}")
        elif state.min_price is not None:
            parts.append(f"over £{state.min_price:.2f}")
        if state.include:
            parts.append("only " + " or ".join(state.include))
        if state.exclude:
            parts.append("no " + " or ".join(state.exclude))
        return {"max_price": state.max_price, "min_price": state.min_price, "include": list(state.include),
                "exclude": list(state.exclude), "query": state.query, "summary": ", ".join(parts)}

    # -- API and clicks -----------------------------------------------------------------------------
    def recommend_api(self, user_id: str | None, recently_viewed: Sequence[str], message: str) -> dict[str, Any]:
        """One stateless turn for programmatic use: products with reasons and the full reply."""
        turn = self.turn(message or "", self.api_state(user_id, recently_viewed))
        return {"products": [p.as_dict() for p in turn.products], "reply": "".join(turn.chunks)}

    def api_state(self, user_id: str | None, recently_viewed: Sequence[str] | None) -> SessionState:
        """A fresh session for an API call; unknown user or product ids raise with a friendly message."""
        state = SessionState(user_id=self.check_user(user_id))
        ids = [str(p).strip() for p in (recently_viewed or []) if str(p).strip()]
        self.rows(ids)  # raises UnknownProduct naming the bad ids
        for pid in ids:
            state.view(pid)
        return state

    def mark_viewed(self, state: SessionState, product_id: str) -> None:
        self.rows([product_id])
        state.view(product_id)
        if self.store is not None:
            self.store.record(session_id=state.session_id, user_id=state.user_id, product_id=product_id)
