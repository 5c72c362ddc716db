"""The assistant: one conversation turn = parse -> update session -> recommend -> write (streamed)."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assistant.config import RecommenderConfig
from assistant.events import EventStore
from assistant.gate import TooManyTurns, TurnLimits, check_call
from assistant.parsing import NO_PRODUCT_KINDS, Intent, parse_message
from assistant.recommender import Recommendation, Recommender, Request, with_reorders
from assistant.safety import catalog_urls, screen, screened, without_markup
from assistant.session import SessionState, SessionStore
from assistant.writers import ReplyContext, ReplyWriter, TemplateWriter, accumulate, final_text
from index_builder.core.bundle_reader import Bundle, load_bundle
from index_builder.core.embedders.query import query_encoder
from index_builder.core.errors import UnknownProduct, UnknownUser
from index_builder.core.text import money

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 500  # a longer message is cut (and the shopper told): parsing and prompts stay small
STREAM_EVERY_S = 0.05  # a streamed API reply sends the text so far at most this often (each update carries all of it)
MAX_QUERY_WORDS = 12  # words of a stated need kept (a pasted essay is not a search)
WEAK_MATCH = 0.45  # a stated need whose best catalog match is below this cosine is "not really in this shop"
SWITCHED = ("You are now shopping as {who}, so this is a fresh conversation: nothing from the previous one "
            "(the products shown, filters or views) carries over.")


@dataclass
class Turn:
    intent: Intent
    products: list[Recommendation]
    context: ReplyContext
    chunks: Iterator[str]


def pick_scored(rec: Recommender, found: tuple[np.ndarray, dict[str, np.ndarray], Request] | None
                ) -> list[tuple[int, float]]:
    """``rec``'s picks from :meth:`Assistant.user_candidates` as (row, score), best first."""
    if found is None:
        return []
    rows, terms, req = found
    score, picks = rec.pick(rows, terms, req)
    at = {int(r): i for i, r in enumerate(rows)}
    return [(int(r), float(score[at[r]])) for r in picks]


