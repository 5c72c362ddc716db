"""The Insights tab's live panel (assistant.insights.freshness_markdown): what it says of each kind of version."""

from __future__ import annotations

import pandas as pd

from assistant.insights import freshness_markdown


def test_a_full_build_says_no_live_events_yet():
    text = freshness_markdown({"created_at": "2026-12-07T10:00:00+00:00"}, "20261207T100000Z", swaps=0)
    assert "Serving version **20261207T100000Z**" in text and "0 hot reloads" in text
    assert "No live events in this version: it is the full build of 2026-12-07 10:00:00 UTC" in text
    fixed = freshness_markdown({}, "v1", following=False)
    assert "does not follow a bundle root" in fixed and "hot reload" not in fixed


def test_a_published_version_says_what_it_folded_in_how_fresh_and_its_dead_letters():
    arrived = pd.Timestamp("2026-12-07 10:00:00", tz="UTC")
    stream = {"full_build": "v0", "full_build_at": "2026-12-06T02:00:00+00:00", "events_total": 12_345, "publishes": 3,
              "events_folded": 40, "new_users": 2, "new_products": 1, "newest_event_ts": "2026-12-07T09:59:58+00:00",
              "arrived_at": arrived.timestamp(), "published_at": "2026-12-07T10:00:07+00:00",
              "dead_letters": {"unknown_product_id": 7, "malformed_json": 2}}
    text = freshness_markdown({"stream": stream}, "v3", since=arrived.timestamp() + 9.4, swaps=3)
    assert "**12,345 events folded in** over 3 publishes since the full build v0 (2026-12-06 02:00:00 UTC)" in text
    assert "added 40 events, 2 new customers and 1 new products (published 2026-12-07 10:00:07 UTC)" in text
    assert "The newest event time stamp folded in so far: 2026-12-07 09:59:58 UTC." in text
    assert "newest batch reached the stream at 2026-12-07 10:00:00 UTC" in text
    assert "published **7.0 s** later and served **9.4 s** after the batch arrived" in text
    assert "**9** records" in text and text.index("unknown_product_id | 7") < text.index("malformed_json | 2")
    clean = freshness_markdown({"stream": {**stream, "dead_letters": {}}}, "v3")
    assert "Dead letters: **none** so far." in clean
    older = {k: v for k, v in stream.items() if k not in ("dead_letters", "arrived_at")}  # a stream before this
    said = freshness_markdown({"stream": older}, "v3")
    assert "not recorded" in said and "newest batch" not in said and "so far: 2026-12-07 09:59:58 UTC." in said


def test_hostile_reason_text_is_escaped():
    stream = {"events_total": 1, "publishes": 1, "dead_letters": {"<img src=x onerror=alert(1)>": 1}}
    text = freshness_markdown({"stream": stream}, "<b>v</b>")
    assert "<img" not in text and "<b>v</b>" not in text


def test_a_malformed_or_foreign_stream_section_never_raises():
    """The panel is redrawn by a timer every few seconds: a field it cannot read is left out or shown as "?"."""
    good = {"events_total": 3, "publishes": 1, "arrived_at": 1_765_000_000.0, "published_at": "2025-12-06T05:46:41Z"}
    for stream in ({"events_total": None}, {"events_total": "12.0"}, {"arrived_at": "1704067200.5", "published_at": 1.7e9},
                   {"arrived_at": float("nan"), "published_at": 1.7e9}, {"full_build_at": "yesterday"},
                   {"dead_letters": ["a"]}, {"dead_letters": {"x": None, "a|b\nc": "2"}}, "yes", {"publishes": 1e400},
                   {**good, "arrived_at": 1_765_000_000_000}, {**good, "published_at": "2025-12-06T05:46:00"}):
        text = freshness_markdown({"stream": stream}, "v")
        assert text.startswith("### Live")
    ms = freshness_markdown({"stream": {**good, "arrived_at": 1_765_000_000_000}}, "v")
    assert "reached the stream at 2025-12-06 05:46:40 UTC" in ms, "epoch milliseconds are read as such"
    skew = freshness_markdown({"stream": {**good, "published_at": "2025-12-06T05:46:00"}}, "v")
    assert "**-40.0 s** (the clocks of the stream and this app disagree)" in skew
    cells = freshness_markdown({"stream": {"dead_letters": {"a|b\nc": "2"}}}, "v")
    assert "| a\\|b c | 2 |" in cells, "a | or a newline in a reason cannot break the table"
    assert freshness_markdown({}, None).startswith("### Live") and "full build of ?" in freshness_markdown({}, None)


def test_the_panel_of_a_broken_assistant_says_so_instead_of_raising():
    from assistant.ui import live_markdown

    class Broken:
        @property
        def bundle(self):
            raise OSError("the bundle folder is gone")

    assert "cannot be read now" in live_markdown(Broken())
