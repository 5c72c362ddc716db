"""Per-browser-session conversation state. Each Gradio session gets its own copy (gr.State)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SessionState:
    """Who is shopping, what they looked at, what we showed, and the constraints still in force."""

    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    user_id: str | None = None
    viewed: list[str] = field(default_factory=list)  # product ids, most recent last
    shown: list[list[str]] = field(default_factory=list)  # every list shown, newest last
    max_price: float | None = None
    min_price: float | None = None
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    query: str | None = None
    anchor: str | None = None  # "more like #2" keeps this product as the seed until the topic changes
    shown_products: list[dict[str, Any]] = field(default_factory=list)  # the last list, with the reasons given
    shown_request: Any = None  # the recommender Request that produced the last list ("why?" re-reads it)
    turns: list[tuple[str, str]] = field(default_factory=list)  # (shopper, assistant) text, oldest first
    hint_shown: bool = False  # the "how to switch the LLM on" notice is shown once per session
    client: str | None = None  # who opened it: the authenticated user, else the client's address (limits)
    notes: list[str] = field(default_factory=list)  # to tell the shopper at the next turn (a fresh conversation...)
    reorders: str = "mixed"  # a known customer's lists: mixed (due reorders, then new) | only ("my usual") | off
    retired: bool = False  # replaced by another customer's fresh state: a reply still streaming stops
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def last_shown(self) -> list[str]:
        return self.shown[-1] if self.shown else []

    def view(self, product_id: str, limit: int = 20) -> None:
        if product_id in self.viewed:
            self.viewed.remove(product_id)
        self.viewed.append(product_id)
        del self.viewed[:-limit]

    def remember(self, said: str, answered: str, limit: int = 20) -> None:
        self.turns.append((said, answered))
        del self.turns[:-limit]

    def reset_filters(self) -> None:
        self.max_price = self.min_price = None
        self.include, self.exclude = [], []

    def reset_constraints(self) -> None:
        self.max_price = self.min_price = self.query = self.anchor = None
        self.include, self.exclude = [], []
        self.reorders = "mixed"

    def used(self) -> bool:
        """Anything of a shopper's in it: views, shown products, turns or filters."""
        return bool(self.viewed or self.shown or self.turns or self.query or self.anchor or self.include
                    or self.exclude or self.max_price is not None or self.min_price is not None)

    def all_shown(self) -> set[str]:
        return {pid for batch in self.shown for pid in batch}


PER_CLIENT_ENV = "CARTWISE_SESSIONS_PER_CLIENT"  # a shop's backend calling the API for all its shoppers is one client
SESSIONS_PER_CLIENT = 1_000


class SessionStore:
    """API sessions by id: they expire after ``ttl_s`` idle seconds; at most ``max_sessions`` in all and
    ``per_client`` per client (the authenticated user, else the client's address): a client that opens more
    loses its own least recently used session, so a flood of new sessions from one client cannot evict
    other people's. Expiry pops the least recently used from the front (no scan of every session).
    Thread-safe."""

    def __init__(self, ttl_s: float = 1800.0, max_sessions: int = 10_000, per_client: int = SESSIONS_PER_CLIENT,
                 clock=time.monotonic) -> None:
        self.ttl_s, self.max_sessions, self.per_client, self.clock = ttl_s, max_sessions, per_client, clock
        self._sessions: OrderedDict[str, tuple[SessionState, float]] = OrderedDict()  # least recently used first
        self._by_client: dict[str, OrderedDict[str, None]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def _drop(self, sid: str) -> None:
        state, _ = self._sessions.pop(sid)
        mine = self._by_client.get(state.client or "")
        if mine is not None:
            mine.pop(sid, None)
            if not mine:
                del self._by_client[state.client or ""]

    def _expire(self, now: float) -> None:
        while self._sessions:
            sid, (_, seen) = next(iter(self._sessions.items()))
            if now - seen <= self.ttl_s:
                return
            self._drop(sid)

    def get(self, session_id: str | None, client: str | None = None) -> tuple[SessionState, str | None]:
        """The session for this id, or a new one for ``client``; the second value says why a given id was not found."""
        now = self.clock()
        with self._lock:
            self._expire(now)
            sid = (session_id or "").strip()
            if sid and sid in self._sessions:
                state, _ = self._sessions[sid]
                self._sessions[sid] = (state, now)
                self._sessions.move_to_end(sid)
                self._by_client.get(state.client or "", OrderedDict()).pop(sid, None)
                self._by_client.setdefault(state.client or "", OrderedDict())[sid] = None
                return state, None
            state = SessionState(client=client)
            self._sessions[state.session_id] = (state, now)
            mine = self._by_client.setdefault(client or "", OrderedDict())
            mine[state.session_id] = None
            while len(mine) > self.per_client:  # this client's own oldest session goes, nobody else's
                self._drop(next(iter(mine)))
            while len(self._sessions) > self.max_sessions:
                self._drop(next(iter(self._sessions)))
            return state, (f"session {sid!r} has expired or is unknown, so a new one was started" if sid else None)
