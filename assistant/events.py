"""The event store: what shoppers view and click in the app. SQLite by default, behind an interface."""

from __future__ import annotations

import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path


class EventStore(ABC):
    """Records shopper events; a server database can implement the same two methods."""

    @abstractmethod
    def record(self, *, session_id: str, user_id: str | None, product_id: str, event_type: str = "view") -> None: ...

    @abstractmethod
    def recent(self, *, session_id: str | None = None, user_id: str | None = None, limit: int = 20) -> list[str]:
        """Product ids of the newest events for a session or a user, newest first."""


class SQLiteEventStore(EventStore):
    """One SQLite file in WAL mode (readers never block the writer); safe across Gradio's threads."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        session_id TEXT NOT NULL,
        user_id TEXT,
        product_id TEXT NOT NULL,
        event_type TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS events_session ON events(session_id, id);
    CREATE INDEX IF NOT EXISTS events_user ON events(user_id, id);
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(self.SCHEMA)

    def record(self, *, session_id: str, user_id: str | None, product_id: str, event_type: str = "view") -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO events (ts, session_id, user_id, product_id, event_type) VALUES (?, ?, ?, ?, ?)",
                (time.time(), session_id, user_id, product_id, event_type),
            )

    def recent(self, *, session_id: str | None = None, user_id: str | None = None, limit: int = 20) -> list[str]:
        if session_id is None and user_id is None:
            raise ValueError("recent() needs a session_id or a user_id")
        column, value = ("session_id", session_id) if session_id is not None else ("user_id", user_id)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT product_id FROM events WHERE {column} = ? ORDER BY id DESC LIMIT ?", (value, limit)
            ).fetchall()
        return [r[0] for r in rows]

    def journal_mode(self) -> str:
        with self._lock:
            return self._conn.execute("PRAGMA journal_mode").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class SQLEventStore(EventStore):
    """The same store in a server database (MariaDB/MySQL, PostgreSQL; any SQLAlchemy URL), table
    ``shopper_events``; connections are checked before use, so a restarted server is reconnected to."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import BigInteger, Column, Float, Index, Integer, MetaData, String, Table, create_engine

        self.engine = create_engine(url, pool_pre_ping=True, pool_recycle=3600)
        md = MetaData()
        ids = String(191)
        self.table = Table(
            "shopper_events", md,
            # SQLite autoincrements only an INTEGER primary key
            Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
            Column("ts", Float, nullable=False),
            Column("session_id", ids, nullable=False),
            Column("user_id", ids),
            Column("product_id", ids, nullable=False),
            Column("event_type", String(16), nullable=False),
            Index("shopper_events_session", "session_id", "id"),
            Index("shopper_events_user", "user_id", "id"),
        )
        md.create_all(self.engine)

    def record(self, *, session_id: str, user_id: str | None, product_id: str, event_type: str = "view") -> None:
        with self.engine.begin() as conn:
            conn.execute(self.table.insert(), {"ts": time.time(), "session_id": session_id, "user_id": user_id,
                                               "product_id": product_id, "event_type": event_type})

    def recent(self, *, session_id: str | None = None, user_id: str | None = None, limit: int = 20) -> list[str]:
        from sqlalchemy import select

        if session_id is None and user_id is None:
            raise ValueError("recent() needs a session_id or a user_id")
        t = self.table
        where = t.c.session_id == session_id if session_id is not None else t.c.user_id == user_id
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.c.product_id).where(where).order_by(t.c.id.desc()).limit(limit))
            return [r[0] for r in rows]

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str | None, default_path: str | Path) -> EventStore:
    """``url`` (SQLAlchemy) -> a server store; none -> the SQLite file at ``default_path``."""
    return SQLEventStore(url) if url else SQLiteEventStore(default_path)
