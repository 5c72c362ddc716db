"""A real browser (Debian's chromium via Playwright): pick a customer, ask, see product cards."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from index_builder.core import bundle
from index_builder.core.text import readable_title
from tests.support.procs import start_app, stop

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CARTWISE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install it with 'apt-get install -y chromium' (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def test_pick_customer_ask_and_see_cards(browser, app_url, uci_bundle):
    folder, manifest = uci_bundle
    products = pd.read_parquet(folder / bundle.PRODUCTS)
    inter = pd.read_parquet(folder / bundle.INTERACTIONS)
    # the first customer with a product due again (the bundle's buy-again table and tuned settings): their
    # answer has both groups, reorder cards first
    due = pd.read_parquet(folder / bundle.BUY_AGAIN)
    settings = manifest["recommender"]
    due = due[due.probability >= settings["reorder_min_probability"]]
    slots = round(settings["reorder_share"] * 5)
    user_id = sorted(due.user_id.unique())[0] if slots else sorted(inter.loc[inter.purchased, "user_id"].unique())[0]
    bought = set(inter.loc[(inter.user_id == user_id) & inter.purchased, "product_id"])
    expected_reorders = min(slots, int((due.user_id == user_id).sum()))
    titles = {pid: readable_title(t) for pid, t in zip(products.product_id, products.title, strict=True)}

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url, wait_until="load")
    _pick_customer(page, user_id)

    page.locator("#message textarea").fill("what should I buy next?")
    page.locator("#send").click()
    cards = page.locator("[data-testid=product-card]")
    try:
        cards.first.wait_for(timeout=60_000)
    except Exception:  # keep what the page showed, for whoever reads the CI log
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "no-cards.png"), full_page=True)
        raise AssertionError(f"no product cards after 60 s; the chat shows: {page.locator('#chatbot').inner_text()!r}") from None
    page.locator("#writer").get_by_text("written by").first.wait_for(timeout=30_000)  # the reply has finished
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat.png"), full_page=True)

    ids = [c.get_attribute("data-product-id") for c in cards.all()]
    kinds = [c.get_attribute("data-kind") for c in cards.all()]
    reorders = [pid for pid, kind in zip(ids, kinds, strict=True) if kind == "reorder"]
    new = [pid for pid, kind in zip(ids, kinds, strict=True) if kind == "new"]
    assert len(reorders) == expected_reorders and kinds == ["reorder"] * len(reorders) + ["new"] * len(new)
    assert 3 <= len(new) <= 5 and set(ids) <= set(titles)
    assert set(reorders) <= bought and not set(new) & bought, "reorders are past products, new ones never are"
    for card, pid in zip(cards.all(), ids, strict=True):
        assert titles[pid] in card.inner_text()
    if reorders:  # a reorder card says why it is due, under its group's heading
        assert page.locator(".cw-group").first.inner_text() == "Buy again"
        assert "ordered" in cards.first.locator(".cw-due").inner_text()
        assert "Buy again" in page.locator("#chatbot").inner_text()
    reply = page.locator("#chatbot").inner_text()
    assert titles[ids[0]] in reply
    assert "written by the template" in page.locator("#writer").inner_text().lower()
    assert "OPENAI_API_KEY" in page.locator("#writer").inner_text(), "the UI says once how to switch the LLM on"

    # Clicking "I viewed #1" marks that product viewed: the next answer builds on it and leaves it out.
    page.locator("#card-1").click()
    # The click's outputs (session state + this dropdown) arrive together: wait for them before asking.
    page.locator("#viewed").get_by_text(ids[0]).first.wait_for(timeout=20_000)
    page.locator("#message textarea").fill("what should I buy next?")
    page.locator("#send").click()
    try:
        page.wait_for_function(
            "id => { const c = document.querySelectorAll('[data-testid=product-card]');"
            " return c.length > 0 && ![...c].some(x => x.dataset.productId === id); }", arg=ids[0], timeout=30_000)
    finally:
        page.screenshot(path=str(ARTIFACTS / "chat-after-view.png"), full_page=True)
    page.wait_for_timeout(1000)
    assert f"the {titles[ids[0]]} you viewed" in page.locator("#chatbot").inner_text()
    page.close()


def test_insights_tab_marks_the_customers_products_on_the_map(browser, app_url, uci_bundle):
    folder, manifest = uci_bundle
    inter = pd.read_parquet(folder / bundle.INTERACTIONS)
    user_id = sorted(inter.loc[inter.purchased, "user_id"].unique())[1]
    n_bought = inter.loc[(inter.user_id == user_id) & inter.purchased, "product_id"].nunique()

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url, wait_until="load")
    page.get_by_role("tab", name="Insights").click()
    legend = page.locator("#insights-map .legendtext")
    legend.first.wait_for(timeout=60_000)  # plotly drew the map
    clusters = [t.text_content() for t in legend.all()]
    labels = manifest["report"]["cluster_labels"]
    assert clusters == [f"{c}: {labels[c]}" for c in sorted(labels, key=int)], "one legend entry per named cluster"

    _pick_customer(page, user_id)
    page.locator("#insights-map .legendtext", has_text=f"bought by {user_id}").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "insights.png"), full_page=True)
    entries = [t.text_content() for t in legend.all()]
    assert f"bought by {user_id} ({n_bought})" in entries
    assert any(e.startswith("recommended (") for e in entries), "the graph's picks for them are marked too"
    assert f"{n_bought} bought by {user_id}" in page.locator("#insights-marked").inner_text()
    # the map's points: every product once, plus the marks
    n_points = page.evaluate("() => document.querySelector('#insights-map .js-plotly-plot').data"
                             ".filter(t => t.type === 'scattergl').reduce((n, t) => n + t.x.length, 0)")
    assert n_points == manifest["report"]["map_shown"]
    page.close()


NETWORK_TRACE_IDS = """role => document.querySelector('#insights-network .js-plotly-plot').data
    .filter(t => (t.name || '').startsWith(role + ' (')).flatMap(t => t.customdata.map(c => c[0]))"""


def test_insights_network_is_the_picked_customers_neighbourhood(browser, app_url, uci_bundle):
    """The network plot starts as the overview; picking a customer redraws it around them: the customer in the
    middle, exactly the graph's picks for them as their products, the customers who share those picks."""
    from index_builder.core import network

    folder, _ = uci_bundle
    edges = pd.read_csv(folder / bundle.GRAPH_DIR / bundle.EDGES, dtype={"src": str, "dst": str})
    user_id = sorted(edges.src.str.removeprefix(bundle.USER_NS).unique())[3]
    mine = edges[edges.src == bundle.USER_NS + user_id].sort_values("rank")
    sharing = set(edges.loc[edges.dst.isin(mine.dst) & (edges.src != bundle.USER_NS + user_id), "src"])

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(app_url, wait_until="load")
    page.get_by_role("tab", name="Insights").click()
    title = page.locator("#insights-network .gtitle")
    title.first.wait_for(timeout=60_000)
    assert title.first.text_content().startswith("Recommendation network: the 25 most recommended products")
    _pick_customer(page, user_id)
    page.locator("#insights-network .gtitle", has_text=f"Customer {user_id}'s neighbourhood").wait_for(timeout=30_000)
    page.wait_for_timeout(800)
    assert page.evaluate(NETWORK_TRACE_IDS, network.CUSTOMER) == [bundle.USER_NS + user_id]
    assert page.evaluate(NETWORK_TRACE_IDS, network.RECOMMENDED) == mine.dst.tolist(), "the graph's picks, best first"
    others = page.evaluate(NETWORK_TRACE_IDS, network.OTHERS)
    assert others and set(others) <= sharing and len(others) == min(len(sharing), network.MAX_OTHERS)
    bought = page.evaluate(NETWORK_TRACE_IDS, network.HAD)
    inter = pd.read_parquet(folder / bundle.INTERACTIONS)
    had = set(inter.loc[(inter.user_id == user_id) & inter.had, "product_id"])
    assert bought and {b.removeprefix(bundle.PRODUCT_NS) for b in bought} <= had
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#insights-network").screenshot(path=str(ARTIFACTS / "insights-network.png"))
    page.close()


