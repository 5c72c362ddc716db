"""app.py's options that need no server: the login spec."""

from __future__ import annotations

import pytest

from app import parse_args, parse_auth


def test_auth_spec():
    assert parse_auth("demo:pa:ss") == ("demo", "pa:ss")
    assert parse_auth(None) is None and parse_auth("") is None
    for bad in ("nopassword", ":x", "user:"):
        with pytest.raises(SystemExit, match="USER:PASS"):
            parse_auth(bad)


def test_auth_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CARTWISE_AUTH", "a:b")
    assert parse_args([]).auth == "a:b"
    assert parse_args(["--auth", "c:d"]).auth == "c:d"


def test_auth_guards_the_running_app(uci_bundle, tmp_path):
    """python app.py --auth USER:PASS: no login, no API; a wrong password is refused; the right one serves."""
    from gradio_client import Client
    from gradio_client.exceptions import AuthenticationError

    from tests.support.procs import start_app, stop

    folder, _ = uci_bundle
    env = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", "CARTWISE_AUTH": ""}
    proc, url = start_app(folder.parent, tmp_path / "app.log", env, ["--auth", "demo:s3cret:x"])
    try:
        with pytest.raises(ValueError, match="(?i)login|config"):
            Client(url, verbose=False)
        with pytest.raises((AuthenticationError, ValueError), match="Could not login"):
            Client(url, auth=("demo", "wrong"), verbose=False)
        client = Client(url, auth=("demo", "s3cret:x"), verbose=False)
        out = client.predict("", [], "a gift for a tea lover", api_name="/recommend")
        assert out["products"] and out["writer"] == "template"
    finally:
        stop(proc)
    assert "s3cret" not in (tmp_path / "app.log").read_text(), "the password never reaches the log"


def test_a_corrupt_bundle_is_refused_with_the_file_and_the_fix_not_rebuilt(tmp_path):
    """app.py used to rebuild silently (minutes, and it replaced `current`) when a file failed its checksum."""
    import numpy as np

    from app import ensure_bundle
    from index_builder.core import bundle
    from index_builder.core.errors import BundleError

    folder = bundle.publish(tmp_path, lambda f: (bundle.save_array(f, bundle.EMBEDDINGS, np.eye(2, dtype=np.float32)),
                                                 {"dataset": "x"})[1])
    (folder / bundle.EMBEDDINGS).write_bytes(b"corrupt")
    with pytest.raises(BundleError, match=r"embeddings\.npy does not match its checksum.*--rebuild"):
        ensure_bundle(parse_args(["--out", str(tmp_path)]))
    assert {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")} == {folder.name, "current"}


@pytest.mark.spark  # app.py builds the bundle with Spark
def test_the_first_run_builds_a_bundle_then_serves(data_dir, tmp_path):
    """`python app.py` on a machine without a bundle: it builds one (here from a 40-customer sample of UCI),
    publishes it under --out and serves the chat on it."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    from gradio_client import Client

    from index_builder.core import bundle
    from tests.support.procs import free_port, stop

    root = Path(__file__).resolve().parents[1]
    port = free_port()
    cmd = [sys.executable, str(root / "app.py"), "--out", str(tmp_path / "out"), "--sample-users", "40",
           "--port", str(port), "--env-file", ""] + (["--data-dir", str(data_dir)] if data_dir else [])
    env = {**os.environ, "OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", "CARTWISE_AUTH": ""}
    log = tmp_path / "app.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=root)
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read(100)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(2)
        folder, manifest = bundle.verify(tmp_path / "out")
        assert manifest["params"]["sample_users"] == 40 and manifest["counts"]["users"] <= 40
        out = Client(f"http://127.0.0.1:{port}/", verbose=False).predict("", [], "a gift for a tea lover",
                                                                         api_name="/recommend")
        assert out["products"] and out["writer"] == "template"
        assert "no bundle in" in log.read_text()
    finally:
        stop(proc)


def test_the_apps_settings_come_from_the_env_file_unless_the_environment_or_a_flag_says(tmp_path, monkeypatch):
    """``--env-file`` serves every CARTWISE_* setting of the app, as it serves OPENAI_* (one reader)."""
    import app

    names = ("CARTWISE_AUTH", "CARTWISE_DB", "CARTWISE_UI_SESSIONS", "CARTWISE_SESSIONS_PER_CLIENT")
    for name in names:
        monkeypatch.delenv(name, raising=False)
    env = tmp_path / ".env"
    env.write_text("CARTWISE_AUTH=shop:secret\nCARTWISE_DB=sqlite:///kept.db\nCARTWISE_UI_SESSIONS=50\n"
                   "CARTWISE_SESSIONS_PER_CLIENT=7\n")
    args = app.parse_args(["--env-file", str(env)])
    assert (args.auth, args.db, args.ui_sessions, args.sessions_per_client) == ("shop:secret", "sqlite:///kept.db", 50, 7)
    monkeypatch.setenv("CARTWISE_UI_SESSIONS", "9")  # the environment wins over the file
    assert app.parse_args(["--env-file", str(env)]).ui_sessions == 9
    assert app.parse_args(["--env-file", str(env), "--auth", "a:b"]).auth == "a:b"  # and a flag over both
    assert app.parse_args(["--env-file", str(tmp_path / "none")]).auth is None
    assert app.parse_args(["--env-file", str(env), "--auth", ""]).auth == ""  # an empty flag turns the login off
    monkeypatch.setenv("CARTWISE_UI_SESSIONS", "lots")
    with pytest.raises(ValueError, match="CARTWISE_UI_SESSIONS='lots' is not a whole number"):
        app.parse_args(["--env-file", str(env)])
