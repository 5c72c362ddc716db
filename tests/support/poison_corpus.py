"""Poison records for the live stream: every kind of bad record a careless feed sends, with the reason the
stream must dead-letter it for, and good records around them (tests/test_stream_poison.py, bench/soak.py).

Each poison payload is unique, so its dead letter can be found by its raw text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Poison:
    kind: str
    payload: bytes
    reason: str

    @property
    def raw(self) -> str:
        """The text the dead letter keeps (undecodable bytes read as U+FFFD, a byte-order mark dropped)."""
        return self.payload.decode("utf-8", "replace").removeprefix("\ufeff")


def _j(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()


def poison_records(product: str, new_product: str, user: str, tag: str = "") -> list[Poison]:
    """At least 30 kinds of bad record. ``product``: a catalog product id; ``tag`` makes payloads unique
    across rounds (the soak benchmark sends the corpus many times)."""
    u = f"{user}{tag}"
    ok = {"user_id": u, "product_id": product, "event_type": "purchase", "value": 1, "ts": "2011-12-01T10:00:00Z"}

    def ev(**change) -> bytes:
        return _j({**ok, **change})

    def prod(**fields) -> bytes:
        return _j({"product_id": f"P-{tag}-{len(fields)}", "title": "A poison product", **fields})

    out = [
        # not an object at all
        Poison("not_json", f"{{not json {tag}".encode(), "malformed_json"),
        Poison("truncated_json", ev()[:-7], "malformed_json"),
        Poison("json_array", f'[1, 2, "{tag}"]'.encode(), "malformed_json"),
        Poison("json_string", f'"a plain string {tag}"'.encode(), "malformed_json"),
        Poison("json_number", f"4{len(tag)}2".encode() if tag else b"42", "malformed_json"),
        Poison("array_of_events", b"[" + ev(value=9) + b"]", "malformed_json"),
        Poison("empty_value", b"", "empty_record"),
        Poison("blank_value", b" \t ", "empty_record"),
        Poison("invalid_utf8", b'{"user_id": "\xff\xfe' + tag.encode() + b'", "product_id": "x"}', "invalid_encoding"),
        Poison("latin1_bytes", b'{"user_id": "caf\xe9' + tag.encode() + b'", "product_id": "x"}', "invalid_encoding"),
        Poison("too_large", ev(padding="x" * 70_000), "record_too_large"),
        # ids
        Poison("empty_object", f'{{"tag": "{tag}"}}'.encode(), "empty_user_id"),
        Poison("no_product", _j({"user_id": u, "event_type": "view"}), "empty_product_id"),
        Poison("unknown_product", ev(product_id=f"NO-SUCH-{tag}"), "unknown_product_id"),
        Poison("nested_user", ev(user_id={"id": u}), "nested_value"),
        Poison("list_product", ev(product_id=[product, tag]), "nested_value"),
        Poison("id_too_long", ev(user_id=u + "x" * 200), "id_too_long"),
        Poison("nul_in_id", ev(user_id=f"{u}\u0000"), "invalid_id"),
        Poison("newline_in_id", ev(user_id=f"{u}\nDROP"), "invalid_id"),
        # types and numbers
        Poison("unknown_event_type", ev(event_type="teleport"), "unknown_event_type"),
        Poison("numeric_event_type", ev(event_type=5), "unknown_event_type"),
        Poison("text_value", ev(value="lots"), "unparseable_value"),
        Poison("infinite_value", ev(value="Infinity"), "value_out_of_range"),
        Poison("overflowing_value", ev(value="1e400"), "value_out_of_range"),
        Poison("nan_value", ev(value="NaN"), "unparseable_value"),
        Poison("negative_value", ev(value=-3), "negative_value"),
        Poison("huge_quantity", ev(value=2e6), "value_out_of_range"),
        Poison("rating_without_value", _j({k: v for k, v in {**ok, "event_type": "rating"}.items() if k != "value"}),
               "missing_rating"),
        Poison("huge_rating", ev(event_type="rating", value=500), "value_out_of_range"),
        Poison("nested_value", ev(value={"qty": 1}), "nested_value"),
        # times
        Poison("year_9999", ev(ts="9999-12-31T00:00:00Z"), "timestamp_in_future"),
        Poison("year_2200", ev(ts="2200-01-01"), "timestamp_in_future"),
        Poison("epoch_ms_2286", ev(ts=9999999999999), "timestamp_in_future"),
        Poison("epoch_zero", ev(ts="1970-01-01T00:00:00Z"), "timestamp_too_old"),
        Poison("text_time", ev(ts="yesterday-ish"), "unparseable_timestamp"),
        Poison("huge_epoch", ev(ts=1e300), "unparseable_timestamp"),
        # product records
        Poison("product_nul_title", prod(title=f"Lamp\u0000{tag}"), "invalid_text"),
        Poison("product_long_title", prod(title="T" * 1_500), "text_too_long"),
        Poison("product_infinite_price", prod(price="Infinity"), "price_out_of_range"),
        Poison("product_huge_price", prod(price=5e12), "price_out_of_range"),
        Poison("product_negative_price", prod(price=-1), "negative_price"),
        Poison("product_text_price", prod(price="cheap"), "unparseable_price"),
        Poison("product_nested_price", prod(price={"gbp": 1}), "nested_value"),
        Poison("product_long_id", _j({"product_id": "P" * 300 + tag, "title": "Long id"}), "id_too_long"),
    ]
    return out


def good_records(events: pd.DataFrame, user: str, new_product: str, tag: str = "", ts: str | None = None) -> list[bytes]:
    """Valid records: ``events`` (canonical rows) as JSON, a new product and an event for it in the same
    batch, a price record for a known product next to an event for it, a record with a byte-order mark."""
    out = []
    for r in events.itertuples():
        out.append(_j({"user_id": str(r.user_id), "product_id": str(r.product_id), "event_type": r.event_type,
                       "value": float(r.value), "ts": ts or pd.Timestamp(r.ts).isoformat()}))
    known = str(events["product_id"].iloc[0])
    when = ts or "2011-12-05T10:00:00"
    out += [
        _j({"product_id": new_product, "title": f"Scented lavender candle jar {tag}", "price": 4.5}),
        _j({"user_id": f"{user}{tag}", "product_id": new_product, "event_type": "purchase", "value": 2, "ts": when}),
        _j({"product_id": known, "title": "price update", "price": 3.25}),
        _j({"user_id": f"{user}{tag}", "product_id": known, "event_type": "view", "ts": when}),
        "\ufeff".encode() + _j({"user_id": f"{user}{tag}-bom", "product_id": known, "ts": when}),
    ]
    return out
