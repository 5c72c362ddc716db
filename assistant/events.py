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
