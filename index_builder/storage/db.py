"""The server database (MariaDB/MySQL or PostgreSQL, any SQLAlchemy URL; SQLite stays the embedded default):
the stream's event store and each user's top-N recommendations.

Tables:
- ``events``: (batch_id, seq) -> user_id, product_id, event_type, value, ts. A stream batch's rows are
  replaced in one transaction, so a replayed batch is stored once.
- ``recommendations``: (bundle_version, user_id, rank) -> product_id, score. An export replaces the
  rows of its bundle version in one transaction; older versions' rows stay until ``keep`` drops them.

The engine pings a pooled connection before using it (``pool_pre_ping``), so a database server that
restarted between two calls is reconnected to rather than failing the next write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import pandas as pd

from index_builder.core.constants import EVENT_TYPE, PRODUCT_ID, TS, USER_ID, VALUE
from index_builder.core.errors import InputError

log = logging.getLogger(__name__)
CHUNK = 5000  # rows per INSERT


def _url_for_log(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class Database:
    def __init__(self, url: str):
        from sqlalchemy import (
            BigInteger,
            Column,
            DateTime,
            Double,
            Integer,
            MetaData,
            String,
            Table,
            create_engine,
        )
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        try:
            self.engine = create_engine(url, pool_pre_ping=True, pool_recycle=3600)
        except (ArgumentError, NoSuchModuleError) as exc:
            raise InputError(f"--db/--export-db {url!r} is not a usable SQLAlchemy URL ({exc}); e.g. "
                             "mysql+pymysql://root@127.0.0.1:3306/test, postgresql+psycopg://postgres@127.0.0.1/test "
                             "or sqlite:///recs.sqlite") from exc
        self.url = _url_for_log(url)
        md = MetaData()
        ids = String(191)  # 191 x 4 bytes fits MySQL's 767-byte index prefix with utf8mb4
        self.events = Table(
            "events", md,
            Column("batch_id", BigInteger, primary_key=True, autoincrement=False),
            Column("seq", Integer, primary_key=True, autoincrement=False),
            Column(USER_ID, ids, nullable=False, index=True),
            Column(PRODUCT_ID, ids, nullable=False),
            Column(EVENT_TYPE, String(16), nullable=False),
            Column(VALUE, Double, nullable=False),
            Column(TS, DateTime, nullable=True),
        )
        self.recommendations = Table(
            "recommendations", md,
            Column("bundle_version", String(40), primary_key=True),
            Column(USER_ID, ids, primary_key=True),
            Column("rank", Integer, primary_key=True, autoincrement=False),
            Column(PRODUCT_ID, ids, nullable=False),
            Column("score", Double, nullable=False),
        )
        self.metadata = md

    def create(self) -> None:
        from sqlalchemy.exc import OperationalError

        try:
            self.metadata.create_all(self.engine)
        except OperationalError as exc:
            raise InputError(f"cannot reach the database {self.url}: {exc.orig}; is the server running and the "
                             "database created?") from exc

    @staticmethod
    def _insert(conn, table, rows: list[dict[str, Any]]) -> None:
        for lo in range(0, len(rows), CHUNK):
            conn.execute(table.insert(), rows[lo:lo + CHUNK])

    def replace_batch(self, batch_id: int, events: pd.DataFrame) -> None:
        """Store one stream batch's events (replacing what a crashed earlier attempt at this batch stored)."""
        ts = pd.to_datetime(events[TS], utc=True).dt.tz_localize(None) if len(events) else None
        rows = [{"batch_id": int(batch_id), "seq": i, USER_ID: str(u), PRODUCT_ID: str(p), EVENT_TYPE: str(e),
                 VALUE: float(v), TS: t.to_pydatetime() if pd.notna(t) else None}
                for i, (u, p, e, v, t) in enumerate(zip(events[USER_ID], events[PRODUCT_ID], events[EVENT_TYPE],
                                                        events[VALUE], ts if ts is not None else [], strict=False))]
        with self.engine.begin() as conn:
            conn.execute(self.events.delete().where(self.events.c.batch_id == int(batch_id)))
            self._insert(conn, self.events, rows)

    def count_events(self) -> int:
        from sqlalchemy import func, select

        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(self.events)).scalar_one())

    def replace_recommendations(self, version: str, rows: Iterable[tuple[str, int, str, float]], keep: int = 3) -> int:
        """Store (user_id, rank, product_id, score) rows for ``version``; keep the ``keep`` newest versions."""
        from sqlalchemy import select

        t = self.recommendations
        data = [{"bundle_version": version, USER_ID: u, "rank": int(r), PRODUCT_ID: p, "score": float(s)}
                for u, r, p, s in rows]
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.bundle_version == version))
            self._insert(conn, t, data)
            versions = sorted(r[0] for r in conn.execute(select(t.c.bundle_version).distinct()))
            old = [v for v in versions if v != version][: max(0, len(versions) - keep)]
            if old:
                conn.execute(t.delete().where(t.c.bundle_version.in_(old)))
        return len(data)

    def recommendations_for(self, user_id: str, version: str | None = None) -> list[tuple[int, str, float]]:
        from sqlalchemy import func, select

        t = self.recommendations
        with self.engine.connect() as conn:
            if version is None:
                version = conn.execute(select(func.max(t.c.bundle_version))).scalar_one()
            got = conn.execute(select(t.c.rank, t.c.product_id, t.c.score)
                               .where(t.c.bundle_version == version, t.c.user_id == user_id).order_by(t.c.rank))
            return [(int(r), str(p), float(s)) for r, p, s in got]


