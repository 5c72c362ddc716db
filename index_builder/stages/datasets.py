"""Named public datasets: where they are looked for, and how they are downloaded into a cache.

Lookup order for ``--dataset NAME``: ``DATA_DIR/<folder>/<file>``, then ``DATA_DIR/<file>``, then the
cache (``$CARTWISE_CACHE`` or ``~/.cache/cartwise/datasets``). When none has it, the original is
downloaded from its public source, checked (columns, row count, sha256 when known), converted to the
file name the builder reads, and moved into the cache in one rename.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from index_builder.core.errors import DatasetUnavailable
from index_builder.core.settings import cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset comes from and what a good copy looks like."""

    name: str
    folder: str
    filename: str
    url: str
    columns: tuple[str, ...]
    min_rows: int
    archive_member: str | None = None  # file inside a zip download
    sheet: str | int | None = None  # sheet of an .xlsx download
    sha256: str | None = None  # of the downloaded file, when the source publishes one
    has_events: bool = True
    currency: str | None = None  # ISO code of the prices (None: the source does not say)
    license: str = ""
    citation: str = ""
    extra_files: tuple[str, ...] = ()  # files the adapter reads beside ``filename`` (same folder)
    raw_members: str | None = None  # folder in the zip whose files are kept byte for byte (no conversion)

    @property
    def files(self) -> tuple[str, ...]:
        return (self.filename, *self.extra_files)


