"""The SQLite event store, for real: a file, WAL mode, concurrent writers."""

from __future__ import annotations

import threading

from assistant.events import SQLiteEventStore


def test_records_and_reads_back_newest_first(tmp_path):
    store = SQLiteEventStore(tmp_path / "events.sqlite")
    assert store.journal_mode() == "wal"
    for pid in ("A", "B", "C"):
        store.record(session_id="s1", user_id="u1", product_id=pid)
    store.record(session_id="s2", user_id=None, product_id="Z")
    assert store.recent(session_id="s1") == ["C", "B", "A"]
    assert store.recent(user_id="u1", limit=2) == ["C", "B"]
    assert store.recent(session_id="s2") == ["Z"]
    store.close()
    again = SQLiteEventStore(tmp_path / "events.sqlite")  # persisted on disk
    assert again.recent(session_id="s1") == ["C", "B", "A"]


def test_concurrent_writers(tmp_path):
    store = SQLiteEventStore(tmp_path / "events.sqlite")

    def write(n):
        for i in range(50):
            store.record(session_id=f"s{n}", user_id=None, product_id=str(i))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(store.recent(session_id=f"s{n}", limit=100)) == 50 for n in range(4))


class _OneAtATime:
    """Wraps the store's sqlite3 connection and records any moment two threads use it at once (each call
    holds the connection 2 ms, so unserialised callers overlap at once)."""

    def __init__(self, conn):
        self.conn, self.inside, self.overlaps, self.calls = conn, 0, 0, 0
        self.guard = threading.Lock()

    def execute(self, *args):
        import time

        with self.guard:
            self.inside += 1
            self.calls += 1
            if self.inside > 1:
                self.overlaps += 1
        try:
            time.sleep(0.002)
            return self.conn.execute(*args)
        finally:
            with self.guard:
                self.inside -= 1

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_the_store_serialises_its_connection_across_threads(tmp_path):
    """Python's sqlite3 lets a connection be shared across threads only if the caller serialises its use
    (the docs: check_same_thread=False). Gradio calls the store from many threads: readers and writers
    must never be inside the connection together (without the store's lock this test sees overlaps)."""
    store = SQLiteEventStore(tmp_path / "events.sqlite")
    spy = _OneAtATime(store._conn)
    store._conn = spy

    def work(n):
        for i in range(15):
            store.record(session_id=f"s{n}", user_id=f"u{n}", product_id=str(i))
            store.recent(session_id=f"s{n}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert spy.calls == 6 * 30 and spy.overlaps == 0
    assert all(len(store.recent(session_id=f"s{n}", limit=100)) == 15 for n in range(6))
