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