def test_the_live_panel_follows_a_publish_without_a_page_reload(browser, live_root, tmp_path):
    """The app follows the bundle root; a fold-in publishes a version with 5 events and 4 dead letters; the open
    page's live panel names the new version, the events, the freshness and the dead letters by reason."""
    import time

    from index_builder.live.foldin import fold_in

    proc, url = start_app(live_root, tmp_path / "app.log", {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""},
                          ["--reload-interval", "1"])
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url, wait_until="load")
        page.get_by_role("tab", name="Insights").click()
        live = page.locator("#insights-live")
        live.get_by_text("No live events in this version").wait_for(timeout=60_000)
        base = bundle.resolve(live_root)
        inter = pd.read_parquet(base / bundle.INTERACTIONS).head(5)
        stamp = pd.Timestamp("2011-12-20 09:30")  # naive: read as UTC, as the stream does
        events = pd.DataFrame({"user_id": inter.user_id, "product_id": inter.product_id, "event_type": "purchase",
                               "value": 1.0, "ts": stamp}).reset_index(drop=True)
        done = fold_in(live_root, events, None, through_batch=4,
                       feed={"arrived_at": time.time() - 3, "dead_letters": {"unknown_product_id": 3, "malformed_json": 1}})
        page.wait_for_function("v => document.querySelector('#insights-live').innerText.includes(v)",
                               arg=done.folder.name, timeout=60_000)  # no page reload: the panel follows
        text = live.inner_text()
        assert "1 hot reload since the app started" in text
        assert "5 events folded in" in text and f"since the full build {base.name}" in text
        assert "The newest event time stamp folded in so far: 2011-12-20 09:30:00 UTC" in text
        assert "newest batch reached the stream at" in text and "s later" in text
        assert "Dead letters so far, 4 records" in text
        assert text.index("unknown_product_id") < text.index("malformed_json"), "commonest reason first"
        ARTIFACTS.mkdir(exist_ok=True)
        live.screenshot(path=str(ARTIFACTS / "insights-live.png"))
        # on the Chat tab the panel's timer stops (no request every 3 s from a page left open on the chat);
        # back on Insights, the panel is read at once
        page.get_by_role("tab", name="Chat").click()
        page.wait_for_timeout(1000)
        sent: list[str] = []
        page.on("request", lambda r: sent.append(r.url) if "/queue/join" in r.url else None)
        second = fold_in(live_root, events.assign(ts=stamp + pd.Timedelta(hours=1)), None, through_batch=5,
                         feed={"arrived_at": time.time(), "dead_letters": {"unknown_product_id": 3}})
        page.wait_for_timeout(3 * 3000)
        assert not sent, f"the timer ticked on the Chat tab: {sent}"
        page.get_by_role("tab", name="Insights").click()
        page.wait_for_function("v => document.querySelector('#insights-live').innerText.includes(v)",
                               arg=second.folder.name, timeout=20_000)
        assert "10 events folded in" in live.inner_text()
        page.close()
    finally:
        stop(proc)


