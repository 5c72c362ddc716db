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

    from tests.conftest import start_app, stop

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
