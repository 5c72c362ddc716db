"""The JSON API (/api/v1/recommend, /api/v1/chat), for real: `python app.py` serving a bundle of the tiny catalog
embedded with MiniLM, called with a plain HTTP client (httpx). It shares Gradio's rules, so some tests ask both
APIs the same thing.

Each test calls from its own loopback address (127.0.0.x): the limits are kept per client, and the server sees
each address as another client."""

from __future__ import annotations

import base64
import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from assistant.gate import MAX_MESSAGE, MAX_VIEWED
from index_builder.core import bundle as fmt
from tests.support.minilm_bundle import write_minilm_bundle
from tests.support.procs import start_app, stop
from tests.support.tiny_bundle import CATALOG, PURCHASES

slow = pytest.mark.slow  # the tests on the apps: they start the app twice and load MiniLM (15-25 s on 2 cores)

PER_SESSION, PER_CLIENT = 4, 10  # the open app's turn limits a minute
LOGIN = ("shop", "s3cret:x")
TITLES = {c[0]: c[1] for c in CATALOG}
PRICES = {c[0]: c[2] for c in CATALOG}


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    """Two apps on copies of one bundle: ``open`` (no login, low turn limits) and ``locked`` (--auth)."""
    first = write_minilm_bundle(tmp_path_factory.mktemp("json-open"))
    other = tmp_path_factory.mktemp("json-locked")
    shutil.copytree(first, other / first.name)
    fmt.set_current(other, first.name)
    env = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", "CARTWISE_AUTH": "",
           "CARTWISE_TURNS_SESSION_PER_MINUTE": str(PER_SESSION), "CARTWISE_TURNS_CLIENT_PER_MINUTE": str(PER_CLIENT)}
    logs = {"open": first.parent / "app.log", "locked": other / "app.log"}
    with ThreadPoolExecutor(2) as pool:
        opened = pool.submit(start_app, first.parent, logs["open"], env)
        locked = pool.submit(start_app, other, logs["locked"], env, ["--auth", ":".join(LOGIN)])
        procs = {"open": opened.result(), "locked": locked.result()}
    yield {name: url for name, (_, url) in procs.items()} | {"logs": logs}
    for proc, _ in procs.values():
        stop(proc)


def client(url: str, address: int, **kwargs) -> httpx.Client:
    """A plain HTTP client calling from 127.0.0.<address> (another client for the server's limits)."""
    return httpx.Client(base_url=url, timeout=30, transport=httpx.HTTPTransport(local_address=f"127.0.0.{address}"),
                        **kwargs)


def chat_lines(http: httpx.Client, body: dict) -> list[dict]:
    with http.stream("POST", "api/v1/chat", json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.iter_lines() if line.strip()]


@slow
def test_a_turn_returns_catalog_products(apps):
    with client(apps["open"], 2) as http:
        out = http.post("api/v1/recommend", json={"message": "what should I buy next?", "user_id": "u_candle"})
    assert out.status_code == 200, out.text
    body = out.json()
    assert set(body) == {"session_id", "reply", "products", "writer"} and body["writer"] == "template"
    ids = [p["product_id"] for p in body["products"]]
    assert len(ids) == 5 and set(ids) <= set(TITLES) and not set(ids) & set(PURCHASES["u_candle"]), ids
    for p in body["products"]:  # every product is the catalog's, with its own title and price
        assert (p["title"], p["price"], p["kind"]) == (TITLES[p["product_id"]], PRICES[p["product_id"]], "new")
        assert p["reasons"] and p["reasons"][0]["kind"]
    assert body["products"][0]["display_title"] in body["reply"]


@slow
def test_the_json_and_gradio_apis_are_one_implementation(apps):
    """The same question gets the same answer from both, and a session begun in one continues in the other."""
    from gradio_client import Client

    gradio = Client(apps["open"], verbose=False)
    asked = ("u_mug", ["C2"], "something under 5 pounds")
    by_gradio = gradio.predict(*asked, api_name="/recommend")
    with client(apps["open"], 3) as http:
        by_json = http.post("api/v1/recommend", json=dict(zip(("user_id", "recently_viewed", "message"), asked,
                                                              strict=True))).json()
        assert {k: v for k, v in by_json.items() if k != "session_id"} == \
               {k: v for k, v in by_gradio.items() if k != "session_id"}
        assert all(p["price"] <= 5 for p in by_json["products"])
        why = http.post("api/v1/recommend", json={"message": "why the first one?",
                                                  "session_id": by_gradio["session_id"]}).json()
    assert why["session_id"] == by_gradio["session_id"]  # Gradio's session, continued over JSON
    assert by_gradio["products"][0]["display_title"] in why["reply"] and "nothing to explain" not in why["reply"]