def _resumed(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``first``, then the rest of a started turn; closing it closes the turn (and frees its session)."""
    yield first
    yield from rest


@contextlib.contextmanager
def busy_or_held(state: SessionState) -> Iterator[None]:
    """Hold the session's lock, or refuse at once when a turn of the conversation holds it (a programmatic
    caller waits for its reply before it sends the next message; queued turns would hold the server's threads)."""
    if not state.lock.acquire(blocking=False):
        raise TooManyTurns("a reply in this conversation is still being written: send the next message when it "
                           "has ended", 1, "session")
    try:
        yield
    finally:
        state.lock.release()


class Assistant:
    """Holds one immutable bundle; every turn reads from ``self.bundle`` as it was when the turn began."""

    def __init__(self, bundle: Bundle, *, writer: ReplyWriter | None = None, store: EventStore | None = None,
                 config: RecommenderConfig | None = None, encode=None, sessions: SessionStore | None = None,
                 turn_limits: TurnLimits | None = None) -> None:
        self.bundle = bundle
        self.writer = writer or TemplateWriter()
        self.store = store
        self.sessions = sessions if sessions is not None else SessionStore()  # an empty store is falsy
        self.turn_limits = turn_limits  # the app's (assistant.gate); None: no turn limits (in-process use)
        self.recommender = Recommender(bundle, encode or query_encoder(bundle), config)  # None: the bundle's tuned settings
        self.cfg = self.recommender.cfg
        self.has_prices = bool(np.isfinite(bundle.prices).any())
        self.allowed_urls = catalog_urls(bundle.products)  # the catalog's own links may be shown

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
    def turn(self, message: str, state: SessionState, notes: list[str] | None = None) -> Turn:
        """Apply a message to the session and produce the products and the streamed reply (``notes``:
        things to tell the shopper first)."""
        b = self.bundle
        notes = [*state.notes, *(notes or [])]
        state.notes = []
        message = message or ""
        if len(message) > MAX_MESSAGE_CHARS:
            notes.append(f"Your message was long ({len(message):,} characters), so I read only the first "
                         f"{MAX_MESSAGE_CHARS}.")
            message = message[:MAX_MESSAGE_CHARS]
        intent = parse_message(without_markup(message))
        products: list[Recommendation] = []
        shown_dicts: list[dict[str, Any]] = []
        last = state.last_shown
        anchor_row = None
        if intent.kind == "reset":
            state.reset_constraints()
        if intent.kind == "need" and " ".join(intent.query.split()[:MAX_QUERY_WORDS]) != state.query:  # a new topic: the old filters do not carry over
            dropped = self._constraints(state)["summary"]
            state.reset_filters()
            if dropped:
                notes.append(f"New search, so I dropped your earlier filters ({dropped}); say them again to keep them.")
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
        if intent.kind == "need":  # a new topic (a need longer than a few words is cut at a word boundary)
            state.query, state.anchor = " ".join(intent.query.split()[:MAX_QUERY_WORDS]), None
        elif intent.kind == "recommend" and not refines:  # a plain "what next?": back to the shopper's history
            state.query = state.anchor = None
        if intent.reorders:  # "only new things" holds until the shopper asks otherwise or starts over
            state.reorders = intent.reorders
            if intent.reorders == "only":
                self._check_restock(state, notes)
        elif state.reorders == "only" and (intent.kind in ("need", "more_like", "different")
                                           or (intent.kind == "recommend" and not refines)):
            state.reorders = "mixed"  # "my usual" answered; a new question is asked the usual way
        basis = "popular"
        kind = intent.kind
        if intent.kind == "need" and state.query and not state.viewed:
            weak = self._weak_need(state.query)
            if weak:  # say so, and show what the shop does have
                notes.append(weak)
                state.query, kind = None, "recommend"
        if intent.kind == "explain":
            shown_dicts = self._explain(intent.ref, state)
        elif intent.kind not in NO_PRODUCT_KINDS:
            if state.anchor:
                anchor_row = b.row_of.get(state.anchor)
            req = self.next_request(state, anchor_row, different=intent.kind == "different")
            basis = req.seed_kind if req.seeds else ("query" if req.query else "popular")
            products = self.recommender.recommend(req)
            if products:
                shown_dicts = [{"number": i + 1, **p.as_dict(), "description": p.description}
                               for i, p in enumerate(products)]
                state.shown.append([p.product_id for p in products])
                state.shown_products = [dict(d) for d in shown_dicts]
                state.shown_request = req
        ctx = ReplyContext(
            kind=kind if kind != "recommend" or not state.query else "need",
            message=message,
            products=shown_dicts,
            user={"user_id": state.user_id, "known": bool(state.user_id)},
            constraints=self._constraints(state),
            notes=notes,
            variant=len(state.shown),
            basis=basis,
            currency=b.currency,
            recent=[b.titles[r] for r in self.rows(list(reversed(state.viewed)), strict=False)][:5]
            + [p["title"] for p in self.profile(state.user_id, 5)],
            history=list(state.turns),
            session_id=state.session_id,
            client=state.client,
        )
        if self.writer.name == "template" and not state.hint_shown:
            from assistant.llm import SWITCH_ON_HINT

            ctx.meta["notice"] = SWITCH_ON_HINT
            state.hint_shown = True
        return Turn(intent, products, ctx, self._remembered(state, message, self.writer.write(ctx)))

    @staticmethod
    def _remembered(state: SessionState, message: str, chunks: Iterator[str]) -> Iterator[str]:
        """Pass the chunks through; when the reply is complete, keep the turn for the next prompt."""
        seen: list[str] = []
        for chunk in chunks:
            seen.append(chunk)
            yield chunk
        state.remember(message, final_text(seen))

    def _check_restock(self, state: SessionState, notes: list[str]) -> None:
        """ "My usual" needs a known customer with past orders and a buy-again table: else say why, and go on with
        the usual mix."""
        why = None
        if self.bundle.reorders is None:
            why = "This shop's data has no repeat orders to learn restocking from"
        elif not state.user_id:
            why = "I can only suggest restocks for a known customer (pick one in the sidebar)"
        elif not len(self.bundle.reorders.of(state.user_id)[0]):
            why = f"I have no past orders of customer {state.user_id} to restock"
        if why:
            notes.append(f"{why}, so here are products new to you.")
            state.reorders = "mixed"

    def _weak_need(self, query: str) -> str | None:
        """A note when the catalog has nothing close to a stated need (gibberish, or what the shop does not sell)."""
        sims, _ = self.recommender._search(self.recommender.encode([query]), 1)
        best = float(sims[0][0]) if sims.size else 0.0
        if best >= WEAK_MATCH:
            return None
        words = [w for w in query.lower().split() if len(w) >= 3]
        if any(self.recommender.title_hits(w) for w in words):
            return None
        log.info("weak need %r: best similarity %.2f", query, best)
        shown = query if len(query) <= 40 else query[:40] + "…"
        return (f'I could not find anything that really matches "{shown}" in this shop '
                f"(the closest product is only a {best:.0%} match), so here is what sells well instead.")

    def _apply_constraints(self, intent: Intent, state: SessionState, notes: list[str]) -> None:
        priced = intent.max_price is not None or intent.min_price is not None or intent.cheaper or intent.pricier
        if priced and not self.has_prices:  # a price filter would silently empty every answer
            notes.append("This shop's catalog has no prices, so I cannot filter by price; "
                         "here are picks without a price filter.")
            state.max_price = state.min_price = None
        elif priced:
            self._apply_prices(intent, state, notes)
        if intent.include:
            state.include = list(intent.include)
            state.exclude = [k for k in state.exclude if k not in intent.include]
        if intent.exclude:
            state.exclude = list(dict.fromkeys(state.exclude + intent.exclude))
            state.include = [k for k in state.include if k not in intent.exclude]
            if state.query:  # "not red" after "something red": red is no longer what they look for
                banned = {w for k in intent.exclude for w in k.split()}
                kept = [w for w in state.query.split() if w not in banned]
                if len(kept) != len(state.query.split()):
                    state.query = " ".join(kept) or None

    def _apply_prices(self, intent: Intent, state: SessionState, notes: list[str]) -> None:
        cur = self.bundle.currency
        if intent.max_price is not None:
            if intent.min_price is None and state.min_price is not None and intent.max_price < state.min_price:
                notes.append(f"Under {money(intent.max_price, cur)} replaces your earlier over "
                             f"{money(state.min_price, cur)} (both cannot hold).")
                state.min_price = None
            state.max_price = intent.max_price
        if intent.min_price is not None:
            if intent.max_price is None and state.max_price is not None and intent.min_price > state.max_price:
                notes.append(f"Over {money(intent.min_price, cur)} replaces your earlier under "
                             f"{money(state.max_price, cur)} (both cannot hold).")
                state.max_price = None
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

    def user_request(self, user_id: str, k: int, *, include_had: bool = False) -> Request:
        """The request behind a known user's "what should I buy next?" with nothing said or viewed yet: what
        the evaluation scores, the recommendation graph draws and the database export writes."""
        req = self.next_request(SessionState(user_id=user_id))
        req.n, req.include_had = k, include_had
        return req

    def user_candidates(self, user_id: str, k: int, *, include_had: bool = False
                        ) -> tuple[np.ndarray, dict[str, np.ndarray], Request] | None:
        """(rows, blend terms, request) of :meth:`user_request` (None: no candidate); :meth:`user_top_n` picks
        from them, and the evaluation keeps them to try many blend weights on one computation."""
        req = self.user_request(user_id, k, include_had=include_had)
        found = self.recommender.scored_candidates(req)
        return (found[0], found[1], req) if found is not None else None

    def user_list(self, user_id: str, k: int) -> list[tuple[int, str]]:
        """A known user's answer to "what should I buy next?" as (row, kind): due reorders, then new products
        (:func:`~assistant.recommender.with_reorders`): what the evaluation's all-items track scores."""
        req = self.user_request(user_id, k)
        discovery = [r for r, _ in pick_scored(self.recommender, self.user_candidates(user_id, k))]
        return with_reorders(self.recommender.due(req), discovery, k, self.cfg.reorder_share,
                             self.cfg.reorder_min_probability)

    def user_top_n(self, user_id: str, k: int, *, include_had: bool = False) -> list[tuple[int, float]]:
        """A known user's top ``k`` as (bundle row, blended score), best first: the chat's own ranking
        (``recommend()`` without the reasons it writes for the chat)."""
        found = self.user_candidates(user_id, k, include_had=include_had)
        return pick_scored(self.recommender, found)

    def next_request(self, state: SessionState, anchor_row: int | None = None, *, different: bool = False) -> Request:
        """The request behind "what should I buy next?" in this session (the evaluation scores exactly this)."""
        b = self.bundle
        viewed = self.rows(reversed(state.viewed), strict=False)
        if anchor_row is not None:
            seeds, kind = [anchor_row], "anchor"
        elif state.query:  # a stated need leads (over views too); purchases still count through ALS and item-item
            seeds, kind = [], "query"
        elif viewed:
            seeds, kind = viewed, "viewed"
        else:
            had = b.had.get(state.user_id or "", frozenset())
            seeds, kind = [r for r in b.history.get(state.user_id or "", []) if r in had], "bought"
        exclude_rows = set(viewed) if self.cfg.exclude_viewed or kind == "query" else set()
        if different:  # nothing shown before
            exclude_rows |= set(self.rows(state.all_shown(), strict=False))
        elif anchor_row is not None:  # "more like #2": new products, not the list it came from
            exclude_rows |= set(self.rows(state.last_shown, strict=False))
        # reorders: "my usual" asks for past products only; a plain "what next?" of a known customer mixes them in
        reorders = "only" if state.reorders == "only" else "mixed" if state.reorders == "mixed" and kind == "bought" else "off"
        return Request(user_id=state.user_id, seeds=seeds, seed_kind=kind, query=state.query,
                       max_price=state.max_price, min_price=state.min_price, include=list(state.include),
                       exclude=list(state.exclude), exclude_rows=exclude_rows, reorders=reorders)

    def _explain(self, ref: int | None, state: SessionState) -> list[dict[str, Any]]:
        """The products of the last list (or the one referred to) with the reasons given when they were
        shown, plus detail recomputed from the request that produced that list: the other signals and the
        blend's scores."""
        shown = state.shown_products
        if not shown:
            return []
        if ref is not None:
            shown = [shown[min(ref if ref >= 0 else len(shown) - 1, len(shown) - 1)]]
        rec = self.recommender
        req = state.shown_request or self.next_request(state)
        rows = [self.bundle.row_of[p["product_id"]] for p in shown]
        content, why, sig = rec.candidates(req)
        terms = rec.terms(np.asarray(rows, dtype=np.int64), content, sig)
        cw = rec.content_weight(req)
        out = []
        for i, (p, r) in enumerate(zip(shown, rows, strict=True)):
            t = {k: float(v[i]) for k, v in terms.items()}
            again = rec.reasons(r, why.get(r), t, sig, cw)
            given = {(x.get("kind"), x.get("to_id"), x.get("with_id")) for x in p["reasons"]}
            extra = [x for x in again if (x.get("kind"), x.get("to_id"), x.get("with_id")) not in given]
            out.append({**p, "extra": extra, "terms": {k: round(v, 3) for k, v in t.items()}})
        return out

    def _constraints(self, state: SessionState) -> dict[str, Any]:
        parts = []
        cur = self.bundle.currency
        if state.min_price is not None and state.max_price is not None:
            parts.append(f"between {money(state.min_price, cur)} and {money(state.max_price, cur)}")
        elif state.max_price is not None:
            parts.append(f"under {money(state.max_price, cur)}")
        elif state.min_price is not None:
            parts.append(f"over {money(state.min_price, cur)}")
        if state.include:
            parts.append("only " + " or ".join(state.include))
        if state.exclude:
            parts.append("no " + " or ".join(state.exclude))
        return {"max_price": state.max_price, "min_price": state.min_price, "include": list(state.include),
                "exclude": list(state.exclude), "query": state.query, "summary": ", ".join(parts)}

    # -- API and clicks -----------------------------------------------------------------------------
    def shown(self, turn: Turn) -> Iterator[str]:
        """The reply as the page and the API show it, the text so far after each chunk (:mod:`.safety`)."""
        return screened(accumulate(turn.chunks), self.allowed_urls)

    def recommend_api(self, user_id: str | None, recently_viewed: Sequence[str] | None, message: str,
                      session_id: str | None = None, client: str | None = None) -> dict[str, Any]:
        """One turn for programmatic use: products with reasons, the full reply, who wrote it and the
        session id (pass it back to continue the conversation). The last item of :meth:`api_stream`."""
        *_, done = self.api_stream(user_id, recently_viewed, message, session_id, client, every_s=math.inf)
        return {k: done[k] for k in ("session_id", "products", "reply", "writer")}

    def api_stream(self, user_id: str | None, recently_viewed: Sequence[str] | None, message: str,
                   session_id: str | None = None, client: str | None = None, *,
                   every_s: float = STREAM_EVERY_S) -> Iterator[dict[str, Any]]:
        """The one implementation behind every programmatic turn: Gradio's ``/recommend`` and ``/chat`` and
        the JSON API's ``/api/v1/recommend`` and ``/api/v1/chat`` all call it.

        Checked now, before anything is returned (so a web API can answer with a status), in this order: the
        bounds of the arguments (:func:`~assistant.gate.check_call`, raises ``BadInput``); the turn limits per
        session and per ``client`` (:meth:`admit`, raises ``TooManyTurns``), before the call changes or opens any
        session; the user and product ids and the session's owner (:meth:`api_session`: another customer's id
        never continues a session); one turn at a time per conversation (a call while the session's previous
        reply is still being written is refused with ``TooManyTurns`` at once, not queued: queued turns would
        hold the server's worker threads). The turn then starts, holding the session's lock; the returned
        iterator yields ``{"session_id", "text"}`` with
        the reply so far (screened whole at the output boundary, :mod:`.safety`: send the latest, not a
        difference): the first text at once, then at most every ``every_s`` seconds (``math.inf``: none), then
        one ``{"session_id", "text", "done": True, "reply", "products", "writer"}``. Only what is sent is
        screened: screening every word's text so far doubled the time of a template turn.
        """
        user_id, viewed, message, session_id = check_call(user_id, recently_viewed, message, session_id)
        self.admit(session_id or None, client)
        state, notes = self.api_session(user_id, viewed, session_id or None, client)
        if state.session_id != session_id and self.turn_limits is not None:  # a new session: its first turn counts
            self.turn_limits.opened(state.session_id)
        updates = self._api_turn(state, message, notes, every_s)
        first = next(updates)  # the turn holds its session's lock (or is refused) before this returns
        return _resumed(first, updates)

    def _api_turn(self, state: SessionState, message: str, notes: list[str], every_s: float
                  ) -> Iterator[dict[str, Any]]:
        with busy_or_held(state):
            turn = self.turn(message, state, notes=notes)
            raw, at = "", None
            for raw in accumulate(turn.chunks):
                if math.isfinite(every_s) and (at is None or time.monotonic() - at >= every_s):
                    at = time.monotonic()
                    yield {"session_id": state.session_id, "text": screen(raw, self.allowed_urls)}
            text = screen(raw, self.allowed_urls)
            done = {"session_id": state.session_id, "text": text, "done": True, "reply": text,
                    "products": [p.as_dict() for p in turn.products],
                    "writer": turn.context.meta.get("writer", self.writer.name)}
        yield done  # the lock is free before the last item goes out: the caller's next turn never finds it held

    def admit(self, session_id: str | None, client: str | None) -> None:
        """Count one turn against the app's turn limits (:class:`~assistant.gate.TurnLimits`), or raise
        ``TooManyTurns``; the page's chat calls it too."""
        if self.turn_limits is not None:
            self.turn_limits.admit(session_id, client)

    def api_session(self, user_id: str | None, recently_viewed: Sequence[str] | None,
                    session_id: str | None = None, client: str | None = None) -> tuple[SessionState, list[str]]:
        """The API session for ``session_id`` (a new one when empty or expired), updated with the caller's
        user and views, and the notes for the shopper (why a given id started a new session). A session
        that belongs to another customer is never continued: a new one starts, and the reply says so.
        Unknown user or product ids raise with a friendly message."""
        user_id = self.check_user(user_id)
        ids = [str(p).strip() for p in (recently_viewed or []) if str(p).strip()]
        self.rows(ids)  # raises UnknownProduct naming the bad ids
        state, note = self.sessions.get(session_id, client=client)
        notes = [note[0].upper() + note[1:] + "."] if note else []
        with busy_or_held(state):
            switched = bool(user_id) and user_id != state.user_id and state.used()
        if switched:  # the previous customer's session stays theirs; this one starts over
            state, _ = self.sessions.get(None, client=client)
            notes.append(SWITCHED.format(who=f"customer {user_id}"))
        with busy_or_held(state):
            if user_id:
                state.user_id = user_id
            for pid in ids:
                state.view(pid)
        return state, notes

    def switch_customer(self, state: SessionState, user_id: str | None) -> tuple[SessionState, bool]:
        """The page's customer picker: the same customer keeps the conversation; another one (or anonymous
        after a customer) gets a fresh session state, told at its next reply. Returns (state, switched)."""
        user_id = self.check_user(user_id)
        with state.lock:
            if user_id == state.user_id:
                return state, False
            used = state.used()
        fresh = SessionState(client=state.client, user_id=user_id, hint_shown=state.hint_shown)
        state.retired = True  # a reply of the previous customer still streaming stops (assistant/ui.py)
        if used:
            fresh.notes.append(SWITCHED.format(who=f"customer {user_id}" if user_id else "an anonymous shopper"))
        return fresh, used

    def mark_viewed(self, state: SessionState, product_id: str) -> None:
        self.rows([product_id])
        with state.lock:
            state.view(product_id)
            user_id, session_id = state.user_id, state.session_id
        if self.store is not None:
            self.store.record(session_id=session_id, user_id=user_id, product_id=product_id)

    def set_viewed(self, state: SessionState, product_ids: Sequence[str] | None) -> None:
        """The page's "recently viewed" picker: the known ids, in the order first viewed."""
        known = [p for p in (product_ids or []) if p in self.bundle.row_of]
        with state.lock:
            state.viewed = [p for p in state.viewed if p in known] + [p for p in known if p not in state.viewed]
