"""What every programmatic turn passes before it runs: the bounds of its inputs, who is calling, and the
turn limits. Gradio's named API (``/recommend``, ``/chat``), the JSON API (``/api/v1/...``) and the page's
chat all use these, through :meth:`assistant.chat.Assistant.api_stream` (and :meth:`~.Assistant.admit` for
the page), so the rules are written once.

- Bounds: a message of at most :data:`MAX_MESSAGE` characters (the chat reads the first
  :data:`~assistant.chat.MAX_MESSAGE_CHARS` of it and says so), ids of at most :data:`MAX_ID`, at most
  :data:`MAX_VIEWED` viewed products. Past one the call is refused with :class:`BadInput`, naming the field.
- Limits (:class:`TurnLimits`): turns a minute per session and per client (the logged-in user, else the
  caller's address: :func:`client_key`). Past one the call is refused with :class:`TooManyTurns`, saying
  when to try again. One object per app process, passed on at every hot reload like the sessions.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

from index_builder.core.errors import AssistantError

MAX_MESSAGE = 10_000  # characters of one message; the chat reads the first 500 (MAX_MESSAGE_CHARS) of it
MAX_ID = 200  # characters of a user, product or session id
MAX_VIEWED = 50  # product ids of one call (a session keeps the last 20)
SESSION_PER_MINUTE = 60  # turns a minute of one conversation ($CARTWISE_TURNS_SESSION_PER_MINUTE; 0: no limit)
CLIENT_PER_MINUTE = 600  # turns a minute of one client, all its sessions ($CARTWISE_TURNS_CLIENT_PER_MINUTE)
SESSION_ENV = "CARTWISE_TURNS_SESSION_PER_MINUTE"
CLIENT_ENV = "CARTWISE_TURNS_CLIENT_PER_MINUTE"
_KEYS = 10_000  # limit windows kept before idle ones are forgotten


class BadInput(AssistantError):
    """An argument out of its bounds (``field`` names it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class TooManyTurns(AssistantError):
    """A turn over a limit: ``retry_after_s`` says when one is free again; ``scope`` is session or client."""

    def __init__(self, message: str, retry_after_s: float, scope: str) -> None:
        super().__init__(message)
        self.retry_after_s, self.scope = retry_after_s, scope


def client_key(username: str | None, host: str | None) -> str | None:
    """Who is calling, for the limits: the logged-in user, else the caller's address (None: unknown)."""
    if username:
        return f"user:{username}"
    return f"ip:{host}" if host else None


def _text(value: Any, field: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadInput(field, f"{field} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise BadInput(field, f"{field} is {len(value):,} characters long; at most {limit:,} are accepted")
    return value


def check_call(user_id: Any, recently_viewed: Any, message: Any, session_id: Any
               ) -> tuple[str, list[str], str, str]:
    """The arguments of one programmatic turn within their bounds: (user_id, viewed ids, message, session_id),
    ``None`` read as empty; :class:`BadInput` names the first field out of bounds."""
    user_id = _text(user_id, "user_id", MAX_ID)
    session_id = _text(session_id, "session_id", MAX_ID)
    message = _text(message, "message", MAX_MESSAGE)
    viewed = [] if recently_viewed is None else recently_viewed
    if isinstance(viewed, str) or not isinstance(viewed, Sequence):
        raise BadInput("recently_viewed", "recently_viewed must be a list of product ids")
    if len(viewed) > MAX_VIEWED:
        raise BadInput("recently_viewed", f"recently_viewed has {len(viewed):,} product ids; at most {MAX_VIEWED} "
                                          "are accepted (the most recent last)")
    return user_id, [_text(p, "recently_viewed", MAX_ID) for p in viewed], message, session_id


class TurnLimits:
    """Turns a minute per session and per client (0: no limit), over a sliding minute. Thread-safe.

    A refused turn is not counted. Windows idle for a minute are forgotten oldest first, so the table stays
    small however many sessions and addresses come and go.
    """

    def __init__(self, session_per_minute: int = SESSION_PER_MINUTE, client_per_minute: int = CLIENT_PER_MINUTE,
                 clock=time.monotonic) -> None:
        self.session_per_minute, self.client_per_minute, self.clock = session_per_minute, client_per_minute, clock
        self._lock = threading.Lock()
        self._windows: OrderedDict[str, deque[float]] = OrderedDict()  # "s:<session>" / "c:<client>", by last use

    def _window(self, key: str, now: float) -> deque[float]:
        q = self._windows.pop(key, None) or deque()
        while q and q[0] <= now - 60:
            q.popleft()
        self._windows[key] = q
        while len(self._windows) > _KEYS:
            oldest, calls = next(iter(self._windows.items()))
            if oldest == key or (calls and calls[-1] > now - 60):
                break
            del self._windows[oldest]
        return q

    def opened(self, session_id: str) -> None:
        """Count the turn that opened ``session_id`` (admitted before the session had an id) in its window."""
        if self.session_per_minute > 0:
            now = self.clock()
            with self._lock:
                self._window(f"s:{session_id}", now).append(now)

    def admit(self, session_id: str | None, client: str | None) -> None:
        """Count one turn of ``session_id`` (None: a conversation not started yet) by ``client``, or raise
        :class:`TooManyTurns` (nothing counted)."""
        now = self.clock()
        with self._lock:
            checks = []
            if session_id:
                checks.append((self._window(f"s:{session_id}", now), self.session_per_minute, "session",
                               "this conversation"))
            if client:
                checks.append((self._window(f"c:{client}", now), self.client_per_minute, "client", "you"))
            for q, limit, scope, who in checks:
                if limit > 0 and len(q) >= limit:
                    wait = max(1, math.ceil(q[-limit] + 60 - now))
                    raise TooManyTurns(f"too many messages: {limit} a minute are allowed for {who}; try again in "
                                       f"{wait} s", wait, scope)
            for q, limit, _, _ in checks:
                if limit > 0:
                    q.append(now)
