"""Command-line flags from config dataclasses: a field declared with :func:`flag` carries its flag's help
(and type, choices, metavar), its default is the field's own, so a default is written once (in the
dataclass) and the CLI, the code and the manifest's ``params`` agree by construction.

    @dataclass
    class BuildConfig:
        seed: int = flag(42, "seed of every random choice")

    add_flags(parser, BuildConfig)             # --seed N (default 42)
    BuildConfig(**config_args(BuildConfig, parser.parse_args()))
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

_KEY = "cli"


def flag(default: Any = dataclasses.MISSING, help: str = "", *, name: str | None = None, type: Callable | None = None,
         choices: Iterable[str] | None = None, metavar: str | None = None, negate: str | None = None,
         factory: Callable[[], Any] | None = None, show: Callable[[Any], str] | None = None,
         required: bool = False, group: str | None = None) -> Any:
    """A dataclass field that is also a flag. ``name``: the flag when it is not ``--field-name``; ``type``:
    parses the flag's text (default: the default's type); ``negate``: a ``--no-...`` flag that turns a true
    default off; a bool field defaulting to False is a plain switch; ``show``: how the help writes the
    default; ``group``: the help section."""
    meta = {_KEY: {"help": help, "name": name, "type": type, "choices": tuple(choices) if choices else None,
                   "metavar": metavar, "negate": negate, "show": show, "required": required, "group": group}}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_flags(parser: argparse.ArgumentParser, cls: type, *, only: Iterable[str] | None = None) -> None:
    """Add one flag per :func:`flag` field of ``cls`` (or of the fields named in ``only``), in field order."""
    only = set(only) if only is not None else None
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_KEY)
        if meta is None or (only is not None and f.name not in only):
            continue
        target = parser
        if meta["group"]:
            target = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        default = default_of(f)
        text = meta["help"].replace("%", "%%")
        if meta["negate"]:
            target.add_argument(meta["negate"], dest=f.name, action="store_false", help=text)
            continue
        name = meta["name"] or "--" + f.name.replace("_", "-")
        if default is False:
            target.add_argument(name, dest=f.name, action="store_true", help=text)
            continue
        if default is not None and not meta["required"]:
            shown = meta["show"](default) if meta["show"] else f"{default:,}" if isinstance(default, int) else str(default)
            text = f"{text} (default {shown.replace('%', '%%')})" if text else f"default {shown.replace('%', '%%')}"
        kind = meta["type"] or (type(default) if default is not None else str)
        target.add_argument(name, dest=f.name, type=_refusing(kind), default=default, choices=meta["choices"],
                            metavar=meta["metavar"], required=meta["required"], help=text)


def _refusing(parse: Callable) -> Callable:
    """``parse`` as an argparse type: whatever it raises about the text (an ``InputError`` that names the fix,
    say) becomes argparse's one-line "argument --x: ..." error and exit code 2, not a traceback."""
    if parse in (int, float, str):
        return parse

    def checked(text: str) -> Any:
        try:
            return parse(text)
        except (argparse.ArgumentTypeError, TypeError, ValueError):
            raise
        except Exception as exc:  # noqa: BLE001 - the message is what the user needs
            raise argparse.ArgumentTypeError(str(exc)) from None

    checked.__name__ = getattr(parse, "__name__", "value")  # argparse names the type in "invalid X value"
    return checked


def config_args(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` that ``args`` holds, as keyword arguments of ``cls``."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
