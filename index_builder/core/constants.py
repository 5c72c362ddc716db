"""Column names and fixed vocabularies shared by every builder step (one place, like recommenders' constants)."""

from __future__ import annotations

# Canonical product columns (DESIGN.md "Canonical input schema").
PRODUCT_ID = "product_id"
TITLE = "title"
DESCRIPTION = "description"
CATEGORY = "category"
PRICE = "price"
PRODUCT_COLUMNS = (PRODUCT_ID, TITLE, DESCRIPTION, CATEGORY, PRICE)
PRODUCT_REQUIRED = (PRODUCT_ID, TITLE)

# Canonical event columns.
USER_ID = "user_id"
EVENT_TYPE = "event_type"
VALUE = "value"
TS = "ts"
EVENT_COLUMNS = (USER_ID, PRODUCT_ID, EVENT_TYPE, VALUE, TS)
EVENT_ID = "event_id"  # optional, stream only: a redelivered event_id is a duplicate
EVENT_REQUIRED = (USER_ID, PRODUCT_ID)  # event_type defaults to --event-type (purchase), value to 1

EVENT_TYPES = ("view", "cart", "purchase", "rating", "return")

# Derived columns.
TEXT = "text"
EMBEDDING = "embedding"
CLUSTER = "cluster"
POPULARITY = "popularity"
WEIGHT = "weight"
PRODUCT_IDX = "product_idx"
USER_IDX = "user_idx"
N_EVENTS = "n_events"
PURCHASED = "purchased"
HAD = "had"
LAST_TS = "last_ts"
REJECT_REASON = "reject_reason"
SOURCE_FILE = "source_file"
ROW_ID = "_row_id"

# Default event weights for implicit ALS: purchase > cart > view; returns subtract.
DEFAULT_EVENT_WEIGHTS = {"view": 1.0, "cart": 3.0, "purchase": 5.0, "rating": 1.0, "return": -5.0}

# Event types that mean the shopper has the product: never recommended to them again ("already had").
DEFAULT_HAD_TYPES = ("purchase", "rating")

PROJECT = "cartwise"
