"""The recommendation network pictures (index_builder.core.network): what is drawn, what is capped and said."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from index_builder.core import network
from index_builder.core.bundle import PRODUCT_NS, USER_NS


def _title(p: str) -> str:
    return f"TITLE OF {p}"


def _picks() -> dict[str, list[str]]:
    # u0 gets p1..p3; u1 shares two of them, u2..u9 one each (p3), u10 none of them
    picks = {"u0": ["p1", "p2", "p3"], "u1": ["p1", "p2", "p9"], "u10": ["p7", "p8"]}
    picks.update({f"u{i}": ["p3", "p8"] for i in range(2, 10)})
    return picks


def test_neighbourhood_draws_the_customer_their_picks_and_who_shares_them():
    picks = _picks()
    net = network.neighbourhood("u0", picks, network.recommended_to(picks), _title, ["p5", "p4", "p5"], max_others=4)
    assert net.ids(network.CUSTOMER) == ["u0"]
    assert net.ids(network.RECOMMENDED) == ["p1", "p2", "p3"]  # best first, as the graph ranks them
    others = net.ids(network.OTHERS)
    assert len(others) == 4 and others[0] == "u1", "the customer sharing most picks comes first"
    assert "u10" not in others  # shares none of them
    assert net.ids(network.HAD) == ["p5", "p4"]  # newest first, once each
    assert net.left_out == {"customers": 5, "of their past products": 0}
    assert "4 of 9 other customers" in net.title and "5 more customers not drawn" in net.title
    # edges: the customer to each pick and to what they had; the drawn others to the picks they share
    e = net.edges
    assert set(e.loc[e.role == "picked", "dst"]) == {PRODUCT_NS + p for p in ("p1", "p2", "p3")}
    assert set(e.loc[e.role == "had", "dst"]) == {PRODUCT_NS + "p5", PRODUCT_NS + "p4"}
    shared = e[e.role == "shared"]
    assert set(shared["src"]) == {USER_NS + u for u in others}
    assert set(shared["dst"]) <= {PRODUCT_NS + p for p in ("p1", "p2", "p3")}, "no edge to a product not drawn"
    assert len(shared[shared.src == USER_NS + "u1"]) == 2


def test_a_customer_and_a_product_with_the_same_id_stay_two_nodes():
    picks = {"42": ["42", "7"], "7": ["42"]}
    net = network.neighbourhood("42", picks, network.recommended_to(picks), _title)
    assert sorted(net.nodes["id"]) == sorted([USER_NS + "42", PRODUCT_NS + "42", PRODUCT_NS + "7", USER_NS + "7"])
    pos = network.layout(net)
    assert pos[USER_NS + "42"] == (0.0, 0.0), "the customer is pinned at the centre"
    assert len(pos) == 4


def test_the_sample_is_seeded_and_reaches_every_top_product():
    rng = np.random.default_rng(0)
    users = [f"c{i}" for i in range(500)]
    edges = pd.DataFrame({"user_id": np.repeat(users, 10),
                          "product_id": [f"p{int(x)}" for x in rng.zipf(1.5, 5000) % 300]})
    a = network.overview(edges, _title, n_products=10, n_customers=20, seed=1)
    b = network.overview(edges, _title, n_products=10, n_customers=20, seed=1)
    c = network.overview(edges, _title, n_products=10, n_customers=20, seed=2)
    assert a.nodes.equals(b.nodes) and a.edges.equals(b.edges)
    assert a.ids(network.SAMPLED) != c.ids(network.SAMPLED)
    counts = edges["product_id"].value_counts()
    assert a.ids(network.PRODUCT) == counts.index[:10].tolist()
    assert len(a.ids(network.SAMPLED)) == 20
    reached = {d.removeprefix(PRODUCT_NS) for d in a.edges["dst"]}
    assert reached == set(a.ids(network.PRODUCT)), "every product drawn has a customer beside it"
    assert "a seeded sample of 20 of the" in a.title and "500 customers" in a.title


def test_a_100k_product_graph_draws_a_capped_readable_picture():
    rng = np.random.default_rng(3)
    n_users, k = 20_000, 10
    edges = pd.DataFrame({"user_id": np.repeat([f"u{i}" for i in range(n_users)], k),
                          "product_id": [f"P{int(x)}" for x in rng.integers(0, 100_000, n_users * k)]})
    net = network.overview(edges, _title)
    assert len(net.nodes) <= network.OVERVIEW_PRODUCTS + network.OVERVIEW_CUSTOMERS
    fig = network.fig_network(net)
    assert len(json.dumps(fig.to_plotly_json(), default=str)) < 200_000
    assert net.left_out["customers"] == n_users - network.OVERVIEW_CUSTOMERS
    assert f"{n_users:,} customers" in fig.layout.title.text
    drawn_ids = {i for t in fig.data if t.customdata is not None for i, _ in t.customdata}
    assert drawn_ids == set(net.nodes["id"]), "every node is drawn once, its id in customdata"


def test_titles_and_ids_are_shown_as_typed_never_as_plotly_markup():
    """A catalog title or customer id with <a href>, <br> or <b> would be a link or fake lines in plotly's text."""
    evil_title = '<a href="https://evil.example/x">Mug</a><br>id 999 · recommended to 9,999'
    evil_user = '<a href="https://evil.example/phish">support</a>'
    picks = {evil_user: ["p1"], "u2": ["p1", "p2"]}
    net = network.neighbourhood(evil_user, picks, network.recommended_to(picks), lambda p: evil_title, ["p2"])
    fig = network.fig_network(net)
    shown = [fig.layout.title.text] + [str(x) for t in fig.data for x in (t.text or ())]
    shown += [c[1] for t in fig.data if t.customdata is not None for c in t.customdata]
    assert not any("<a" in s for s in shown), "no live anchor anywhere"
    assert any("&lt;a href=" in s for s in shown), "the text is kept, escaped"
    assert all(s.count("<br>") <= 2 for s in shown), "a title's <br> does not add hover lines"
    assert USER_NS + evil_user in net.nodes["id"].tolist(), "the ids themselves (data, not text) are unchanged"
    over = network.fig_network(network.overview(pd.DataFrame({"user_id": [evil_user], "product_id": ["p1"]}),
                                                lambda p: evil_title))
    assert not any("<a" in str(c[1]) for t in over.data if t.customdata is not None for c in t.customdata)
