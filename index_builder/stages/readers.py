"""Read user files (CSV, Parquet, JSON lines) into Spark with file-level checks and column mapping."""

from __future__ import annotations

import codecs
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from index_builder.core.constants import ROW_ID
from index_builder.core.errors import InputError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
}


def parse_mapping(text: str | None) -> dict[str, str]:
    """Parse ``--map title=name,description=desc`` into ``{canonical: source}``."""
    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise InputError(f"--map item {part!r} is not canonical=source (example: --map title=name,price=cost)")
        key, value = (s.strip() for s in part.split("=", 1))
        if not key or not value:
            raise InputError(f"--map item {part!r} has an empty side (example: --map title=name)")
        mapping[key] = value
    return mapping


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _local_path(path: str) -> Path:
    return Path(path[len("file://") :] if path.startswith("file://") else path)


def detect_format(path: str) -> str:
    """Spark source name for a file (or a folder of part files) by its extension."""
    p = _local_path(path)
    if _is_local(path) and p.is_dir():
        exts = {f.suffix.lower() for f in p.iterdir() if not f.name.startswith((".", "_"))}
        found = [FORMATS[e] for e in exts if e in FORMATS]
        if not found:
            raise InputError(f"{path}: folder holds no .csv, .parquet or .json files; point at a file or a folder of them")
        return found[0]
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown file type {p.suffix!r}; use .csv, .tsv, .parquet, .json or .jsonl")
    return fmt


# Python codec names -> the charsets Spark 4's CSV/JSON readers accept.
SPARK_CHARSETS = {
    "utf-8": "utf-8", "iso8859-1": "iso-8859-1", "latin-1": "iso-8859-1", "ascii": "us-ascii",
    "utf-16": "utf-16", "utf-16-be": "utf-16be", "utf-16-le": "utf-16le", "utf-32": "utf-32",
}


def spark_charset(encoding: str) -> str:
    """Normalise an encoding name (latin-1, ISO_8859_1, utf8...) to the one Spark accepts."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r}; use utf-8 or latin-1") from None
    if name not in SPARK_CHARSETS:
        raise InputError(
            f"encoding {encoding!r} is not readable by Spark's CSV/JSON readers; re-save the file as UTF-8 "
            f"(supported: {', '.join(sorted(set(SPARK_CHARSETS.values())))})"
        )
    return SPARK_CHARSETS[name]


def check_utf8(path: Path, chunk_size: int = 1 << 20) -> None:
    """Raise InputError naming the line and byte offset of the first invalid UTF-8 byte."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    line = 1
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                bad = offset + exc.start
                line += chunk[: exc.start].count(b"\n")
                raise InputError(
                    f"{path}: not valid UTF-8 (byte 0x{chunk[exc.start]:02x} at offset {bad}, line {line}); "
                    "re-save the file as UTF-8 or pass --encoding (for example --encoding latin-1)"
                ) from None
            offset += len(chunk)
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputError(
                f"{path}: not valid UTF-8 (the file ends inside a multi-byte character); "
                "re-save the file as UTF-8 or pass --encoding"
            ) from None


def read_table(
    spark: SparkSession,
    path: str | os.PathLike,
    *,
    mapping: dict[str, str] | None = None,
    required: tuple[str, ...] = (),
    encoding: str = "utf-8",
    role: str = "input",
) -> DataFrame:
    """Read one input file, rename mapped columns to canonical names and check required ones.

    Every row gets a ``_row_id`` (increasing in file order) so rejects can be traced back.
    """
    from pyspark.sql import functions as F

    path = str(path)
    if _is_local(path):
        local = _local_path(path)
        if not local.exists():
            raise InputError(f"{role} file {path} does not exist; check the path")
        if local.is_file() and local.stat().st_size == 0:
            raise InputError(f"{role} file {path} is empty; it needs a header row and at least one data row")
    fmt = detect_format(path)
    encoding = spark_charset(encoding)
    if fmt in ("csv", "json") and _is_local(path) and encoding == "utf-8":
        local = _local_path(path)
        for f in [local] if local.is_file() else sorted(local.glob("*")):
            if f.is_file() and not f.name.startswith((".", "_")):
                check_utf8(f)
    reader = spark.read
    if fmt == "csv":
        sep = "\t" if path.lower().endswith(".tsv") else ","
        reader = (
            reader.option("header", "true")
            .option("multiLine", "true")
            .option("escape", '"')
            .option("sep", sep)
            .option("encoding", encoding)
            .option("mode", "PERMISSIVE")
        )
    elif fmt == "json":
        reader = reader.option("encoding", encoding)
    df = reader.format(fmt).load(path)
    if not df.columns or df.limit(1).count() == 0:
        raise InputError(f"{role} file {path} has no data rows; it needs a header row and at least one data row")
    df = apply_mapping(df, mapping or {}, path=path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(
            f"{role} file {path}: missing column {', '.join(repr(c) for c in missing)} "
            f"(found: {', '.join(df.columns)}); rename it in the file or map it, "
            f"for example --map {missing[0]}=<your column>"
        )
    return df.withColumn(ROW_ID, F.monotonically_increasing_id())


def apply_mapping(df: DataFrame, mapping: dict[str, str], *, path: str) -> DataFrame:
    """Rename ``source`` columns to their canonical names; mapped columns absent from this file are ignored."""
    renames = {src: canon for canon, src in mapping.items() if src in df.columns and src != canon}
    if not renames:
        return df
    targets = set(renames.values())
    # A column that already had a canonical name is kept under "<name>_original", never dropped.
    kept = [df[c].alias(f"{c}_original") if c in targets else df[c] for c in df.columns if c not in renames]
    log.debug("%s: renaming %s", path, renames)
    return df.select(*kept, *[df[src].alias(canon) for src, canon in renames.items()])