@slow
def test_the_chat_streams_the_text_then_the_products(apps):
    with client(apps["open"], 4) as http:
        lines = chat_lines(http, {"message": "a gift for a tea lover"})
        same = http.post("api/v1/recommend", json={"message": "a gift for a tea lover"}).json()
    *texts, done = lines
    assert texts and {t["type"] for t in texts} == {"text"} and done["type"] == "done", lines
    assert len(texts[0]["text"]) < len(done["reply"])  # partial text first
    assert all(done["reply"].startswith(t["text"]) for t in texts)
    assert {t["session_id"] for t in texts} == {done["session_id"]}
    ids = [p["product_id"] for p in done["products"]]
    assert ids == [p["product_id"] for p in same["products"]] and ids[0] in ("T1", "T2", "M3"), ids
    assert done["reply"] == same["reply"]
    from gradio_client import Client

    *_, (gradio_text, gradio_sid) = Client(apps["open"], verbose=False).submit("", [], "a gift for a tea lover",
                                                                               api_name="/chat")
    assert gradio_text == done["reply"] and gradio_sid not in (done["session_id"], same["session_id"])


@slow
def test_a_session_is_never_continued_for_another_customer(apps):
    """A session id reused with another customer's id starts a new session: nothing of the first customer's
    (their list, their purchases) reaches the second; the first customer's session is still theirs."""
    with client(apps["open"], 5) as http:
        first = http.post("api/v1/recommend", json={"message": "what should I buy next?", "user_id": "u_candle"}).json()
        sid = first["session_id"]
        other = http.post("api/v1/recommend", json={"message": "why the first one?", "user_id": "u_mug",
                                                    "session_id": sid}).json()
        assert other["session_id"] != sid and "fresh conversation" in other["reply"]
        assert "nothing to explain yet" in other["reply"] and other["products"] == []
        theirs = {TITLES[p].title() for p in PURCHASES["u_candle"]} | {p["display_title"] for p in first["products"]}
        assert not [t for t in theirs if t.lower() in other["reply"].lower()], other["reply"]
        streamed = chat_lines(http, {"message": "what else?", "user_id": "u_mug", "session_id": sid})[-1]
        assert streamed["session_id"] not in (sid, other["session_id"]) and "fresh conversation" in streamed["reply"]
        back = http.post("api/v1/recommend", json={"message": "why the first one?", "session_id": sid}).json()
    assert back["session_id"] == sid and first["products"][0]["display_title"] in back["reply"]


@slow
def test_the_login_guards_the_json_api(apps):
    url = apps["locked"]
    body = {"message": "what should I buy next?"}
    with client(url, 6) as http:
        for headers in ({}, {"Authorization": "Basic " + base64.b64encode(b"shop:wrong").decode()},
                        {"Authorization": "Bearer " + LOGIN[1]}, {"Authorization": "Basic not-base64!"}):
            for path in ("api/v1/recommend", "api/v1/chat"):
                refused = http.post(path, json=body, headers=headers)
                assert refused.status_code == 401, (path, headers, refused.text)
                assert refused.headers["www-authenticate"].startswith("Basic")
                assert refused.json()["detail"]["error"] == "unauthorized"
    with client(url, 6, auth=LOGIN) as http:
        assert http.post("api/v1/recommend", json=body).json()["products"]
        assert chat_lines(http, body)[-1]["products"]
        schema = http.get("api/v1/openapi.json").json()
    assert schema["components"]["securitySchemes"]["basic"]["scheme"] == "basic"
    assert LOGIN[1] not in apps["logs"]["locked"].read_text()


@slow
def test_the_turn_limits_answer_429_per_session_and_per_client(apps):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url = apps["open"]
    with client(url, 7) as http:
        sid = ""
        for _ in range(PER_SESSION):
            out = http.post("api/v1/recommend", json={"message": "what should I buy next?", "session_id": sid})
            assert out.status_code == 200, out.text
            sid = out.json()["session_id"]
        refused = http.post("api/v1/recommend", json={"message": "something cheaper", "session_id": sid})
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        detail = refused.json()["detail"]
        assert detail["error"] == "rate_limited" and "this conversation" in detail["message"]
        assert detail["retry_after_s"] == int(refused.headers["retry-after"])
        assert http.post("api/v1/chat", json={"message": "hi", "session_id": sid}).status_code == 429  # before a stream
        with pytest.raises(AppError, match="too many messages"):  # the same limit through Gradio's API
            Client(url, verbose=False).predict("", [], "hi", sid, api_name="/recommend")
        # the client's other sessions go on, up to the client's own limit
        used = PER_SESSION
        while used < PER_CLIENT:
            assert http.post("api/v1/recommend", json={"message": "hello"}).status_code == 200
            used += 1
        over = http.post("api/v1/recommend", json={"message": "hello"})
        assert over.status_code == 429 and "for you" in over.json()["detail"]["message"], over.text
    with client(url, 8) as http:  # another client is not held back by the first one's turns
        assert http.post("api/v1/recommend", json={"message": "hello"}).status_code == 200


