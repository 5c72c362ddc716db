"""File-level input checks: mapping syntax, UTF-8, empty files, missing columns."""

from __future__ import annotations

import pytest

from index_builder.core.errors import InputError
from index_builder.stages.readers import check_utf8, parse_mapping, read_table


def test_parse_mapping():
    assert parse_mapping("title=name, description=desc") == {"title": "name", "description": "desc"}
    assert parse_mapping("") == {}
    with pytest.raises(InputError, match="not canonical=source"):
        parse_mapping("title")


def test_non_utf8_names_line_and_fix(tmp_path):
    f = tmp_path / "products.csv"
    f.write_bytes("product_id,title\n1,ok\n2,caf\xe9 cr\xe8me\n".encode("latin-1"))
    with pytest.raises(InputError) as exc:
        check_utf8(f)
    msg = str(exc.value)
    assert "products.csv" in msg and "line 3" in msg and "0xe9" in msg and "--encoding" in msg


def test_empty_file_is_an_error(spark, tmp_path):
    f = tmp_path / "events.csv"
    f.write_text("")
    with pytest.raises(InputError, match=r"events\.csv is empty"):
        read_table(spark, f, role="events")


def test_header_only_file_is_an_error(spark, tmp_path):
    f = tmp_path / "products.csv"
    f.write_text("product_id,title\n")
    with pytest.raises(InputError, match="no data rows"):
        read_table(spark, f, role="products")


def test_missing_column_names_file_column_and_fix(spark, tmp_path):
    f = tmp_path / "products.csv"
    f.write_text("product_id,name\n1,Red mug\n")
    with pytest.raises(InputError) as exc:
        read_table(spark, f, required=("product_id", "title"), role="products")
    msg = str(exc.value)
    assert "products.csv" in msg and "'title'" in msg and "--map title=" in msg and "name" in msg


def test_mapping_renames_and_keeps_displaced_column(spark, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"sku": "A1", "name": "Red mug", "title": "old"}\n')
    df = read_table(spark, f, mapping={"product_id": "sku", "title": "name"}, required=("product_id", "title"))
    row = df.collect()[0].asDict()
    assert row["product_id"] == "A1" and row["title"] == "Red mug" and row["title_original"] == "old"


def test_latin1_file_reads_with_encoding_flag(spark, tmp_path):
    f = tmp_path / "products.csv"
    f.write_bytes("product_id,title\n1,caf\xe9\n".encode("latin-1"))
    df = read_table(spark, f, encoding="latin-1", required=("product_id", "title"))
    assert df.collect()[0]["title"] == "café"
