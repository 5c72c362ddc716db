"""Recommender settings with documented defaults; the app may override them from flags."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RecommenderConfig:
    """How candidates are found and scored.

    score = w_content * content + w_als * als + w_popularity * popularity, each term in [0, 1]:
    content is the cosine similarity to the closest seed (a viewed/bought product or the shopper's
    words), als the user's ALS score divided by their best score over the catalog, popularity
    log1p(buyers) / log1p(max buyers). The final list is picked by MMR for diversity.
    """

    w_content: float = 0.6
    w_als: float = 0.3
    w_popularity: float = 0.1
    n_results: int = 5
    neighbours_per_seed: int = 60  # FAISS neighbours fetched per seed before the cluster filter
    max_seeds: int = 5  # most recent viewed (or bought) products used as seeds
    als_candidates: int = 40  # top ALS items added as candidates for a known user
    query_candidates: int = 120  # FAISS neighbours of a free-text need
    mmr_lambda: float = 0.75  # 1 = pure score, lower = more diverse
    keyword_similarity: float = 0.5  # semantic match of an include/exclude keyword to a product
    cheaper_factor: float = 0.8  # "cheaper" = at most this share of the median price last shown
