"""Every user's top-N from the chat's own recommender (``Assistant.user_top_n``), shared out over forked
processes: the one ranking the recommendation graph and the database export write."""

from __future__ import annotations

from typing import TYPE_CHECKING

from index_builder.scoring.shards import user_shards

if TYPE_CHECKING:
    from index_builder.core.bundle_reader import Bundle


def _no_text(texts):
    raise RuntimeError("a user's top-N embeds no text")


def rank_users(b: Bundle, users: list[str], k: int, processes: int | None = None,
               desc: str = "ranking users") -> list[list[tuple[int, float]]]:
    """Each of ``users``' top ``k`` as (bundle row, score), best first, in the users' order. The users are
    shared out over ``processes`` processes (default: the cores; see :mod:`.shards`)."""
    from tqdm import tqdm

    from assistant.chat import Assistant

    assistant = Assistant(b, encode=_no_text)
    assistant.recommender.neighbours_memo = {}  # users share their products: each product's neighbours searched once

    def top_of(share: list[str], k: int) -> list[list[tuple[int, float]]]:
        return [assistant.user_top_n(uid, k)
                for uid in tqdm(share, desc=desc, unit="user", leave=False, mininterval=2, disable=None)]

    with user_shards(top_of, users, processes) as run:
        return run(k)
