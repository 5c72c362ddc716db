"""The server database, for real: MariaDB and PostgreSQL on 127.0.0.1 (the shared servers), and a
mariadbd of the test's own that is restarted under a live engine."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid

import pandas as pd
import pytest

pytestmark = pytest.mark.servers

MARIADB = "mysql+pymysql://root@127.0.0.1:3306/test"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _schema_url(url: str):
    """A schema/database of the test's own on a shared server (dropped afterwards), or a skip when the
    server is not running here."""
    from sqlalchemy import create_engine, text

    name = f"cartwise_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE {'DATABASE' if url.startswith('mysql') else 'SCHEMA'} {name}"))
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"the database server at {url} is not reachable ({exc}); .ci/run starts it")
    if url.startswith("mysql"):
        return url.rsplit("/", 1)[0] + f"/{name}", admin, f"DROP DATABASE {name}"
    return url + f"?options=-csearch_path%3D{name}", admin, f"DROP SCHEMA {name} CASCADE"


@pytest.fixture(params=[MARIADB, POSTGRES], ids=["mariadb", "postgresql"])
def server_db(request):
    from sqlalchemy import text

    url, admin, drop = _schema_url(request.param)
    yield url
    with admin.connect() as conn:
        conn.execute(text(drop))
    admin.dispose()


def test_export_db_writes_every_users_top_n(uci_bundle, server_db):
    from index_builder.cli import main
    from index_builder.storage.db import Database
    from index_builder.storage.export import top_n_rows

    folder, _ = uci_bundle
    assert main(["export-db", "--bundle", str(folder), "--db", server_db, "--top", "5"]) == 0
    db = Database(server_db)
    rows = list(top_n_rows(folder, 5))
    users = {u for u, *_ in rows}
    some = sorted(users)[7]
    want = [(r, p, pytest.approx(s, rel=1e-6)) for u, r, p, s in rows if u == some]
    assert db.recommendations_for(some) == want and len(want) == 5
    # the same version again replaces its rows, it does not add to them
    assert main(["export-db", "--bundle", str(folder), "--db", server_db, "--top", "5"]) == 0
    from sqlalchemy import func, select

    with db.engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(db.recommendations)).scalar_one()
    assert n == len(rows)


def test_event_batches_are_stored_once(server_db):
    from index_builder.storage.db import Database

    db = Database(server_db)
    db.create()
    ev = pd.DataFrame({"user_id": ["u1", "u2", "u1"], "product_id": ["p1", "p2", "p3"],
                       "event_type": ["purchase", "view", "cart"], "value": [1.0, 1.0, 2.0],
                       "ts": pd.to_datetime(["2011-12-01 10:00", "2011-12-01 10:01", None])})
    db.replace_batch(4, ev)
    db.replace_batch(4, ev)  # a replayed batch
    db.replace_batch(5, ev.head(1))
    assert db.count_events() == 4


class OwnMariaDB:
    """A mariadbd on a free port with a temporary data directory: restarting it never touches the shared one."""

    def __init__(self, folder):
        self.data = folder / "data"
        self.sock = folder / "mysqld.sock"
        from tests.support.procs import free_port

        self.port = free_port()
        self.proc = None
        self.log = folder / "mariadbd.log"
        # --no-defaults: the machine's my.cnf (user, socket, log paths) belongs to the shared server
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.data}", "--auth-root-authentication-method=normal",
                        "--skip-test-db", "--user=root"], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("mariadbd") or "/usr/sbin/mariadbd", "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.sock}", "--user=root", "--skip-grant-tables",
             f"--pid-file={self.data / 'pid'}", "--innodb-buffer-pool-size=16M", f"--log-error={self.log}"])
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"mariadbd did not start; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
            self.proc = None


@pytest.mark.skipif(shutil.which("mariadb-install-db") is None, reason="needs the MariaDB server package")
def test_writes_reconnect_after_the_server_restarts(tmp_path):
    from sqlalchemy import create_engine, text

    from index_builder.storage.db import Database

    server = OwnMariaDB(tmp_path)
    server.start()
    try:
        with create_engine(f"mysql+pymysql://root@127.0.0.1:{server.port}/mysql", isolation_level="AUTOCOMMIT").connect() as c:
            c.execute(text("CREATE DATABASE cartwise"))
        db = Database(f"mysql+pymysql://root@127.0.0.1:{server.port}/cartwise")
        db.create()
        db.replace_recommendations("v1", [("u1", 1, "p1", 0.9)])
        server.stop()  # every pooled connection is now dead
        server.start()
        db.replace_recommendations("v2", [("u1", 1, "p2", 0.8)])  # pre-ping: reconnects, no error
        assert db.recommendations_for("u1") == [(1, "p2", pytest.approx(0.8))]
        assert db.recommendations_for("u1", "v1") == [(1, "p1", pytest.approx(0.9))]
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["server", "sqlite"])
def test_the_apps_event_store_in_a_database(server_db, kind, tmp_path):
    """The shoppers' views and clicks (app.py --db URL) behave as in the embedded SQLite store."""
    from assistant.events import SQLEventStore

    store = SQLEventStore(server_db if kind == "server" else f"sqlite:///{tmp_path / 'app.sqlite'}")
    for pid in ("p1", "p2", "p3"):
        store.record(session_id="s1", user_id="u1", product_id=pid)
    store.record(session_id="s2", user_id=None, product_id="p9", event_type="click")
    assert store.recent(session_id="s1") == ["p3", "p2", "p1"]
    assert store.recent(user_id="u1", limit=2) == ["p3", "p2"]
    assert store.recent(session_id="s2") == ["p9"]
    store.close()
