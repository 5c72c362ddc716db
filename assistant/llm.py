"""The LLM writer: streamed replies from any OpenAI-compatible server, grounded sentence by sentence.

Settings come from the environment or a ``.env`` file (the environment wins). No key and no base URL:
the template writer answers. Every fault (timeout, refused connection, 401, 429, 5xx, a malformed or
cut-off stream, a reply with no valid product) ends in the template reply and one log line; the key is
never logged. Usage (tokens, time to first token, grounding counts) is logged without message text.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from assistant.grounding import (
    CatalogTitles,
    Grounder,
    as_catalog,
    candidates_from,
    context_titles,
    forbidden_words,
    norm,
)
from assistant.parsing import NO_PRODUCT_KINDS
from assistant.writers import (
    PROMPTS,
    Replace,
    ReplyContext,
    ReplyWriter,
    TemplateWriter,
    prompt_environment,
    tidy,
)
from index_builder.core import tokens
from index_builder.core.settings import DEFAULT_ENV_FILE, number, read_env

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"
SWITCH_ON_HINT = ("Replies are written by the built-in template. To have an LLM write them, set OPENAI_API_KEY "
                  "(or OPENAI_BASE_URL for a local server such as llama.cpp, vLLM or Ollama) in .env and restart.")


@dataclass(frozen=True)
class LLMSettings:
    """Where and how the LLM writer calls its model, and the limits that protect the budget."""

    api_key: str | None = field(default=None, repr=False)  # never printed
    base_url: str | None = None
    model: str = DEFAULT_MODEL
    prompt_budget: int = 3000  # tokens for system + history + this turn
    max_tokens: int = 350  # the reply's cap
    temperature: float = 0.3
    connect_timeout: float = 3.0
    read_timeout: float = 30.0  # also the wait for the first token (a small local model takes ~10 s)
    retries: int = 1  # for a refused connection or a 5xx before any text arrived
    history_turns: int = 6  # earlier turns sent at most (the oldest are dropped first to fit the budget)
    description_tokens: int = 80  # per product description at most (halved until the prompt fits)
    session_per_minute: int = 6  # LLM replies per shopper session per minute
    client_per_minute: int = 12  # ... per client (the logged-in user, else the client's address): new sessions do not reset it
    global_per_minute: int = 60  # LLM replies per minute for the whole app
    daily_tokens: int = 200_000  # prompt + completion tokens per UTC day

    @property
    def enabled(self) -> bool:
        return bool(self.api_key or self.base_url)

    @property
    def host(self) -> str:
        return urlparse(self.base_url).netloc if self.base_url else "api.openai.com"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, env_file: str | os.PathLike | None = DEFAULT_ENV_FILE) -> LLMSettings:
        """Read ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``OPENAI_MODEL`` and the ``CARTWISE_LLM_*`` limits."""
        values = read_env(environ, env_file)
        d = cls()
        return cls(
            api_key=values.get("OPENAI_API_KEY") or None,
            base_url=(values.get("OPENAI_BASE_URL") or "").rstrip("/") or None,
            model=values.get("OPENAI_MODEL") or DEFAULT_MODEL,
            prompt_budget=number(values, "CARTWISE_LLM_PROMPT_BUDGET", d.prompt_budget),
            max_tokens=number(values, "CARTWISE_LLM_MAX_TOKENS", d.max_tokens),
            read_timeout=number(values, "CARTWISE_LLM_TIMEOUT", d.read_timeout, float),
            session_per_minute=number(values, "CARTWISE_LLM_SESSION_PER_MINUTE", d.session_per_minute),
            client_per_minute=number(values, "CARTWISE_LLM_CLIENT_PER_MINUTE", d.client_per_minute),
            global_per_minute=number(values, "CARTWISE_LLM_GLOBAL_PER_MINUTE", d.global_per_minute),
            daily_tokens=number(values, "CARTWISE_LLM_DAILY_TOKENS", d.daily_tokens),
        )


class Limits:
    """The LLM's limits: replies per minute per session, per client (the logged-in user, else the address)
    and for the whole app, a daily token cap, and a pause the server asked for.

    One object per app process, outside anything that is reloaded: :func:`make_writer` takes it, so a hot
    reload (a new writer per bundle version) carries the day's usage on. Tokens are reserved when a reply
    starts (the prompt's count plus the reply's cap) and counted as they stream; whatever is not spent is
    given back when the stream ends, however it ends (finished, cut off, abandoned), so concurrent replies
    cannot overrun the day's cap together.
    """

    def __init__(self, settings: LLMSettings, clock=time.time) -> None:
        self.s = settings
        self.clock = clock
        self._lock = threading.Lock()
        self._global: deque[float] = deque()
        self._keys: OrderedDict[str, deque[float]] = OrderedDict()  # "s:<session>" / "c:<client>", by last use
        self._day = ""
        self.tokens_today = 0  # counted (prompt and reply tokens of every LLM call today)
        self.reserved = 0  # held by replies still streaming
        self.calls = 0  # LLM calls let through since the process started
        self.paused_until = 0.0

    def _prune(self, q: deque[float], now: float) -> None:
        while q and q[0] <= now - 60:
            q.popleft()

    def _window(self, key: str, now: float) -> deque[float]:
        """The calls of the last minute under ``key``. Keys idle for a minute are forgotten oldest first (at
        most 2 x global_per_minute keys can hold a call within the minute, so the table stays small)."""
        q = self._keys.pop(key, None) or deque()
        self._prune(q, now)
        self._keys[key] = q  # the most recently used last
        while len(self._keys) > 10_000:
            oldest = next(iter(self._keys))
            self._prune(self._keys[oldest], now)
            if self._keys[oldest] or oldest == key:
                break
            del self._keys[oldest]
        return q

    def acquire(self, session_id: str, client: str | None = None, tokens: int = 0) -> tuple[str | None, Ticket | None]:
        """Take one LLM call reserving ``tokens``; returns (why not, for the shopper, or None; the ticket)."""
        now = self.clock()
        with self._lock:
            day = time.strftime("%Y-%m-%d", time.gmtime(now))
            if day != self._day:
                self._day, self.tokens_today = day, 0
            if now < self.paused_until:
                return f"the LLM service asked us to wait {self.paused_until - now:.0f} s", None
            if self.tokens_today + self.reserved + tokens > self.s.daily_tokens:
                return f"today's LLM budget of {self.s.daily_tokens:,} tokens is used up", None
            self._prune(self._global, now)
            if len(self._global) >= self.s.global_per_minute:
                return f"the app's limit of {self.s.global_per_minute} LLM replies a minute is reached", None
            mine = self._window(f"s:{session_id}", now)
            if len(mine) >= self.s.session_per_minute:
                return f"your limit of {self.s.session_per_minute} LLM replies a minute is reached", None
            theirs = self._window(f"c:{client}", now) if client else None
            if theirs is not None and len(theirs) >= self.s.client_per_minute:
                return f"your limit of {self.s.client_per_minute} LLM replies a minute is reached", None
            for q in (mine, theirs, self._global):
                if q is not None:
                    q.append(now)
            self.reserved += tokens
            self.calls += 1
            return None, Ticket(self, tokens, now)

    def _settle(self, spent: int, released: int) -> None:
        with self._lock:
            self.tokens_today = max(0, self.tokens_today + spent)  # negative: the server counted fewer
            self.reserved = max(0, self.reserved - released)

    def spend(self, n_tokens: int) -> None:
        """Count tokens spent outside a ticket."""
        self._settle(int(n_tokens), 0)

    def pause(self, seconds: float) -> None:
        with self._lock:
            self.paused_until = max(self.paused_until, self.clock() + max(0.0, seconds))


class Ticket:
    """One LLM call's reservation: :meth:`spend` counts tokens as they stream, :meth:`close` gives back
    what was reserved and not spent (idempotent)."""

    def __init__(self, limits: Limits, reserved: int, at: float = 0.0) -> None:
        self.limits, self.held, self.spent, self.closed = limits, int(reserved), 0, False
        self.at = at  # when the limits let the call through (their clock)
        self._lock = threading.Lock()

    def spend(self, n_tokens: int) -> None:
        n = max(0, int(n_tokens))
        with self._lock:
            self.spent += n
            release = min(n, self.held)
            self.held -= release
        self.limits._settle(n, release)

    def settle(self, total: int) -> None:
        """The call's tokens by the server's own count (it replaces what was counted as it streamed)."""
        with self._lock:
            delta, self.spent = int(total) - self.spent, int(total)
        self.limits._settle(delta, 0)

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed, release, self.held = True, self.held, 0
        self.limits._settle(0, release)


class LLMFault(Exception):
    """The model's stream could not be used (a short reason, safe to log)."""


