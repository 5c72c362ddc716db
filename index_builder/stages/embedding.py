"""The build's embedding step in Spark: the embedder runs inside the executors (a pandas UDF over Arrow
batches), loaded once per Python worker from its spec."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pandas as pd

from index_builder.core.embedders.base import Embedder
from index_builder.core.embedders.factory import embedder_from_spec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def embed_column(df: DataFrame, embedder: Embedder, text_col: str, out_col: str, counter=None) -> DataFrame:
    """Add ``out_col`` (array<float>) with the embedding of ``text_col``, computed in the executors.

    A pandas UDF over Arrow batches; the model is loaded once per Python worker and reused. ``counter``
    (a Spark accumulator) gets the number of texts embedded, for progress lines on the driver.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    spec = embedder.spec()

    @F.pandas_udf(T.ArrayType(T.FloatType()))
    def _embed(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        worker = embedder_from_spec(spec)
        for texts in batches:
            vecs = worker.encode(texts.fillna("").astype(str).tolist())
            if counter is not None:
                counter.add(len(texts))
            yield pd.Series(list(vecs))

    return df.withColumn(out_col, _embed(F.col(text_col)))