DATASETS: dict[str, DatasetSpec] = {
    "online-retail": DatasetSpec(
        name="online-retail",
        folder="uci-online-retail",
        filename="online_retail_2010-2011.parquet",
        url="https://archive.ics.uci.edu/static/public/352/online+retail.zip",
        archive_member="Online Retail.xlsx",
        sheet=0,
        columns=("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"),
        min_rows=500_000,
        currency="GBP",
        license="CC BY 4.0 (UCI Machine Learning Repository, dataset 352)",
        citation="Chen, Sain, Guo (2012), J. Database Marketing & Customer Strategy Mgmt 19(3):197-208",
    ),
    "online-retail-ii-2009": DatasetSpec(
        name="online-retail-ii-2009",
        folder="uci-online-retail",
        filename="online_retail_II_2009-2010.parquet",
        url="https://archive.ics.uci.edu/static/public/502/online+retail+ii.zip",
        archive_member="online_retail_II.xlsx",
        sheet="Year 2009-2010",
        columns=("Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"),
        min_rows=500_000,
        currency="GBP",
        license="CC BY 4.0 (UCI Machine Learning Repository, dataset 502)",
        citation="Chen, Sain, Guo (2012), J. Database Marketing & Customer Strategy Mgmt 19(3):197-208",
    ),
    "datacamp-products": DatasetSpec(
        name="datacamp-products",
        folder="datacamp-products",
        filename="products_dataset.csv",
        url="https://raw.githubusercontent.com/puteriirenealia/ML-Pyspark-Recommender-System/HEAD/products_dataset.csv",
        columns=("product_id", "title", "description"),
        min_rows=2_000,
        has_events=False,
        license="not stated by the source (catalog used by the PySpark + OpenAI embeddings tutorials)",
    ),
    "movielens-100k": DatasetSpec(
        name="movielens-100k",
        folder="movielens-100k",
        filename="u.data",  # user id, item id, rating, unix seconds; tab-separated, no header
        extra_files=("u.item", "u.genre"),  # titles and genre flags ('|'-separated, Latin-1); the genres' names
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        raw_members="ml-100k",
        columns=(),
        min_rows=100_000,
        license="GroupLens research terms (README in the archive)",
        citation="Harper, Konstan (2015), The MovieLens Datasets: History and Context, ACM TiiS 5(4)",
    ),
}


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetUnavailable(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


def locate(spec: DatasetSpec, data_dir: Path | None = None, *, cache: Path | None = None, download: bool = True) -> Path:
    """Return the local file of a dataset, downloading it into the cache when it is nowhere else."""
    cache = cache or cache_dir()
    candidates = []
    if data_dir is not None:
        candidates += [Path(data_dir) / spec.folder / spec.filename, Path(data_dir) / spec.filename]
    candidates.append(cache / spec.folder / spec.filename)
    for path in candidates:
        if path.is_file() and all((path.parent / f).is_file() for f in spec.extra_files):
            log.info("dataset %s: using %s", spec.name, path)
            return path
    if not download:
        raise DatasetUnavailable(_by_hand(spec, cache, "it is not on disk and downloading is off"))
    return fetch(spec, cache)


def _by_hand(spec: DatasetSpec, cache: Path, why: str) -> str:
    return (
        f"dataset {spec.name}: {why}. Download {spec.url} by hand and put {' and '.join(spec.files)} "
        f"({'as they are in the archive' if spec.raw_members else 'converted as README.md says'}) in "
        f"{cache / spec.folder}, or pass --data-dir DIR with DIR/{spec.folder}/{spec.filename}"
    )


def fetch(spec: DatasetSpec, cache: Path, *, timeout: float = 60.0) -> Path:
    """Download, verify and convert a dataset into ``cache/<folder>/<filename>`` (atomic)."""
    target = cache / spec.folder / spec.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("dataset %s: downloading %s", spec.name, spec.url)
    try:
        raw = _download(spec.url, timeout=timeout)
    except OSError as exc:
        raise DatasetUnavailable(_by_hand(spec, cache, f"download failed ({exc})")) from exc
    if spec.sha256 and hashlib.sha256(raw).hexdigest() != spec.sha256:
        raise DatasetUnavailable(_by_hand(spec, cache, "the download's sha256 does not match the published one"))
    if spec.raw_members:
        return _keep_members(spec, raw, cache)
    try:
        frame = _to_frame(spec, raw)
    except Exception as exc:  # a corrupt zip, a broken sheet, an HTML error page...
        raise DatasetUnavailable(_by_hand(spec, cache, f"the download is not a readable {spec.filename} ({exc})")) from exc
    missing = [c for c in spec.columns if c not in frame.columns]
    if missing:
        raise DatasetUnavailable(_by_hand(spec, cache, f"the download lacks columns {missing}"))
    if len(frame) < spec.min_rows:
        raise DatasetUnavailable(_by_hand(spec, cache, f"the download has {len(frame)} rows, expected >= {spec.min_rows}"))
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        part = Path(tmp) / spec.filename
        if spec.filename.endswith(".parquet"):
            frame.to_parquet(part, index=False)
        else:
            frame.to_csv(part, index=False)
        os.replace(part, target)
    log.info("dataset %s: %d rows saved to %s", spec.name, len(frame), target)
    return target


def _keep_members(spec: DatasetSpec, raw: bytes, cache: Path) -> Path:
    """A multi-file archive: its files kept byte for byte in ``cache/<folder>/``; ``filename`` moves in last,
    so a folder that has it has the others (what :func:`locate` checks)."""
    target = cache / spec.folder / spec.filename
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                for name in spec.files:
                    (Path(tmp) / name).write_bytes(zf.read(f"{spec.raw_members}/{name}"))
        except (zipfile.BadZipFile, KeyError) as exc:
            raise DatasetUnavailable(_by_hand(spec, cache, f"the download is not the expected archive ({exc})")) from exc
        rows = (Path(tmp) / spec.filename).read_bytes().count(b"\n")
        if rows < spec.min_rows:
            raise DatasetUnavailable(_by_hand(spec, cache, f"{spec.filename} has {rows} rows, expected >= {spec.min_rows}"))
        for name in (*spec.extra_files, spec.filename):
            os.replace(Path(tmp) / name, target.parent / name)
    log.info("dataset %s: %s saved to %s", spec.name, ", ".join(spec.files), target.parent)
    return target


def _download(url: str, *, timeout: float) -> bytes:
    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - public dataset URL
        total = int(resp.headers.get("Content-Length") or 0) or None
        buf = io.BytesIO()
        with tqdm(total=total, unit="B", unit_scale=True, desc="download", leave=False, disable=None) as bar:
            while chunk := resp.read(1 << 16):
                buf.write(chunk)
                bar.update(len(chunk))
    return buf.getvalue()


def _to_frame(spec: DatasetSpec, raw: bytes):
    """Bytes of the original (zip, xlsx or csv) -> a pandas frame with text ids kept as text."""
    import pandas as pd

    data = raw
    name = spec.url.rsplit("/", 1)[-1].lower()
    if spec.archive_member or name.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            member = spec.archive_member or zf.namelist()[0]
            data = zf.read(member)
            name = member.lower()
    if name.endswith((".xlsx", ".xls")):
        frame = pd.read_excel(io.BytesIO(data), sheet_name=spec.sheet or 0, dtype=object)
    else:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    for col in frame.columns:  # Excel mixes ints and strings in one column; Parquet wants one type
        if frame[col].dtype == object:
            kinds = {type(v) for v in frame[col].dropna().head(50_000)}
            if kinds <= {int, float}:
                frame[col] = pd.to_numeric(frame[col])
            elif kinds - {str}:
                frame[col] = frame[col].map(lambda v: None if pd.isna(v) else str(v))
    return frame

