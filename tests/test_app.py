"""The real app on a free port, driven through gradio_client's named endpoints."""

from __future__ import annotations

import pandas as pd
import pytest
from gradio_client import Client

from index_builder.core import bundle
from index_builder.core.text import readable_title


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


@pytest.fixture(scope="module")
def data(uci_bundle):
    folder, _ = uci_bundle
    products = pd.read_parquet(folder / bundle.PRODUCTS)
    inter = pd.read_parquet(folder / bundle.INTERACTIONS)
    buyers = inter[inter.purchased].groupby("user_id").product_id.apply(set)
    return set(products.product_id), dict(zip(products.product_id, products.title, strict=True)), buyers


def test_named_endpoints(client):
    assert {"/recommend", "/chat"} <= set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])


def test_recommend_for_known_users_never_repeats_purchases(client, data):
    catalog, _, buyers = data
    for user_id in list(buyers.index[:3]):
        out = client.predict(user_id, [], "what should I buy next?", api_name="/recommend")
        ids = [p["product_id"] for p in out["products"]]
        new = [p["product_id"] for p in out["products"] if p["kind"] == "new"]
        reorders = [p["product_id"] for p in out["products"] if p["kind"] == "reorder"]
        assert 3 <= len(new) <= 5 and len(reorders) <= 5 and set(ids) <= catalog
        assert not set(new) & buyers[user_id], "a new product is never one they bought"
        assert set(reorders) <= buyers[user_id], "a reorder is always one they bought"
        assert all(p["reasons"] for p in out["products"]) and out["reply"]


def test_recommend_with_views_and_a_price_limit(client, data):
    catalog, titles, _ = data
    viewed = "85123A" if "85123A" in catalog else sorted(catalog)[0]
    out = client.predict("", [viewed], "something under 3 pounds", api_name="/recommend")
    assert out["products"] and all(p["price"] is not None and p["price"] <= 3 for p in out["products"])
    assert viewed not in {p["product_id"] for p in out["products"]}
    assert readable_title(titles[viewed]) in out["reply"]  # the reason names what was viewed
    assert out["session_id"] and out["writer"] == "template"


def test_chat_streams_a_grounded_reply(client, data):
    _, titles, buyers = data
    user_id = buyers.index[0]
    job = client.submit(user_id, [], "what should I buy next?", api_name="/chat")
    outputs = list(job)
    final, session_id = job.outputs()[-1]
    assert len(outputs) > 1 and final.startswith(outputs[0][0]) and len(session_id) == 32
    named = [t for t in titles.values() if f"**{readable_title(t)}**" in final]
    assert 3 <= len(named) <= 10  # up to 5 due reorders, then 5 new products


def test_friendly_errors(client):
    with pytest.raises(Exception, match="unknown customer id 'nobody'"):
        client.predict("nobody", [], "hi", api_name="/recommend")
    with pytest.raises(Exception, match="unknown product id"):
        client.predict("", ["NOT-A-PRODUCT"], "hi", api_name="/recommend")
    out = client.predict("", [], "", api_name="/recommend")
    assert out["products"] == [] and "Type a message first" in out["reply"]