def test_the_product_picker_searches_the_whole_catalog_on_the_server(browser, app_url, uci_bundle):
    folder, _ = uci_bundle
    products = pd.read_parquet(folder / bundle.PRODUCTS)
    rare = products.sort_values(["popularity", "product_id"]).iloc[0]  # far outside the 100 best sellers listed first
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url, wait_until="load")
    picker = page.locator("#viewed input").first
    picker.click()
    assert page.get_by_role("option", name=rare.product_id).count() == 0, "not listed before the shopper types"
    words = " ".join(rare.title.lower().split()[:3])
    picker.press_sequentially(words, delay=30)
    option = page.get_by_role("option").filter(has_text=rare.product_id).first
    try:
        option.wait_for(timeout=30_000)
    except Exception:  # keep what the picker showed, for whoever reads the CI log
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "picker-missing.png"), full_page=True)
        shown = page.get_by_role("option").all_inner_texts()
        typed = picker.input_value()
        focused = page.evaluate("document.activeElement && document.activeElement.outerHTML.slice(0, 200)")
        picker.press("End")  # one more key_up
        page.wait_for_timeout(5000)
        again = page.get_by_role("option").all_inner_texts()
        page.screenshot(path=str(ARTIFACTS / "picker-missing-2.png"), full_page=True)
        raise AssertionError(f"{rare.product_id} ({words!r}) not offered within 30 s; options: {shown[:8]}; "
                             f"typed {typed!r}; focus {focused}; after one more key: {again[:8]}") from None
    option.click()
    page.locator("#viewed").get_by_text(rare.product_id).first.wait_for(timeout=10_000)
    page.close()


