"""The MovieLens 100K adapter on the real files (../shared/data/movielens-100k, read as they ship)."""

from __future__ import annotations

import pytest

from index_builder.core.errors import InputError
from index_builder.stages.adapters import movielens
from index_builder.stages.datasets import DATASETS, locate


@pytest.fixture(scope="module")
def ml_path(data_dir):
    if data_dir is None or not (data_dir / "movielens-100k" / "u.item").is_file():
        pytest.skip("MovieLens 100K is not in the data dir")
    return locate(DATASETS["movielens-100k"], data_dir, download=False)


def test_movielens_products_are_titles_with_genres_and_its_events_ratings(spark, ml_path):
    source = movielens(spark, ml_path)
    products = source.products.toPandas().set_index("product_id")
    assert len(products) == 1_682 and products.index.is_unique
    assert products.loc["1", "title"] == "Toy Story (1995)"
    assert products.loc["1", "category"] == "Animation, Children's, Comedy"  # u.genre's order
    assert products.loc["267", "title"] == "unknown"  # the file's own placeholder title, kept as it is
    events = source.events.toPandas()
    assert len(events) == 100_000 and set(events["event_type"]) == {"rating"}
    first = events.iloc[0]
    assert (first["user_id"], first["product_id"], first["value"], first["ts"]) == ("196", "242", "3", "881250949")
    assert events["user_id"].nunique() == 943 and set(events["value"]) == {"1", "2", "3", "4", "5"}
    assert "rating" in source.defaults["event_type"]


def test_a_file_that_is_not_movielens_is_named_with_what_was_expected(spark, tmp_path):
    (tmp_path / "u.genre").write_text("unknown|0\nAction|1\n")
    (tmp_path / "u.item").write_text("1,Toy Story,1995\n")
    (tmp_path / "u.data").write_text("196\t242\t3\t881250949\n")
    with pytest.raises(InputError, match=r"u.item: 1 '\|'-separated fields, expected 5 \+ 2 genre flags"):
        movielens(spark, tmp_path / "u.data")
    (tmp_path / "u.item").write_text("1|Toy Story (1995)|x||u|0|1\n")
    (tmp_path / "u.data").write_text("196,242,3\n")
    with pytest.raises(InputError, match="u.data: no line has 4 tab-separated fields"):
        movielens(spark, tmp_path / "u.data")


def test_a_line_with_too_many_or_too_few_fields_is_a_reject_with_its_text(spark, tmp_path):
    (tmp_path / "u.genre").write_text("unknown|0\nAction|1\n")
    (tmp_path / "u.item").write_text("1|Toy Story (1995)|x||u|0|1\n")
    (tmp_path / "u.data").write_text("7\t1\t4\t881250949\n7\t1\t5\t881250949\textra\n8\t1\t3\n")
    source = movielens(spark, tmp_path / "u.data")
    assert source.events.select("user_id", "value", "ts").collect() == [("7", "4", "881250949")]
    bad = source.rejects["movielens_lines"].orderBy("_row_id").toPandas()
    assert bad["line"].tolist() == ["7\t1\t5\t881250949\textra", "8\t1\t3"]
    assert set(bad["reject_reason"]) == {"wrong_field_count"}