def describe(exc: BaseException) -> str:
    """One line about a fault, without secrets."""
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    text = re.sub(r"(sk-|Bearer\s+)[A-Za-z0-9_\-]{6,}", r"\1***", text)
    return f"{name}{f' {status}' if status else ''}: {text}" if text else name


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    raw = response.headers.get("retry-after") if response is not None else None
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


class LLMWriter(ReplyWriter):
    """Streams the model's reply, grounded per sentence; the template answers whenever anything fails."""

    def __init__(self, settings: LLMSettings, *, catalog_titles: dict[str, str] | None = None, shop: str = "the shop",
                 folder: Path = PROMPTS, client: Any = None, limits: Limits | None = None) -> None:
        self.s = settings
        self.name = settings.model
        self.template = TemplateWriter(folder=folder)
        env = prompt_environment(folder)
        self.system_t, self.recommend_t, self.explain_t = (env.get_template(n) for n in
                                                           ("system.txt", "recommend.txt", "explain.txt"))
        self.catalog_titles = as_catalog(catalog_titles or {})
        self.shop = shop
        self.limits = limits or Limits(settings)
        self._client = client

    @property
    def client(self):
        if self._client is None:
            import httpx
            from openai import OpenAI

            self._client = OpenAI(api_key=self.s.api_key or "not-needed", base_url=self.s.base_url, max_retries=0,
                                  timeout=httpx.Timeout(self.s.read_timeout, connect=self.s.connect_timeout))
        return self._client

    # -- prompt ---------------------------------------------------------------------------------------
    def system_prompt(self, ctx: ReplyContext) -> str:
        note = (f"Prices are in {ctx.currency}." if ctx.currency else "Prices are plain numbers; do not add a currency.")
        return tidy(self.system_t.render(shop=self.shop, currency_note=note))

    def messages(self, ctx: ReplyContext) -> tuple[list[dict[str, str]], dict[str, Any]]:
        """The chat messages within ``prompt_budget`` tokens: drop the oldest turns, then trim descriptions."""
        system = self.system_prompt(ctx)
        template = self.explain_t if ctx.kind == "explain" else self.recommend_t
        history = list(ctx.history[-self.s.history_turns:]) if self.s.history_turns > 0 else []
        cap = self.s.description_tokens
        model = self.s.model
        while True:
            products = [{**p, "description": tokens.truncate(p["description"], cap, model) if cap > 0 else ""}
                        if p.get("description") else p for p in ctx.products]
            turn = tidy(template.render(**{**ctx.as_vars(), "products": products}))
            msgs = [{"role": "system", "content": system}]
            for said, answered in history:
                msgs += [{"role": "user", "content": said}, {"role": "assistant", "content": answered}]
            msgs.append({"role": "user", "content": turn})
            n = sum(tokens.count(m["content"], model) + 4 for m in msgs) + 3
            if n <= self.s.prompt_budget:
                break
            if history:
                history = history[1:]
            elif cap > 0 and any(p.get("description") for p in ctx.products):
                cap = cap // 2 if cap > 8 else 0
            else:
                log.warning("prompt is %d tokens, over the budget of %d even without history and descriptions",
                            n, self.s.prompt_budget)
                break
        return msgs, {"prompt_tokens_est": n, "budget": self.s.prompt_budget, "turns_kept": len(history),
                      "turns_given": len(ctx.history), "description_tokens": cap}

    # -- the call -------------------------------------------------------------------------------------
    def _open(self, msgs: list[dict[str, str]]):
        """Start the streamed completion; retries a refused connection or a 5xx quickly, at most ``retries``."""
        import openai

        start = time.monotonic()
        for attempt in range(self.s.retries + 1):
            try:
                return self.client.chat.completions.create(
                    model=self.s.model, messages=msgs, stream=True, max_tokens=self.s.max_tokens,
                    temperature=self.s.temperature, stream_options={"include_usage": True})
            except (openai.APIConnectionError, openai.InternalServerError) as exc:
                if isinstance(exc, openai.APITimeoutError) or attempt >= self.s.retries or time.monotonic() - start > 1.0:
                    raise
                time.sleep(0.25 * (attempt + 1))
            except openai.RateLimitError as exc:
                self.limits.pause(_retry_after(exc) or 20.0)
                raise
        raise AssertionError("unreachable")

    def _fallback(self, ctx: ReplyContext, why: str) -> Replace:
        ctx.meta.update(writer="template", fallback=why)
        return Replace(self.template.render(ctx))

    def write(self, ctx: ReplyContext) -> Iterator[str]:
        if ctx.kind in NO_PRODUCT_KINDS or not ctx.products:
            yield from self.template.write(ctx)
            return
        msgs, budget = self.messages(ctx)
        paused, ticket = self.limits.acquire(ctx.session_id, ctx.client,
                                             tokens=budget["prompt_tokens_est"] + self.s.max_tokens)
        if paused:
            ctx.meta.update(writer="template", notice=f"The template wrote this reply because {paused}.")
            log.info("llm skipped session=%s: %s", ctx.session_id, paused)
            yield from self.template.write(ctx)
            return
        ended = "abandoned"  # unless the stream below runs to its end
        try:
            yield from self._stream(ctx, msgs, budget, ticket)
            ended = "fallback" if ctx.meta.get("fallback") else "finished"
        except Exception:
            ended = "failed"
            raise
        finally:  # finished, failed, cut off or abandoned by the shopper: what was not spent goes back
            ticket.close()
            log.info("llm tokens session=%s client=%s counted=%d end=%s started=%.3f", ctx.session_id, ctx.client,
                     ticket.spent, ended, ticket.at)

    def _stream(self, ctx: ReplyContext, msgs: list[dict[str, str]], budget: dict[str, Any], ticket: Ticket) -> Iterator[str]:
        ctx.meta["writer"] = self.s.model
        ticket.spend(budget["prompt_tokens_est"])  # the prompt is paid for once it is sent
        grounder = Grounder(candidates_from(ctx.products, ctx.money), self.catalog_titles, secret=msgs[0]["content"],
                            context_titles=context_titles(ctx.products, ctx.recent),
                            forbidden=forbidden_words(ctx.message, self.catalog_titles))
        t0 = time.monotonic()
        ttft = None
        usage = None
        raw = []
        stream = None
        try:
            stream = self._open(msgs)
            said = preface(ctx)
            if said:  # the assistant's own notes and filters: facts the shopper must see whatever the model writes
                yield said
            finished = False
            for event in stream:
                if getattr(event, "usage", None):
                    usage = event.usage
                for choice in event.choices or ():
                    delta = choice.delta.content if choice.delta else None
                    if delta:
                        raw.append(delta)
                        ticket.spend(tokens.count(delta, self.s.model))  # counted as it streams
                        for seg in grounder.feed(delta):
                            if ttft is None:
                                ttft = time.monotonic() - t0
                            yield seg
                    if choice.finish_reason:
                        finished = True
            if not finished:
                raise LLMFault("the stream ended without a finish reason (cut off)")
            for seg in grounder.finish():
                if ttft is None:
                    ttft = time.monotonic() - t0
                yield seg
        except Exception as exc:  # noqa: BLE001 - every fault ends in the template reply
            why = describe(exc)
            log.warning("LLM writer (%s at %s) failed after %.1f s: %s; the template answered",
                        self.s.model, self.s.host, time.monotonic() - t0, why)
            yield self._fallback(ctx, why)
            return
        finally:
            if stream is not None and hasattr(stream, "close"):
                with contextlib.suppress(Exception):
                    stream.close()
        prompt_tokens = getattr(usage, "prompt_tokens", None) or budget["prompt_tokens_est"]
        completion_tokens = getattr(usage, "completion_tokens", None) or ticket.spent - budget["prompt_tokens_est"]
        if usage is not None:
            ticket.settle(prompt_tokens + completion_tokens)  # the server's own count
        ctx.meta.update(usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
                        budget=budget, grounding=dict(grounder.counts), raw_text="".join(raw),
                        ttft_s=ttft, seconds=time.monotonic() - t0)
        log.info("llm usage session=%s model=%s prompt_tokens=%s completion_tokens=%s ttft_s=%s grounding=%s",
                 ctx.session_id, self.s.model, prompt_tokens, completion_tokens,
                 None if ttft is None else round(ttft, 2), dict(grounder.counts) or "clean")
        if not grounder.valid:
            why = "the model's reply named none of the candidate products"
            log.warning("LLM writer (%s): %s; the template answered", self.s.model, why)
            yield self._fallback(ctx, why)


def preface(ctx: ReplyContext) -> str:
    """What the assistant itself has to say before the model's reply: its notes (a weak match, dropped
    filters, a message cut short, a reference out of range) and the filters in force. A small model
    often leaves them out, so they are not left to it."""
    parts = list(ctx.notes)
    summary = (ctx.constraints or {}).get("summary")
    if summary:
        parts.append(f"Filters: {summary}.")
    return " ".join(parts) + "\n\n" if parts else ""


def catalog_titles(bundle) -> CatalogTitles:
    """Normalised title -> product id over a bundle's catalog (what the grounder calls a real product)."""
    return CatalogTitles({norm(t): pid for t, pid in zip(bundle.titles, bundle.product_ids, strict=True) if norm(t)})


def make_writer(bundle, settings: LLMSettings | None = None, limits: Limits | None = None) -> ReplyWriter:
    """The LLM writer when a key or a base URL is configured, the template writer otherwise. ``limits``: the
    app's one :class:`Limits` (pass the same object to every writer the app makes: its usage carries on)."""
    settings = settings or LLMSettings.from_env()
    if not settings.enabled:
        return TemplateWriter()
    return LLMWriter(settings, catalog_titles=catalog_titles(bundle), limits=limits)
