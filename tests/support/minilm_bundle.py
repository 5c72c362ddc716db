"""The tiny hand-made catalog of :mod:`tests.support.tiny_bundle`, embedded with the real MiniLM model, so that
``python app.py --bundle`` serves it as it serves a built bundle (the query encoder is checked against the
manifest's model and dimension). No Spark: a few seconds to write."""

from __future__ import annotations

from pathlib import Path

from tests.support.tiny_bundle import CATALOG, write_tiny_bundle


def write_minilm_bundle(root: Path) -> Path:
    """The tiny catalog under ``root`` (a bundle root with ``current``), its vectors from MiniLM."""
    from index_builder.core.embedders.factory import make_embedder

    embedder = make_embedder("minilm")
    vectors = embedder.encode([f"{c[1]} {c[3]}" for c in CATALOG])
    return write_tiny_bundle(root, vectors=vectors,
                             embedding={"model": embedder.model, "dim": int(vectors.shape[1]),
                                        "backend": embedder.backend},
                             manifest={"dataset": "tiny-minilm", "params": {"embedder": "minilm", "currency": "GBP"}})
