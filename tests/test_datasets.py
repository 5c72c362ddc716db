"""Dataset download through a real HTTP server on 127.0.0.1 serving small files."""

from __future__ import annotations

import dataclasses
import functools
import io
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from index_builder.core.errors import DatasetUnavailable
from index_builder.stages.datasets import DATASETS, fetch, locate


@pytest.fixture()
def http_dir(tmp_path):
    """A real HTTP server on a free loopback port serving ``tmp_path/www``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _tiny_retail() -> pd.DataFrame:
    return pd.DataFrame({
        "InvoiceNo": [536365, 536366, "C536367"],  # Excel mixes ints and strings in one column
        "StockCode": [85123, "85123A", "22423"],
        "Description": ["WHITE HANGING HEART", "WHITE HANGING HEART", "CAKESTAND"],
        "Quantity": [6, 2, -1],
        "InvoiceDate": pd.to_datetime(["2010-12-01 08:26", "2010-12-01 09:00", "2010-12-02 10:00"]),
        "UnitPrice": [2.55, 2.95, 12.75],
        "CustomerID": [17850.0, None, 13047.0],
        "Country": ["UK", "UK", "UK"],
    })


def test_zip_of_xlsx_is_downloaded_verified_and_converted(http_dir, tmp_path):
    root, base = http_dir
    xlsx = io.BytesIO()
    _tiny_retail().to_excel(xlsx, index=False)
    with zipfile.ZipFile(root / "online+retail.zip", "w") as zf:
        zf.writestr("Online Retail.xlsx", xlsx.getvalue())
    spec = dataclasses.replace(DATASETS["online-retail"], url=f"{base}/online+retail.zip", min_rows=3)
    cache = tmp_path / "cache"

    path = locate(spec, tmp_path / "nowhere", cache=cache)

    assert path == cache / "uci-online-retail" / "online_retail_2010-2011.parquet"
    df = pd.read_parquet(path)
    assert list(df.columns) == list(spec.columns)
    assert df["StockCode"].tolist() == ["85123", "85123A", "22423"]
    assert df["InvoiceDate"].iloc[0] == "2010-12-01 08:26:00"
    # A second lookup finds the cached copy without a server.
    assert locate(dataclasses.replace(spec, url="http://127.0.0.1:9/gone"), None, cache=cache) == path


def test_csv_download(http_dir, tmp_path):
    root, base = http_dir
    pd.DataFrame({"product_id": ["P0", "P1"], "title": ["Rug", "Paint"], "description": ["a", "b"]}).to_csv(
        root / "products_dataset.csv", index=False)
    spec = dataclasses.replace(DATASETS["datacamp-products"], url=f"{base}/products_dataset.csv", min_rows=2)
    path = fetch(spec, tmp_path / "cache")
    assert pd.read_csv(path)["title"].tolist() == ["Rug", "Paint"]


def test_missing_file_on_server_says_where_to_put_it(http_dir, tmp_path):
    _, base = http_dir
    spec = dataclasses.replace(DATASETS["online-retail"], url=f"{base}/nothing.zip")
    with pytest.raises(DatasetUnavailable) as exc:
        locate(spec, None, cache=tmp_path / "cache")
    msg = str(exc.value)
    assert "download failed" in msg and "404" in msg
    assert str(tmp_path / "cache" / "uci-online-retail") in msg and "--data-dir" in msg
    assert not (tmp_path / "cache" / "uci-online-retail" / spec.filename).exists()


def test_wrong_content_is_refused(http_dir, tmp_path):
    root, base = http_dir
    (root / "online+retail.zip").write_text("<html>maintenance</html>")
    spec = dataclasses.replace(DATASETS["online-retail"], url=f"{base}/online+retail.zip")
    with pytest.raises(DatasetUnavailable, match="not a readable"):
        fetch(spec, tmp_path / "cache")


def test_too_few_rows_is_refused(http_dir, tmp_path):
    root, base = http_dir
    pd.DataFrame({"product_id": ["P0"], "title": ["Rug"], "description": ["a"]}).to_csv(root / "p.csv", index=False)
    spec = dataclasses.replace(DATASETS["datacamp-products"], url=f"{base}/p.csv")
    with pytest.raises(DatasetUnavailable, match="1 rows, expected >= 2000"):
        fetch(spec, tmp_path / "cache")


def test_no_download_flag(tmp_path):
    with pytest.raises(DatasetUnavailable, match="downloading is off"):
        locate(DATASETS["online-retail"], tmp_path, cache=tmp_path / "cache", download=False)


def _movielens_zip(root, drop: str | None = None) -> bytes:
    files = {"u.data": b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n",
             "u.item": b"242|Kolya (1996)|24-Jan-1997||http://x|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n",
             "u.genre": b"unknown|0\nAction|1\n", "README": b"GroupLens"}
    with zipfile.ZipFile(root / "ml-100k.zip", "w") as zf:
        for name, data in files.items():
            if name != drop:
                zf.writestr(f"ml-100k/{name}", data)
    return files


def test_a_multi_file_archive_keeps_its_files_byte_for_byte(http_dir, tmp_path):
    """MovieLens ships three files the adapter reads as they are: they land beside each other, unconverted."""
    root, base = http_dir
    files = _movielens_zip(root)
    spec = dataclasses.replace(DATASETS["movielens-100k"], url=f"{base}/ml-100k.zip", min_rows=3)
    cache = tmp_path / "cache"
    path = locate(spec, tmp_path / "nowhere", cache=cache)
    assert path == cache / "movielens-100k" / "u.data"
    for name in ("u.data", "u.item", "u.genre"):
        assert (path.parent / name).read_bytes() == files[name]
    assert not (path.parent / "README").exists()
    assert locate(spec, None, cache=cache, download=False) == path  # found in the cache from now on


def test_a_multi_file_dataset_needs_every_file(http_dir, tmp_path):
    root, base = http_dir
    _movielens_zip(root, drop="u.item")
    spec = dataclasses.replace(DATASETS["movielens-100k"], url=f"{base}/ml-100k.zip", min_rows=3)
    with pytest.raises(DatasetUnavailable, match=r"not the expected archive.*u.data and u.item and u.genre"):
        locate(spec, tmp_path / "nowhere", cache=tmp_path / "cache")
    assert not (tmp_path / "cache" / "movielens-100k" / "u.data").exists()  # nothing half-kept
    # a folder with u.data but no u.item is not the dataset
    (tmp_path / "data" / "movielens-100k").mkdir(parents=True)
    (tmp_path / "data" / "movielens-100k" / "u.data").write_text("1\t2\t3\t4\n")
    with pytest.raises(DatasetUnavailable, match="downloading is off"):
        locate(spec, tmp_path / "data", cache=tmp_path / "cache", download=False)