@slow
def test_input_out_of_bounds_is_refused_with_422(apps):
    def refused(body, **kwargs) -> list:
        out = http.post("api/v1/recommend", json=body, **kwargs)
        assert out.status_code == 422, (body, out.text)
        return [tuple(e["loc"]) for e in out.json()["detail"]]

    with client(apps["open"], 9) as http:
        assert refused({"message": "x" * (MAX_MESSAGE + 1)}) == [("body", "message")]
        assert refused({"message": "hi", "recently_viewed": ["C1"] * (MAX_VIEWED + 1)}) == [("body", "recently_viewed")]
        assert refused({"message": "hi", "user_id": "u" * 201}) == [("body", "user_id")]
        assert refused({"message": 5}) == [("body", "message")]
        assert refused({"user_id": "u_mug"}) == [("body", "message")]
        assert refused({"message": "hi", "viewed": ["C1"]}) == [("body", "viewed")]  # a misspelt field is not ignored
        assert refused({"message": "hi", "user_id": "nobody"}) == [("body", "user_id")]
        assert refused({"message": "hi", "recently_viewed": ["C1", "NOPE"]}) == [("body", "recently_viewed")]
        bad_json = http.post("api/v1/recommend", content=b'{"message": "hi",', headers={"content-type": "application/json"})
        assert bad_json.status_code == 422
        assert http.post("api/v1/chat", json={"message": "x" * (MAX_MESSAGE + 1)}).status_code == 422
        long = http.post("api/v1/recommend", json={"message": "candles " * 100})  # within bounds: read in part
    assert long.status_code == 200 and "I read only the first 500" in long.json()["reply"]


@slow
def test_replies_are_screened_at_the_output_boundary(apps):
    """What a shopper writes never comes back as markup or a link (the one screen of the page and both APIs)."""
    with client(apps["open"], 10) as http:
        body = http.post("api/v1/recommend", json={"message": "<b>candles</b> from www.evil.example.com"}).json()
        streamed = chat_lines(http, {"message": "candle <img src=x onerror=alert(1)>", "session_id": body["session_id"]})
    for reply in (body["reply"], *(line.get("text") or line.get("reply") for line in streamed)):
        assert "<" not in reply and "www." not in reply and "evil" not in reply, reply
    assert body["products"] and "candle" in body["reply"].lower()


@slow
def test_the_openapi_schema_describes_both_endpoints(apps):
    with client(apps["open"], 11) as http:
        schema = http.get("api/v1/openapi.json").json()
        assert {"/api/v1/recommend", "/api/v1/chat"} <= set(http.get("openapi.json").json()["paths"])
    assert set(schema["paths"]) == {"/api/v1/recommend", "/api/v1/chat"}
    for path in schema["paths"].values():
        post = path["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/TurnIn")
        assert {"200", "401", "422", "429"} <= set(post["responses"])
    models = schema["components"]["schemas"]
    assert models["TurnIn"]["properties"]["message"]["maxLength"] == MAX_MESSAGE
    assert models["TurnIn"]["properties"]["recently_viewed"]["maxItems"] == MAX_VIEWED
    assert set(models["TurnOut"]["required"]) == {"session_id", "reply", "products", "writer"}
    stream = schema["paths"]["/api/v1/chat"]["post"]["responses"]["200"]["content"]["application/x-ndjson"]
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in stream["schema"]["oneOf"]} == {"TextLine", "DoneLine", "ErrorLine"}
    assert {"TextLine", "DoneLine", "ErrorLine"} <= set(models)
    assert "securitySchemes" not in schema.get("components", {})  # no login on this app


def test_the_turn_limits_slide_over_the_minute_and_count_only_what_they_let_through():
    from assistant.gate import TooManyTurns, TurnLimits

    now = [1000.0]
    limits = TurnLimits(session_per_minute=2, client_per_minute=3, clock=lambda: now[0])
    limits.admit("s1", "ip:a")
    now[0] += 10
    limits.admit("s1", "ip:a")
    with pytest.raises(TooManyTurns) as refused:
        limits.admit("s1", "ip:a")
    assert (refused.value.scope, refused.value.retry_after_s) == ("session", 50)  # the first turn leaves at 60 s
    limits.admit("s2", "ip:a")  # the refusal was not counted: the client has had 3
    with pytest.raises(TooManyTurns) as refused:
        limits.admit("s3", "ip:a")
    assert refused.value.scope == "client"
    limits.admit("s3", "ip:b")  # another client
    now[0] += 50.5
    limits.admit("s1", "ip:a")  # the first turn has left the minute
    unlimited = TurnLimits(0, 0, clock=lambda: now[0])
    for _ in range(1000):
        unlimited.admit("s", "ip:a")
