"""The bounds every input record must meet, shared by ``build`` and ``stream`` (pure data, no Spark).

:func:`index_builder.stages.transforms.validate_events` and :func:`~index_builder.stages.transforms.validate_products`
apply them to files and to stream records alike, so a record that passes can crash no later stage: its
timestamp fits pandas' nanosecond range and is not ahead of the clock (popularity decays from the newest
event: one event dated 2200 would make every other product look decades old), its numbers are finite
and sane, and its ids and texts have bounded lengths and no control characters.

Every rejected row carries one of the reasons below; the stream adds the record-level ones.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

# Record-level reasons (the stream, before a record's fields are read).
EMPTY_RECORD = "empty_record"  # a blank line, or a Kafka record with no value
RECORD_TOO_LARGE = "record_too_large"
INVALID_ENCODING = "invalid_encoding"  # bytes that are not UTF-8 (read as U+FFFD)
MALFORMED_JSON = "malformed_json"  # not JSON, or JSON that is not an object
BATCH_FAILED = "batch_failed"  # a micro-batch failed for a reason no rule foresaw: every record of it, with the error
FOLD_IN_FAILED = "fold_in_failed"  # events that passed validation but could not be folded into a bundle
DUPLICATE_EVENT_ID = "duplicate_event_id"  # an event whose event_id was already logged

# Field-level reasons added to the builder's own (empty_user_id, unknown_product_id, ...).
NESTED_VALUE = "nested_value"  # a JSON object or array where a single value belongs
ID_TOO_LONG = "id_too_long"
INVALID_ID = "invalid_id"  # control characters or U+FFFD in an id
INVALID_TEXT = "invalid_text"  # control characters or U+FFFD in a title
TEXT_TOO_LONG = "text_too_long"
VALUE_OUT_OF_RANGE = "value_out_of_range"  # infinite, or above max_quantity / max_rating
PRICE_OUT_OF_RANGE = "price_out_of_range"  # infinite, or above max_price
TIMESTAMP_TOO_OLD = "timestamp_too_old"
TIMESTAMP_IN_FUTURE = "timestamp_in_future"

# Java regex classes (Spark's rlike): C0 controls, DEL and the replacement character. Tab, newline and
# carriage return are allowed in titles (some catalogs wrap them); never in ids.
ID_FORBIDDEN = r"[\x{0000}-\x{001f}\x{007f}\x{fffd}]"
TEXT_FORBIDDEN = r"[\x{0000}-\x{0008}\x{000b}\x{000c}\x{000e}-\x{001f}\x{007f}\x{fffd}]"

OLDEST_EVENT = "1995-01-01"  # before online shops: a zero or a typo, not an event
FUTURE_HOURS = 24.0  # clock skew between a shop's servers and this one


@dataclass(frozen=True)
class Bounds:
    """Limits of every field. ``now`` is the clock the future bound is measured from (default: when
    :meth:`window` is called: the build's start, or each micro-batch's)."""

    oldest_event: str = OLDEST_EVENT
    future_hours: float = FUTURE_HOURS
    max_quantity: float = 1e6  # value of a view/cart/purchase/return (UCI's largest line is 80,995)
    max_rating: float = 100.0  # 1-5 stars, 1-10 and 0-100 scales all fit
    max_price: float = 1e9
    max_id_chars: int = 191  # the event tables' id columns (VARCHAR(191): a MySQL utf8mb4 index limit)
    max_title_chars: int = 1_000
    max_description_chars: int = 100_000
    max_category_chars: int = 1_000
    max_record_chars: int = 1 << 16  # one stream record (a product with a long description fits)
    now: dt.datetime | None = None

    def window(self) -> tuple[dt.datetime, dt.datetime]:
        """(oldest, newest) timestamp an event may carry, both UTC and naive (as Spark compares them)."""
        oldest = parse_day(self.oldest_event, "oldest_event")
        now = self.now or dt.datetime.now(dt.UTC)
        if now.tzinfo is not None:
            now = now.astimezone(dt.UTC).replace(tzinfo=None)
        newest = now + dt.timedelta(hours=self.future_hours)
        if newest <= oldest:
            raise ValueError(f"the event window is empty: oldest {oldest:%Y-%m-%d} is after now + {self.future_hours} h")
        return oldest, newest


def parse_day(text: str, name: str) -> dt.datetime:
    """A date or datetime (ISO 8601) as a naive UTC datetime; a clear error otherwise."""
    try:
        value = dt.datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a date such as 1995-01-01") from None
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


def oldest_event_flag():
    """The ``oldest_event`` field of a config that reads records (build, stream), with its flag."""
    from index_builder.core.flags import flag

    return flag(OLDEST_EVENT, "reject events dated before DATE as timestamp_too_old", metavar="DATE")


def future_hours_flag():
    """The ``future_hours`` field, with its flag (``--future-hours H``)."""
    from index_builder.core.flags import flag

    return flag(FUTURE_HOURS, "reject events dated more than H hours after the clock as timestamp_in_future "
                "(clock skew)", metavar="H", show=lambda h: f"{h:g}")
