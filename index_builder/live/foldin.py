"""Fold new events and products into a published bundle without a full retrain, and publish the result.

- Interactions: the new events are weighted and aggregated as the builder does (``transforms``), then
  added to each (user, product) pair; new users get the next user rows.
- ALS: the item factors stay fixed; each user with new events gets factors solved against them with the
  implicit-feedback normal equations Spark's ALS solves in every half-iteration:
  ``(Y'Y + Y'(C_u - I)Y + reg * n_u * I) x_u = Y' C_u p_u``, c = 1 + alpha |r|, p = [r > 0], n_u = pairs with r > 0.
- Popularity (buyers per product) is recounted; new products are embedded with the bundle's own model,
  put in the nearest KMeans cluster and added to the FAISS index (in that cluster's cell for ivf indexes).
- ``refit``: Spark ALS and EASE are fitted again on all interactions (the scheduled full refit).

Unchanged files are hard-linked from the base version, so a fold-in of a few events into a big bundle
writes only the tables that changed.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from index_builder.core import bundle as fmt
from index_builder.core.constants import (
    CATEGORY,
    CLUSTER,
    DEFAULT_EVENT_WEIGHTS,
    DEFAULT_HAD_TYPES,
    DESCRIPTION,
    EVENT_COLUMNS,
    HAD,
    LAST_TS,
    N_EVENTS,
    POPULARITY,
    PRICE,
    PRODUCT_ID,
    PRODUCT_IDX,
    PURCHASED,
    TITLE,
    TS,
    USER_ID,
    USER_IDX,
    WEIGHT,
)
from index_builder.stages.interactions import aggregate

log = logging.getLogger(__name__)


@dataclass
class FoldIn:
    folder: Path  # the published version
    info: dict[str, Any]  # manifest["stream"]


def merge_interactions(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Add ``new`` pairs onto ``old`` ones (weights and counts summed, flags or-ed, the latest timestamp)."""
    keys = [USER_ID, PRODUCT_ID]
    both = pd.concat([old[keys + [WEIGHT, N_EVENTS, PURCHASED, HAD, LAST_TS]], new], ignore_index=True)
    both[LAST_TS] = pd.to_datetime(both[LAST_TS])
    return both.groupby(keys, as_index=False, sort=False).agg(
        **{WEIGHT: (WEIGHT, "sum"), N_EVENTS: (N_EVENTS, "sum"), PURCHASED: (PURCHASED, "any"),
           HAD: (HAD, "any"), LAST_TS: (LAST_TS, "max")})


def solve_users(item_factors: np.ndarray, rows: list[np.ndarray], weights: list[np.ndarray], reg: float,
                alpha: float) -> np.ndarray:
    """Implicit-ALS factors of users from fixed item factors; ``rows[i]``/``weights[i]``: user i's products
    and their summed weights."""
    y = item_factors.astype(np.float64)
    yty = y.T @ y
    rank = y.shape[1]
    out = np.zeros((len(rows), rank), dtype=np.float32)
    for i, (r, w) in enumerate(zip(rows, weights, strict=True)):
        c1 = alpha * np.abs(w)
        yu = y[r]
        a = yty + (yu * c1[:, None]).T @ yu
        b = yu.T @ np.where(w > 0, 1.0 + c1, 0.0)
        n_pos = int((w > 0).sum())
        if n_pos == 0:
            continue
        out[i] = np.linalg.solve(a + reg * n_pos * np.eye(rank), b)
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def product_texts(df: pd.DataFrame) -> list[str]:
    """:func:`index_builder.stages.transforms.product_text` for products that arrive on the stream (pandas; held
    to the same texts by ``tests/test_twins.py``). Like Spark's ``trim``, it strips spaces only: ``str.strip()``
    also took tabs, newlines and no-break spaces, so a streamed product got another text than a built one."""
    parts = [df[c].astype("string").str.strip(" ") for c in (TITLE, DESCRIPTION, CATEGORY) if c in df]
    return [" ".join(str(p.iat[i]) for p in parts if not pd.isna(p.iat[i]) and str(p.iat[i])) for i in range(len(df))]


