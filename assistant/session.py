"""Per-browser-session conversation state. Each Gradio session gets its own copy (gr.State)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass
class SessionState:
    """Who is shopping, what they looked at, what we showed, and the constraints still in force."""

    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    user_id: str | None = None
    viewed: list[str] = field(default_factory=list)  # product ids, most recent last
    shown: list[list[str]] = field(default_factory=list)  # every list shown, newest last
    max_price: float | None = None
    min_price: float | None = None
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    query: str | None = None
    anchor: str | None = None  # "more like #2" keeps this product as the seed until the topic changes

    @property
    def last_shown(self) -> list[str]:
        return self.shown[-1] if self.shown else []

    def view(self, product_id: str, limit: int = 20) -> None:
        if product_id in self.viewed:
            self.viewed.remove(product_id)
        self.viewed.append(product_id)
        del self.viewed[:-limit]

    def reset_constraints(self) -> None:
        self.max_price = self.min_price = self.query = self.anchor = None
        self.include, self.exclude = [], []

    def all_shown(self) -> set[str]:
        return {pid for batch in self.shown for pid in batch}
