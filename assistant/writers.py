"""Reply writers: turn a :class:`ReplyContext` into streamed text. The template writer needs no key.

A writer yields chunks of text. A :class:`Replace` chunk stands for "discard what you showed so far and
show this instead" (the LLM writer falls back to the template that way); :func:`accumulate` turns any
writer's chunks into the text so far, which is what the UI and the API stream.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from index_builder.core.text import money, readable_title

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"


@dataclass
class ReplyContext:
    """Everything a writer may use. ``products`` is the candidate list: nothing else may be named."""

    kind: str
    message: str
    products: list[dict[str, Any]] = field(default_factory=list)  # as_dict() + "number" (1-based)
    user: dict[str, Any] = field(default_factory=lambda: {"user_id": None, "known": False})
    constraints: dict[str, Any] = field(default_factory=dict)  # + "summary": human text of the filters
    notes: list[str] = field(default_factory=list)
    variant: int = 0
    basis: str = "viewed"  # what the picks start from: viewed | bought | anchor | query | popular
    currency: str | None = None  # the shop's currency code (manifest); None: prices are plain numbers
    recent: list[str] = field(default_factory=list)  # titles the shopper viewed or bought lately, newest first
    history: list[tuple[str, str]] = field(default_factory=list)  # earlier (shopper, assistant) turns, oldest first
    session_id: str = ""
    client: str | None = None  # who is asking (the logged-in user, else the address): the LLM limits key on it
    meta: dict[str, Any] = field(default_factory=dict)  # filled by the writer: who answered, usage, grounding

    def money(self, price: float | None) -> str:
        return money(price, self.currency)

    def as_vars(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "products": self.products, "user": self.user,
                "constraints": self.constraints, "notes": self.notes, "variant": self.variant,
                "basis": self.basis, "recent": self.recent, "money": self.money}


class Replace(str):
    """A chunk that replaces everything the writer has yielded so far."""


def accumulate(chunks: Iterable[str]) -> Iterator[str]:
    """The text so far after each chunk (a :class:`Replace` chunk starts the text over)."""
    text = ""
    for chunk in chunks:
        text = str(chunk) if isinstance(chunk, Replace) else text + chunk
        yield text


def final_text(chunks: Iterable[str]) -> str:
    return last(accumulate(chunks))


def last(texts: Iterable[str], default: str = "") -> str:
    """The last of a stream of texts so far (the whole reply)."""
    text = default
    for text in texts:  # noqa: B007 - the last one is the answer
        pass
    return text


class ReplyWriter(ABC):
    """``write(context)`` yields chunks of the reply as they are ready; it records who answered in
    ``context.meta["writer"]``."""

    name: str = "writer"

    @abstractmethod
    def write(self, context: ReplyContext) -> Iterator[str]: ...


def prompt_environment(folder: Path = PROMPTS):
    """Jinja2 over ``prompts/``; a missing variable raises instead of rendering empty."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)), undefined=jinja2.StrictUndefined,
        autoescape=False, keep_trailing_newline=False, trim_blocks=False, lstrip_blocks=False,
    )
    env.filters["readable"] = readable_title
    return env


def tidy(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text).strip()


class TemplateWriter(ReplyWriter):
    """Fills ``prompts/fallback.txt``; streams it a few words at a time like an LLM would."""

    name = "template"

    def __init__(self, template: str = "fallback.txt", folder: Path = PROMPTS) -> None:
        self.template = prompt_environment(folder).get_template(template)

    def render(self, context: ReplyContext) -> str:
        return tidy(self.template.render(**context.as_vars()))

    def write(self, context: ReplyContext) -> Iterator[str]:
        context.meta.setdefault("writer", self.name)
        yield from re.findall(r"\S+\s*|\s+", self.render(context))