def catalog_rows(added: pd.DataFrame, products: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """New products as rows of the catalog table: every catalog column (its extra attributes, such as
    ``brand``, from the record when it carried them, else missing), in the catalog's dtypes."""
    rows = added.reindex(columns=products.columns).reset_index(drop=True)
    rows[POPULARITY] = 0
    rows[CLUSTER] = labels
    for c in (DESCRIPTION, CATEGORY):
        if c in rows:
            rows[c] = rows[c].fillna("")
    for c in products.columns:
        dtype = products[c].dtype
        if pd.api.types.is_bool_dtype(dtype):
            rows[c] = rows[c].map(lambda v: None if v is None or v != v else str(v).strip().lower() in ("1", "true", "yes"))
        elif pd.api.types.is_numeric_dtype(dtype):
            rows[c] = pd.to_numeric(rows[c], errors="coerce")
            if pd.api.types.is_integer_dtype(dtype) and not rows[c].isna().any():
                rows[c] = rows[c].astype(dtype)
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            rows[c] = pd.to_datetime(rows[c], errors="coerce", utc=True).dt.tz_convert(None) \
                if getattr(dtype, "tz", None) is None else pd.to_datetime(rows[c], errors="coerce", utc=True)
        else:
            rows[c] = rows[c].astype(object).where(rows[c].notna(), None)
    return rows


def _embed_products(folder: Path, manifest: dict[str, Any], texts: list[str]) -> np.ndarray:
    from index_builder.core.embedders.query import encoder_for

    return np.asarray(encoder_for(folder, manifest)(texts), dtype=np.float32)


def fold_in(root: Path | str, events: pd.DataFrame, new_products: pd.DataFrame | None, *, through_batch: int,
            refit: bool = False, spark: Any = None, keep_versions: int = 5, feed: dict[str, Any] | None = None) -> FoldIn:
    """Publish a new version of ``root`` with ``events`` (canonical, validated) and ``new_products`` folded in.

    ``feed``: what the stream knows of these events and adds to the manifest's ``stream`` section
    (``arrived_at``: epoch seconds when the newest of them reached the stream; ``dead_letters``: its dead
    letters so far, by reason)."""
    t0 = time.perf_counter()
    root = Path(root)
    base = read_base(root)
    catalog = add_products(base, new_products)
    products = catalog.products
    folded = fold_events(products, base.users, base.interactions, events, base.event_weights, base.had_types)
    products[POPULARITY] = popularity(folded.interactions, len(products))
    models = update_models(base, folded, len(products), refit, spark)
    if models.item_item is not None:
        base.manifest["item_item"] = models.item_item
    version = NewVersion(
        base=base.folder, manifest=base.manifest, products=products, users=folded.users,
        interactions=folded.interactions, events=all_events(base.folder, events),
        changed={**catalog.changed, **models.changed},
        info=stream_info(base, events, folded, len(catalog.added), models.refit_info, through_batch, feed))
    folder = fmt.publish(root, partial(write_version, version=version, t0=t0))
    prune_versions(root, keep_versions)
    info = version.info
    log.info("stream: published %s (%d events, %d new users, %d users updated, %d new products%s) in %.1fs",
             folder.name, info["events_folded"], info["new_users"], info["updated_users"], info["new_products"],
             ", full refit" if info["refit"] else "", info["fold_in_s"])
    return FoldIn(folder, info)


# -- the steps ----------------------------------------------------------------------------------------
@dataclass
class Base:
    """The published version folded into: its manifest, its tables and the builder's event settings."""

    folder: Path
    manifest: dict[str, Any]
    event_weights: dict[str, float]
    had_types: tuple[str, ...]
    products: pd.DataFrame
    users: pd.DataFrame
    interactions: pd.DataFrame


def read_base(root: Path) -> Base:
    """The current version of ``root``, read."""
    base = fmt.resolve(root)
    manifest = fmt.read_manifest(base)
    params = manifest.get("params", {})
    weights = {**DEFAULT_EVENT_WEIGHTS, **(params.get("event_weights") or {})}
    had_types = tuple(params.get("had_types") or DEFAULT_HAD_TYPES)
    products = pd.read_parquet(base / fmt.PRODUCTS)
    users = pd.read_parquet(base / fmt.USERS)
    inter = pd.read_parquet(base / fmt.INTERACTIONS)
    return Base(base, manifest, weights, had_types, products, users, inter)


@dataclass
class Catalog:
    """The catalog after the new products' records."""

    products: pd.DataFrame  # the base's, with new prices and the new products appended
    added: pd.DataFrame  # the new products' records
    changed: dict[str, Any]  # file name -> the new embeddings and FAISS index, when there are new products


def add_products(base: Base, new_products: pd.DataFrame | None) -> Catalog:
    """New products: embedded, clustered, indexed; a known product's record updates its price."""
    import faiss

    from index_builder.stages.faiss_index import add_vectors

    products = base.products
    changed: dict[str, Any] = {}
    added = pd.DataFrame()
    if new_products is not None and len(new_products):
        fresh = new_products.drop_duplicates(PRODUCT_ID, keep="last")
        known = fresh[PRODUCT_ID].isin(set(products[PRODUCT_ID]))
        if known.any() and PRICE in fresh:  # a known product's record: its price may change, nothing else
            price = fresh[known].set_index(PRODUCT_ID)[PRICE].dropna()
            pos = products[PRODUCT_ID].isin(price.index)
            products.loc[pos, PRICE] = products.loc[pos, PRODUCT_ID].map(price).to_numpy()
        added = fresh[~known].reset_index(drop=True)
    if len(added):
        vectors = _embed_products(base.folder, base.manifest, product_texts(added))
        centroids = fmt.load_array(base.folder, fmt.CENTROIDS)
        dist = (vectors ** 2).sum(1)[:, None] - 2 * vectors @ centroids.T + (centroids ** 2).sum(1)[None, :]
        labels = dist.argmin(axis=1).astype(np.int32)
        products = pd.concat([products, catalog_rows(added, products, labels)], ignore_index=True)
        embeddings = fmt.load_array(base.folder, fmt.EMBEDDINGS)
        changed[fmt.EMBEDDINGS] = np.concatenate([embeddings, vectors.astype(embeddings.dtype)])
        index = faiss.read_index(str(base.folder / fmt.FAISS_INDEX))
        add_vectors(index, vectors, labels)
        changed[fmt.FAISS_INDEX] = index
    return Catalog(products, added, changed)


@dataclass
class Folded:
    """The users and interactions after the events."""

    users: pd.DataFrame  # the base's users, new users appended
    interactions: pd.DataFrame  # merged, with user and product rows, sorted by them
    events: pd.DataFrame  # the events folded in (those of a product in the catalog)
    new_users: list[str]
    touched: list[str]  # every user with a folded event


def fold_events(products: pd.DataFrame, users: pd.DataFrame, inter: pd.DataFrame, events: pd.DataFrame,
                weights: dict[str, float], had_types: tuple[str, ...]) -> Folded:
    """Interactions and users: the events of catalog products aggregated onto the pairs; new users get new rows."""
    n = len(products)
    row_of = pd.Series(np.arange(n), index=products[PRODUCT_ID].astype(str))
    ev = events[events[PRODUCT_ID].astype(str).isin(row_of.index)]
    new_pairs = aggregate(ev, weights, had_types) if len(ev) else None
    new_users: list[str] = []
    touched: list[str] = []
    if new_pairs is not None:
        inter = merge_interactions(inter, new_pairs)
        known_users = set(users[USER_ID].astype(str))
        new_users = sorted(set(new_pairs[USER_ID].astype(str)) - known_users)
        users = pd.concat([users, pd.DataFrame({USER_ID: new_users, USER_IDX: np.arange(len(users), len(users) + len(new_users),
                                                                                         dtype=users[USER_IDX].dtype)})],
                          ignore_index=True)
        touched = sorted(set(new_pairs[USER_ID].astype(str)))
    user_idx = pd.Series(users[USER_IDX].to_numpy(), index=users[USER_ID].astype(str))
    inter[PRODUCT_IDX] = row_of.reindex(inter[PRODUCT_ID].astype(str)).to_numpy().astype(np.int32)
    inter[USER_IDX] = user_idx.reindex(inter[USER_ID].astype(str)).to_numpy().astype(np.int32)
    inter = inter.sort_values([USER_IDX, PRODUCT_IDX], kind="stable").reset_index(drop=True)
    return Folded(users, inter, ev, new_users, touched)


def popularity(inter: pd.DataFrame, n: int) -> np.ndarray:
    """Buyers per product row, recounted."""
    pop = inter[inter[WEIGHT] > 0].groupby(PRODUCT_IDX)[USER_ID].nunique()
    return pop.reindex(range(n), fill_value=0).to_numpy(dtype=np.int64)


@dataclass
class ModelUpdate:
    """The collaborative models after the events."""

    changed: dict[str, Any]  # file name -> new factors ("item_item": the refitted neighbours and weights)
    item_item: dict[str, Any] | None = None  # the refitted manifest["item_item"]
    refit_info: dict[str, Any] = field(default_factory=dict)  # what was refitted; empty: nothing


def update_models(base: Base, folded: Folded, n: int, refit: bool, spark: Any) -> ModelUpdate:
    """ALS: fold the touched users in, or refit everything (nothing when the bundle has no ALS)."""
    als = base.manifest.get("als", {})
    has_als = (base.folder / fmt.ITEM_FACTORS).is_file()
    if has_als and refit and spark is not None:
        return refit_models(spark, base.manifest, als, folded, n)
    if has_als:
        return ModelUpdate(fold_users_in(base.folder, als, folded, n))
    return ModelUpdate({})


def refit_models(spark: Any, manifest: dict[str, Any], als: dict[str, Any], folded: Folded, n: int) -> ModelUpdate:
    """Spark ALS and EASE fitted again on all interactions (EASE when the base has it)."""
    from index_builder.stages.als import ALSParams, factor_matrix, train_als
    from index_builder.stages.itemitem import fit_item_item

    inter, users = folded.interactions, folded.users
    changed: dict[str, Any] = {}
    p = ALSParams(**als["params"])
    frame = spark.createDataFrame(inter[[USER_IDX, PRODUCT_IDX, WEIGHT, USER_ID, PRODUCT_ID]])
    model = train_als(frame, p)
    changed[fmt.ITEM_FACTORS] = factor_matrix(model.itemFactors, n, p.rank, name=fmt.ITEM_FACTORS)
    changed[fmt.USER_FACTORS] = factor_matrix(model.userFactors, len(users), p.rank, name=fmt.USER_FACTORS)
    item_info = manifest.get("item_item", {})
    info = None
    if "lambda" in item_info:
        nb, wt, info = fit_item_item(inter, n, float(item_info["lambda"]), max_items=int(item_info["max_items"]))
        changed["item_item"] = (nb, wt)
    return ModelUpdate(changed, info, {"als": p.as_dict(), "item_item": "lambda" in item_info})


def fold_users_in(base: Path, als: dict[str, Any], folded: Folded, n: int) -> dict[str, Any]:
    """The touched users' factors solved against the fixed item factors; file name -> the arrays that changed."""
    inter, users, touched = folded.interactions, folded.users, folded.touched
    changed: dict[str, Any] = {}
    items = fmt.load_array(base, fmt.ITEM_FACTORS)
    user_f = fmt.load_array(base, fmt.USER_FACTORS)
    if len(items) < n:  # new products have no factors until the next refit
        items = np.concatenate([items, np.zeros((n - len(items), items.shape[1]), dtype=items.dtype)])
        changed[fmt.ITEM_FACTORS] = items
    if len(user_f) < len(users):
        user_f = np.concatenate([user_f, np.zeros((len(users) - len(user_f), user_f.shape[1]), dtype=user_f.dtype)])
    if touched:
        mine = inter[inter[USER_ID].astype(str).isin(touched)]
        groups = mine.groupby(USER_IDX)
        idx = np.fromiter(groups.groups.keys(), dtype=np.int64)
        rows = [g[PRODUCT_IDX].to_numpy() for _, g in groups]
        wts = [g[WEIGHT].to_numpy(dtype=np.float64) for _, g in groups]
        user_f = user_f.copy()
        user_f[idx] = solve_users(items, rows, wts, float(als["params"]["reg_param"]), float(als["params"]["alpha"]))
    changed[fmt.USER_FACTORS] = user_f
    return changed


def all_events(base: Path, events: pd.DataFrame) -> pd.DataFrame:
    """The base's events table with ``events`` appended."""
    old_events = pd.read_parquet(base / fmt.EVENTS) if (base / fmt.EVENTS).is_file() else None
    return pd.concat([old_events, events[list(EVENT_COLUMNS)]], ignore_index=True) if old_events is not None \
        else events[list(EVENT_COLUMNS)]


def stream_info(base: Base, events: pd.DataFrame, folded: Folded, new_products: int, refit_info: dict[str, Any],
                through_batch: int, feed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The new version's manifest["stream"] (``fold_in_s`` and ``published_at`` are added once the files are written): what this
    publish folded in, the totals since the last full build (``full_build``), and the freshness the Insights
    tab shows (the newest event's own time stamp; from ``feed``, when it reached the stream)."""
    ev = folded.events
    prev = base.manifest.get("stream", {})
    stamps = pd.to_datetime(ev[TS], utc=True, errors="coerce").dropna() if len(ev) and TS in ev else pd.Series([])
    before = pd.to_datetime(prev.get("newest_event_ts"), utc=True, errors="coerce")  # an older stream's may lack it
    newest = max([*([before] if pd.notna(before) else []), *([stamps.max()] if len(stamps) else [])], default=None)
    return {
        # a base published by a stream older than this field: its full build is not known (None), not the base
        "full_build": prev.get("full_build") if prev else base.folder.name, "full_build_at": base.manifest.get("created_at"),
        "base_version": base.folder.name, "through_batch": int(through_batch),
        "newest_event_ts": newest.isoformat() if newest is not None else None,
        **{k: v for k, v in (feed or {}).items() if v is not None},
        "events_folded": int(len(ev)), "events_unknown_product": int(len(events) - len(ev)),
        "events_total": int(prev.get("events_total", 0)) + int(len(ev)),
        "new_users": len(folded.new_users), "updated_users": len(folded.touched), "new_products": int(new_products),
        "refit": bool(refit_info), **({"refit_params": refit_info} if refit_info else {}),
        "publishes": int(prev.get("publishes", 0)) + 1,
    }


@dataclass
class NewVersion:
    """What the new version holds: its tables, the files that changed, and the manifest it starts from."""

    base: Path  # the base version: the files that did not change are linked from there
    manifest: dict[str, Any]
    products: pd.DataFrame
    users: pd.DataFrame
    interactions: pd.DataFrame
    events: pd.DataFrame
    changed: dict[str, Any]  # file name -> array, FAISS index or ("item_item": neighbours and weights)
    info: dict[str, Any]  # manifest["stream"]


def write_version(folder: Path, version: NewVersion, t0: float) -> dict[str, Any]:
    """:func:`fmt.publish`'s ``fill``: write the files into ``folder``, return the manifest body."""
    import faiss

    v, manifest, inter, info = version, version.manifest, version.interactions, version.info
    v.products.to_parquet(folder / fmt.PRODUCTS, index=False)
    v.users.to_parquet(folder / fmt.USERS, index=False)
    inter.to_parquet(folder / fmt.INTERACTIONS, index=False)
    v.events.to_parquet(folder / fmt.EVENTS, index=False)
    for name, value in v.changed.items():
        if name == fmt.FAISS_INDEX:
            faiss.write_index(value, str(folder / name))
        elif name == "item_item":
            fmt.save_item_item(folder, *value)
        else:
            fmt.save_array(folder, name, value)
    written = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    item_item_files = {fmt.ITEM_NEIGHBOURS, fmt.ITEM_WEIGHTS, fmt.ITEM_ROWS} if "item_item" in v.changed else set()
    for name in manifest.get("files", {}):
        if name not in written and name not in item_item_files:
            _link_or_copy(v.base / name, folder / name)
    body = {k: val for k, val in manifest.items() if k not in ("format_version", "version", "files")}
    body["counts"] = {**manifest.get("counts", {}), "products": len(v.products), "users": len(v.users),
                      "interactions": len(inter), "positive_interactions": int((inter[WEIGHT] > 0).sum()),
                      "events": int(manifest.get("counts", {}).get("events", 0)) + int(info["events_folded"])}
    info["fold_in_s"] = round(time.perf_counter() - t0, 2)  # all but the rename into place
    info["published_at"] = pd.Timestamp.now(tz="UTC").isoformat(timespec="milliseconds")  # its files are written
    body["stream"] = info
    return body


def prune_versions(root: Path, keep: int) -> list[str]:
    """Delete the oldest versions beyond ``keep`` (never the current one); returns the names deleted."""
    if keep <= 0:
        return []
    root = Path(root)
    current = fmt.resolve(root).name
    versions = sorted(p.name for p in root.iterdir()
                      if p.is_dir() and not p.is_symlink() and (p / fmt.MANIFEST).is_file())
    gone = [v for v in versions[:-keep] if v != current]
    for v in gone:
        shutil.rmtree(root / v, ignore_errors=True)
    return gone
