"""Known-answer builds on tiny hand-made files: themes cluster together, neighbours share words,
ALS prefers what similar shoppers bought, and bad rows end up counted in rejects/."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pandas as pd
import pytest

from index_builder.cli import main
from index_builder.core import bundle
from index_builder.core.errors import InputError
from index_builder.pipeline import BuildConfig, build

THEMES = {
    "candle": ["White pillar candle", "Vanilla scented candle", "Lavender scented candle jar", "Large beeswax candle"],
    "tea": ["Green tea loose leaf", "Earl grey tea bags", "Ceramic teapot for brewing tea", "Porcelain tea cup and saucer"],
    "bike": ["Mountain bike tyre", "Bicycle helmet", "Bike chain lubricant", "Bicycle floor pump"],
}


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    rows = []
    for theme, titles in THEMES.items():
        for i, title in enumerate(titles):
            rows.append({"sku": f"{theme}{i}", "name": title, "cost": f"{2 + i}.50", "colour": theme})
    rows.append({"sku": "candle0", "name": "Duplicate of the pillar candle", "cost": "1", "colour": "x"})
    pd.DataFrame(rows).to_csv(d / "products.csv", index=False)
    events = []
    # Candle lovers buy candles 0-2; u_c4 also buys candle3. Bike riders buy bikes.
    for u in ("u_c1", "u_c2", "u_c3", "u_c4"):
        events += [{"customer": u, "sku": f"candle{i}", "type": "purchase", "qty": 2} for i in range(3)]
    events.append({"customer": "u_c4", "sku": "candle3", "type": "purchase", "qty": 1})
    events.append({"customer": "u_c2", "sku": "candle3", "type": "view", "qty": 1})
    for u in ("u_b1", "u_b2", "u_b3"):
        events += [{"customer": u, "sku": f"bike{i}", "type": "purchase", "qty": 1} for i in range(4)]
    events.append({"customer": "u_t1", "sku": "tea0", "type": "view", "qty": 1})
    events.append({"customer": "u_t1", "sku": "no-such-sku", "type": "purchase", "qty": 1})
    events.append({"customer": "u_t1", "sku": "tea1", "type": "teleport", "qty": 1})
    pd.DataFrame(events).to_csv(d / "events.csv", index=False)
    return d


@pytest.fixture(scope="module")
def tiny_bundle(spark, tiny_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-out")
    cfg = BuildConfig(
        out=str(out), products=str(tiny_files / "products.csv"), events=str(tiny_files / "events.csv"),
        mapping={"product_id": "sku", "title": "name", "price": "cost", "user_id": "customer",
                 "event_type": "type", "value": "qty"},
        k_min=3, k_max=3, kmeans_restarts=10, als_rank=4, als_max_iter=15,
    )
    folder = build(cfg, spark=spark)
    return bundle.verify(folder)


def test_themes_land_in_the_same_cluster(tiny_bundle):
    folder, manifest = tiny_bundle
    products = pd.read_parquet(folder / bundle.PRODUCTS)
    assert manifest["kmeans"]["k"] == 3
    clusters = {theme: set(products.loc[products.colour == theme, "cluster"]) for theme in THEMES}
    assert all(len(c) == 1 for c in clusters.values()), clusters
    assert len(set.union(*clusters.values())) == 3


def test_nearest_neighbours_share_words(tiny_bundle):
    folder, _ = tiny_bundle
    products = pd.read_parquet(folder / bundle.PRODUCTS)
    index = faiss.read_index(str(folder / bundle.FAISS_INDEX))
    emb = bundle.load_array(folder, bundle.EMBEDDINGS)
    row = products.index[products.title == "Vanilla scented candle"][0]
    _, ids = index.search(emb[row : row + 1], 2)
    assert ids[0][0] == row
    assert products.title[ids[0][1]] == "Lavender scented candle jar"


def test_als_prefers_what_similar_shoppers_bought(tiny_bundle):
    folder, manifest = tiny_bundle
    products = pd.read_parquet(folder / bundle.PRODUCTS)
    users = pd.read_parquet(folder / bundle.USERS)
    items = bundle.load_array(folder, bundle.ITEM_FACTORS)
    user_f = bundle.load_array(folder, bundle.USER_FACTORS)
    u = int(users.loc[users.user_id == "u_c1", "user_idx"].iloc[0])
    scores = items @ user_f[u]
    pid = products.product_id.tolist()
    candle3 = scores[pid.index("candle3")]
    assert all(candle3 > scores[pid.index(f"bike{i}")] for i in range(4))
    assert manifest["als"]["params"]["rank"] == 4


def test_bad_rows_are_counted_and_kept(tiny_bundle):
    folder, manifest = tiny_bundle
    counts = manifest["counts"]
    assert counts["products"] == 12
    assert counts["rejected"]["products"] == {"duplicate_product_id": 1}
    assert counts["rejected"]["events"] == {"unknown_event_type": 1, "unknown_product_id": 1}
    # Rejected rows keep every value as given, under the canonical (mapped) column names.
    rejected = pd.read_csv(folder / bundle.REJECTS_DIR / "events.csv")
    assert sorted(zip(rejected["product_id"], rejected["reject_reason"], strict=True)) == [
        ("no-such-sku", "unknown_product_id"), ("tea1", "unknown_event_type")]
    assert set(rejected.columns) >= {"user_id", "product_id", "event_type", "value", "reject_reason"}
    dup = pd.read_csv(folder / bundle.REJECTS_DIR / "products.csv")
    assert dup[["title", "price", "colour"]].values.tolist() == [["Duplicate of the pillar candle", 1, "x"]]
    products = pd.read_parquet(folder / bundle.PRODUCTS)
    assert products.loc[products.product_id == "candle0", "title"].item() == "White pillar candle"


def test_interactions_and_popularity(tiny_bundle):
    folder, _ = tiny_bundle
    inter = pd.read_parquet(folder / bundle.INTERACTIONS)
    products = pd.read_parquet(folder / bundle.PRODUCTS).set_index("product_id")
    assert products.loc["candle0", "popularity"] == 4 and products.loc["tea2", "popularity"] == 0
    row = inter[(inter.user_id == "u_c2") & (inter.product_id == "candle3")].iloc[0]
    assert not row.purchased and row.n_events == 1


def test_cli_errors_are_one_line_with_exit_2(spark, tmp_path, capsys):
    (tmp_path / "p.csv").write_text("product_id,name\n1,mug\n")
    code = main(["build", "--products", str(tmp_path / "p.csv"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert err.startswith("error: products file") and "missing column 'title'" in err and "--map title=" in err


def test_non_utf8_products_file_fails_the_build(spark, tmp_path):
    (tmp_path / "p.csv").write_bytes("product_id,title\n1,Cr\xe8me br\xfbl\xe9e set\n".encode("cp1252"))
    with pytest.raises(InputError, match=r"p\.csv: not valid UTF-8 .* line 2"):
        build(BuildConfig(out=str(tmp_path / "out"), products=str(tmp_path / "p.csv")), spark=spark)
    assert not (tmp_path / "out" / "current").exists()


def test_show_command(tiny_bundle, capsys):
    folder, _ = tiny_bundle
    assert main(["show", str(folder.parent)]) == 0
    out = capsys.readouterr().out
    assert "checksums OK" in out and json.loads(out[: out.rindex("}") + 1])["counts"]["products"] == 12


def test_all_products_rejected_is_an_error(spark, tmp_path):
    (tmp_path / "p.csv").write_text("product_id,title\n,nameless\n2,\n")
    with pytest.raises(InputError, match="no usable products .* all 2 rows were rejected"):
        build(BuildConfig(out=str(tmp_path / "out"), products=str(tmp_path / "p.csv")), spark=spark)


def test_embeddings_are_unit_norm(tiny_bundle):
    folder, manifest = tiny_bundle
    emb = bundle.load_array(folder, bundle.EMBEDDINGS)
    assert emb.shape == (12, manifest["embedding"]["dim"]) == (12, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "ivfpq"])
def test_every_faiss_kind_builds_loads_and_answers(spark, tiny_files, tmp_path, kind):
    """--faiss ivf / hnsw / ivfpq on a small catalog: the manifest says what was built (ivfpq cannot train
    its codebooks on 12 vectors: it says so and builds ivf), and the chat loads it and answers."""
    from assistant.chat import Assistant
    from assistant.recommender import Request

    cfg = BuildConfig(out=str(tmp_path / "out"), products=str(tiny_files / "products.csv"),
                      events=str(tiny_files / "events.csv"),
                      mapping={"product_id": "sku", "title": "name", "price": "cost", "user_id": "customer",
                               "event_type": "type", "value": "qty"},
                      k_min=3, k_max=3, als_rank=4, faiss=kind, evaluate=False)
    folder, manifest = bundle.verify(build(cfg, spark=spark))
    built = "ivf" if kind == "ivfpq" else kind
    assert manifest["faiss"]["kind"] == built and manifest["faiss"]["requested"] == kind
    index = faiss.read_index(str(folder / bundle.FAISS_INDEX))
    assert (faiss.try_extract_index_ivf(index) is not None) == built.startswith("ivf")
    if kind == "ivfpq":
        assert "256" in manifest["faiss"]["why"]
    a = Assistant.from_path(folder)
    picks = a.recommender.recommend(a.next_request(a.sessions.get(None)[0]))
    assert picks and a.recommender.recommend(Request(query="scented candle", n=3))


def test_an_ivf_index_over_one_cluster_is_a_flat_one_and_says_so(spark, tmp_path):
    """Two products cannot be clustered (k = 1): --faiss ivf builds a flat index, the manifest says flat
    (it said ivf, and loading the bundle crashed)."""
    from index_builder.core.bundle_reader import load_bundle

    pd.DataFrame({"product_id": ["a", "b"], "title": ["Red mug", "Blue mug"]}).to_csv(tmp_path / "p.csv", index=False)
    folder = build(BuildConfig(out=str(tmp_path / "out"), products=str(tmp_path / "p.csv"), faiss="ivf"), spark=spark)
    _, manifest = bundle.verify(folder)
    assert manifest["faiss"]["kind"] == "flat" and manifest["faiss"]["nprobe"] is None
    assert "one cluster" in manifest["faiss"]["why"]
    assert load_bundle(folder).index.ntotal == 2