def _pick_customer(page, user_id: str) -> None:
    customer = page.locator("#customer input").first
    customer.wait_for(timeout=60_000)
    customer.click()
    customer.fill("")
    customer.press_sequentially(user_id, delay=20)
    page.get_by_role("option", name=user_id).first.click()
    page.get_by_text(f"Customer {user_id}").first.wait_for(timeout=20_000)


def _ask(page, message: str) -> str:
    n = page.locator("#writer").inner_text()
    page.locator("#message textarea").fill(message)
    page.locator("#send").click()
    page.wait_for_function("n => document.querySelector('#writer').innerText !== n || "
                           "document.querySelectorAll('#chatbot .message').length > 0", arg=n, timeout=30_000)
    page.wait_for_timeout(1500)  # the stream finishes
    return page.locator("#chatbot").inner_text()


def test_switching_customer_starts_afresh_and_hostile_text_shows_as_text(browser, app_url, uci_bundle):
    """After a switch nothing of the first customer is on screen or in the next answer; markup and links a
    shopper types are shown as text, never run or linked."""
    folder, _ = uci_bundle
    products = pd.read_parquet(folder / bundle.PRODUCTS)
    inter = pd.read_parquet(folder / bundle.INTERACTIONS)
    titles = dict(zip(products.product_id, products.title, strict=True))
    users = inter[inter.purchased].groupby("user_id").product_id.apply(set)
    users = users[users.apply(len) >= 3].sort_index()
    a, b = users.index[0], users.index[1]
    only_a = {readable_title(titles[p]) for p in users[a] - users[b]}

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url, wait_until="load")
    _pick_customer(page, a)
    _ask(page, "what should I buy next?")
    page.locator("[data-testid=product-card]").first.wait_for(timeout=60_000)
    _pick_customer(page, b)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=product-card]').length === 0", timeout=20_000)
    text = _ask(page, "why the first one?")
    assert "fresh conversation" in text and "nothing to explain yet" in text
    assert not [t for t in only_a if t in text], "the first customer's purchases reached the second"

    for hostile in ("<img src=x onerror=window.__pwned=1>", "[free gift](https://evil.example/win)",
                    "see www.evil-shop.com <b>now</b>"):
        _ask(page, hostile)
    chat = page.locator("#chatbot")
    assert chat.locator("img[src=x]").count() == 0 and chat.locator("b", has_text="now").count() == 0
    assert chat.locator("a").count() == 0, chat.locator("a").all_inner_texts()
    assert not page.evaluate("() => window.__pwned === 1")
    assert "<img src=x onerror" in chat.inner_text(), "the shopper's words are shown, as text"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat-switch-hostile.png"), full_page=True)
    page.close()
