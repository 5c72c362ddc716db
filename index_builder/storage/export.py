"""The database export: every known user's top-N from the chat's own ranking
(:func:`~index_builder.scoring.ranking.rank_users`) into the ``recommendations`` table, for a shop backend
that serves them without the app."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from index_builder.storage.db import Database

log = logging.getLogger(__name__)
EXPORT_TOP = 10  # recommendations written per user unless --export-top / --top says otherwise


def top_n_rows(folder, n: int = EXPORT_TOP, processes: int | None = None) -> Iterable[tuple[str, int, str, float]]:
    """(user_id, rank, product_id, score) of every known user's top ``n`` from the chat's own blend."""
    from index_builder.core.bundle_reader import load_bundle
    from index_builder.scoring.ranking import rank_users

    b = load_bundle(folder)
    users = sorted(b.user_rows)
    for uid, top in zip(users, rank_users(b, users, n, processes, desc="export-db"), strict=True):
        for rank, (row, score) in enumerate(top, start=1):
            yield uid, rank, b.product_ids[row], score


def export_recommendations(folder, url: str, n: int = EXPORT_TOP) -> int:
    """Write every user's top ``n`` of the bundle in ``folder`` to the database at ``url``; returns the rows."""
    from index_builder.core import bundle as fmt

    folder = fmt.resolve(folder)
    db = Database(url)
    db.create()
    written = db.replace_recommendations(folder.name, top_n_rows(folder, n))
    log.info("export-db: %d recommendations of bundle %s -> %s", written, folder.name, db.url)
    return written
