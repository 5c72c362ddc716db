"""Reply writers: turn a :class:`ReplyContext` into streamed text. The template writer needs no key."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    def as_vars(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "products": self.products, "user": self.user,
                "constraints": self.constraints, "notes": self.notes, "variant": self.variant,
                "basis": self.basis}


class ReplyWriter(ABC):
    """``write(context)`` yields chunks of the reply as they are ready."""

    name: str = "writer"

    @abstractmethod
    def write(self, context: ReplyContext) -> Iterator[str]: ...


def prompt_environment(folder: Path = PROMPTS):
    """Jinja2 over ``prompts/``; a missing variable raises instead of rendering empty."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)), undefined=jinja2.StrictUndefined,
        autoescape=False, keep_trailing_newline=False, trim_blocks=False, lstrip_blocks=False,
    )


class TemplateWriter(ReplyWriter):
    """Fills ``prompts/fallback.txt``; streams it a few words at a time like an LLM would."""

    name = "template"

    def __init__(self, template: str = "fallback.txt", folder: Path = PROMPTS) -> None:
        self.template = prompt_environment(folder).get_template(template)

    def render(self, context: ReplyContext) -> str:
        text = self.template.render(**context.as_vars())
        return re.sub(r"\n{3,}", "\n\n", text).strip()

    def write(self, context: ReplyContext) -> Iterator[str]:
        text = self.render(context)
        yield from re.findall(r"\S+\s*|\s+", text)
