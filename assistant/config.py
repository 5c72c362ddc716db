"""Recommender settings with documented defaults; a bundle's manifest carries the values its evaluation tuned."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# The settings the builder's evaluation tunes on its validation split and writes to manifest["recommender"].
TUNED = ("w_item", "w_als", "w_popularity", "w_content_history", "popularity_half_life_days",
         "history_half_life_days", "mmr_lambda", "reorder_share", "reorder_min_probability")
# The settings that only weigh and diversify candidates already scored: changing them changes neither the
# candidates nor their terms (Recommender.scored_candidates), only the blend and the MMR (Recommender.pick).
BLEND_ONLY = ("w_content", "w_content_history", "w_item", "w_als", "w_popularity", "mmr_lambda", "reorder_share",
              "reorder_min_probability")


@dataclass(frozen=True)
class RecommenderConfig:
    """How candidates are found and scored.

    score = c * content + (1 - c) * cf, with
    cf = (w_item * item + w_als * als + w_popularity * popularity) / (w_item + w_als + w_popularity);
    each term is in [0, 1]. content is the cosine similarity to the closest seed; c is ``w_content`` when
    the seeds are what the shopper views (or an anchor, or their words) and ``w_content_history`` when
    they are the shopper's past purchases. item is the item-item (EASE) score of the shopper's products
    (past purchases, recency-weighted by ``history_half_life_days``, plus what they view now) over its
    best; als the user's ALS score over their best; popularity the buyers of each product, each counted
    with weight 0.5 ** (days since that interaction / ``popularity_half_life_days``) (no decay when
    None), over the best product's. The final list is picked by MMR for diversity.

    A known customer's "what should I buy next?" (nothing viewed or asked for) also restocks: up to
    ``reorder_share`` of the list goes to their past products whose buy-again probability (the bundle's
    buy-again table) is at least ``reorder_min_probability``, most likely first; products new to them fill
    the rest. Both are tuned on validation (a ratings dataset has no table, so no reorder).
    """

    w_content: float = 0.6
    w_content_history: float = 0.0
    w_item: float = 1.0
    w_als: float = 0.3
    w_popularity: float = 0.3
    popularity_half_life_days: float | None = 14.0
    history_half_life_days: float | None = 60.0
    n_results: int = 5
    neighbours_per_seed: int = 60  # nearest products fetched per seed within its cluster
    max_seeds: int = 5  # most recent viewed (or bought) products used as seeds
    als_candidates: int = 100  # top ALS items added as candidates for a known user
    item_candidates: int = 100  # top item-item products added as candidates
    popular_candidates: int = 50  # top products by the popularity term added as candidates
    query_candidates: int = 120  # FAISS neighbours of a free-text need
    catalog_scan: int = 20_000  # best sellers scanned when filters leave too few candidates
    catalog_scan_meaning: int = 5_000  # of those, how many an include keyword may match by meaning (all: by title)
    mmr_lambda: float = 0.9  # 1 = pure score, lower = more diverse
    keyword_similarity: float = 0.5  # semantic match of an include/exclude keyword to a product
    cheaper_factor: float = 0.8  # "cheaper" = at most this share of the median price last shown
    exclude_viewed: bool = False  # also drop every viewed product (the seeds themselves are always dropped)
    reorder_share: float = 0.4  # at most this share of a known customer's list are reorders (when not tuned)
    reorder_min_probability: float = 0.3  # a past product is due when its buy-again probability is at least this

    def replace(self, **changes: Any) -> RecommenderConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], **overrides: Any) -> RecommenderConfig:
        """Defaults, then the values the bundle's evaluation tuned (manifest["recommender"]), then ``overrides``."""
        names = {f.name for f in dataclasses.fields(cls)}
        tuned = {k: v for k, v in (manifest.get("recommender") or {}).items() if k in names}
        return cls(**{**tuned, **overrides})

    def candidate_key(self) -> RecommenderConfig:
        """This config with every :data:`BLEND_ONLY` setting at its default: equal keys, equal candidates."""
        defaults = RecommenderConfig()
        return self.replace(**{k: getattr(defaults, k) for k in BLEND_ONLY})

    def tuned(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in TUNED}
