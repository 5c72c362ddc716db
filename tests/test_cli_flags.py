"""The CLI's flags come from the config dataclasses: one default per knob, and a flag for every field that
says it has one (pure argparse, no Spark)."""

from __future__ import annotations

import dataclasses

import pytest

from index_builder.cli import make_parser
from index_builder.core.flags import config_args
from index_builder.live.stream import StreamConfig
from index_builder.pipeline import BuildConfig


def parse(*argv: str):
    return make_parser().parse_args(list(argv))


@pytest.mark.parametrize("cls, argv, required", [
    (BuildConfig, ("build", "--out", "o"), {"out": "o"}),
    (StreamConfig, ("stream", "--bundle", "b"), {"bundle": "b"}),
])
def test_a_command_without_flags_is_the_dataclass_with_its_defaults(cls, argv, required):
    assert cls(**config_args(cls, parse(*argv))) == cls(**required)


@pytest.mark.parametrize("cls, command", [(BuildConfig, "build"), (StreamConfig, "stream")])
def test_every_flag_field_has_its_flag(cls, command):
    sub = next(a for a in make_parser()._actions if a.dest == "command").choices[command]
    dests = {a.dest for a in sub._actions}
    flagged = {f.name for f in dataclasses.fields(cls) if "cli" in f.metadata}
    assert flagged and flagged <= dests
    # the few fields without a flag are set by code only
    assert {f.name for f in dataclasses.fields(cls)} - flagged <= {"max_files"}


def test_flags_parse_into_the_fields():
    args = parse("build", "--out", "o", "--products", "p.csv", "--events", "e.csv", "--map", "title=name",
                 "--als-rank", "8", "--event-weights", "view=2", "--had-types", "purchase,cart", "--no-tune",
                 "--no-eval", "--no-download", "--currency", "usd", "--normalize-ids", "--future-hours", "1.5")
    cfg = BuildConfig(**config_args(BuildConfig, args))
    assert (cfg.products, cfg.events, cfg.mapping, cfg.als_rank) == ("p.csv", "e.csv", {"title": "name"}, 8)
    assert cfg.event_weights["view"] == 2.0 and cfg.event_weights["purchase"] == BuildConfig(out="o").event_weights["purchase"]
    assert cfg.had_types == ("purchase", "cart") and (cfg.tune, cfg.evaluate, cfg.download) == (False, False, False)
    assert (cfg.currency, cfg.normalize_ids, cfg.future_hours) == ("USD", True, 1.5)
    st = StreamConfig(**config_args(StreamConfig, parse("stream", "--bundle", "b", "--trigger-seconds", "0.5",
                                                        "--until-idle", "3", "--publish-interval", "2")))
    assert (st.trigger_s, st.until_idle_s, st.publish_interval_s) == (0.5, 3.0, 2.0)


@pytest.mark.parametrize("argv, says", [
    (("build", "--out", "o", "--currency", "pounds"), "3-letter currency code"),
    (("build", "--out", "o", "--had-types", "purchase,bought"), "unknown event type"),
    (("build", "--out", "o", "--event-weights", "click=1"), "unknown event type"),
    (("build", "--out", "o", "--map", "garbage"), "argument --map: --map item 'garbage' is not canonical=source"),
    (("build", "--out", "o", "--event-weights", "view"), "argument --event-weights:"),
])
def test_a_bad_flag_value_is_refused_with_what_is_known(argv, says, capsys):
    """One line naming the flag and the fix, exit code 2: never a traceback (a bad --map used to be one)."""
    with pytest.raises(SystemExit) as stop:
        parse(*argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and says in err and "Traceback" not in err


def test_the_help_shows_each_default_once():
    text = " ".join(next(a for a in make_parser()._actions if a.dest == "command").choices["build"].format_help().split())
    assert "(default 32)" in text and "(default local[2])" in text and "last 10% of the events" in text
    assert text.count("(default 32)") == 1
