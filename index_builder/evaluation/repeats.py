"""The all-items track's baselines from the next-basket literature, on a split's own "have" events.

- personal top-frequency: each user's past products by how many orders held them (ties: the most recent);
- recency-weighted personal frequency: each order counts 0.5 ** (its age / half-life);
- TIFU-KNN (Hu et al., SIGIR 2020), in its basket form: a user's vector is the decayed mean of their
  orders (the newest counts most, ``basket_decay`` per order back), blended with the mean vector of their
  ``neighbours`` nearest users (cosine): ``alpha`` x own + (1 - alpha) x neighbours. It can propose
  products the user never bought.

An order is a distinct timestamp of a "have" event, as in :mod:`index_builder.stages.buy_again`. The
half-life and alpha are chosen on the validation split, like everything else the evaluation tunes.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from index_builder.core.constants import EVENT_TYPE, PRODUCT_ID, TS, USER_ID


def orders(events: pd.DataFrame, had_types: tuple[str, ...], end: dt.datetime, row_of: dict[str, int]) -> pd.DataFrame:
    """The distinct (user, row, ts) orders before ``end`` of products in the catalog, oldest first."""
    ts = pd.to_datetime(events[TS], utc=True)
    keep = (events[EVENT_TYPE].isin(list(had_types)) & (ts < pd.Timestamp(end))).to_numpy()
    rows = events.loc[keep, PRODUCT_ID].astype(str).map(row_of)
    out = pd.DataFrame({USER_ID: events.loc[keep, USER_ID].astype(str).to_numpy(), "row": rows.to_numpy(),
                        TS: pd.Series(ts[keep].to_numpy(), dtype="datetime64[ns, UTC]")}).dropna().drop_duplicates()
    return out.astype({"row": np.int64}).sort_values([USER_ID, TS], kind="stable", ignore_index=True)


def _ranked(frame: pd.DataFrame, score: str, users: list[str], k: int) -> dict[str, list[int]]:
    """Each user's top ``k`` rows of ``frame`` by ``score`` (ties: the most recent order, then the lower row)."""
    top = frame.sort_values([USER_ID, score, "last", "row"], ascending=[True, False, False, True], kind="stable")
    top = top.groupby(USER_ID, sort=False).head(k)
    lists = {u: g.tolist() for u, g in top.groupby(USER_ID, sort=False)["row"]}
    return {u: lists.get(u, []) for u in users}


def top_frequency(o: pd.DataFrame, users: list[str], k: int) -> dict[str, list[int]]:
    """Personal top-frequency: the products in most of the user's orders, ties by recency."""
    f = o.groupby([USER_ID, "row"], as_index=False).agg(n=(TS, "size"), last=(TS, "max"))
    return _ranked(f, "n", users, k)


def recency_frequency(o: pd.DataFrame, end: dt.datetime, half_life_days: float, users: list[str], k: int
                      ) -> dict[str, list[int]]:
    """Recency-weighted personal frequency: each order of a product counts 0.5 ** (days before ``end`` / half-life)."""
    age = (pd.Timestamp(end) - o[TS]).dt.total_seconds().to_numpy() / 86400
    f = o.assign(w=np.power(0.5, age / half_life_days)).groupby([USER_ID, "row"], as_index=False).agg(
        w=("w", "sum"), last=(TS, "max"))
    return _ranked(f, "w", users, k)


NEIGHBOURS = 300  # TIFU-KNN's k (the paper's range: 100-900)
BASKET_DECAY = 0.9  # its within-user decay per order back (the paper's r_b)
USER_BLOCK = 256  # users whose neighbours one matrix product finds (a block x users and a block x products, dense)


class TifuKnn:
    """Each user's vector = the decayed mean of their orders (the newest counts most, ``basket_decay`` per order
    back); their neighbours = the ``neighbours`` most similar users by cosine; a product's score = alpha x own +
    (1 - alpha) x the neighbours' mean. ``o``: distinct orders (user_id, row, ts), rows in [0, n_products)."""

    def __init__(self, o: pd.DataFrame, n_products: int, neighbours: int = NEIGHBOURS, basket_decay: float = BASKET_DECAY):
        from scipy import sparse

        baskets = o.groupby([USER_ID, TS], sort=True).ngroup().to_numpy()
        user_codes, user_names = pd.factorize(o[USER_ID], sort=True)
        per_user = pd.Series(baskets).groupby(user_codes)
        first, last = per_user.transform("min").to_numpy(), per_user.transform("max").to_numpy()
        # the weights of a user's orders sum to 1: r ** back over sum(r ** j, j = 0 .. orders - 1)
        weight = np.power(basket_decay, last - baskets) * (1 - basket_decay) / (1 - basket_decay ** (last - first + 1))
        self.vectors = sparse.csr_matrix((weight, (user_codes, o["row"].to_numpy())), shape=(len(user_names), n_products))
        self.vectors.sum_duplicates()
        norms = np.sqrt(np.asarray(self.vectors.multiply(self.vectors).sum(axis=1)).ravel())
        self.unit = (sparse.diags(1 / np.maximum(norms, 1e-12)) @ self.vectors).tocsr()
        self.index = {u: i for i, u in enumerate(user_names)}
        self.k = min(neighbours, len(user_names) - 1)

    def blocks(self, users: list[str]):
        """(users, columns, own vectors, neighbours' mean vectors) of the known ``users``, a block at a time, dense
        over the block's columns only: the products any of them or their neighbours bought (sorted). Every other
        product scores 0 for the whole block; a block's dense rows over a 100,000-product catalog were 200 MB."""
        from scipy import sparse

        known = [u for u in users if u in self.index]
        for lo in range(0, len(known), USER_BLOCK):
            part = known[lo:lo + USER_BLOCK]
            at = np.array([self.index[u] for u in part], dtype=np.int64)
            own = self.vectors[at]
            if self.k <= 0:
                cols = np.unique(own.indices)
                yield part, cols, own[:, cols].toarray(), np.zeros((len(at), len(cols)))
                continue
            sims = (self.unit[at] @ self.unit.T).toarray()
            sims[np.arange(len(at)), at] = -np.inf  # not one's own neighbour
            nb = np.argpartition(-sims, self.k - 1, axis=1)[:, : self.k]
            pick = sparse.csr_matrix((np.full(nb.size, 1.0 / self.k), (np.repeat(np.arange(len(at)), self.k), nb.ravel())),
                                     shape=(len(at), self.vectors.shape[0]))
            nbr = (pick @ self.vectors).tocsr()
            cols = np.union1d(own.indices, nbr.indices)
            yield part, cols, own[:, cols].toarray(), nbr[:, cols].toarray()

    def rankings(self, alphas: tuple[float, ...], users: list[str], k: int) -> dict[float, dict[str, list[int]]]:
        """For each alpha, each user's top ``k`` rows with a positive score (ties: the lower row; unknown users:
        none)."""
        out: dict[float, dict[str, list[int]]] = {a: {u: [] for u in users} for a in alphas}
        for part, cols, own, nbr in self.blocks(users):
            for a in alphas:
                for u, rows in zip(part, top_positive(a * own + (1 - a) * nbr, cols, k), strict=True):
                    out[a][u] = rows
        return out


def top_positive(score: np.ndarray, cols: np.ndarray, k: int) -> list[list[int]]:
    """Each row's ``k`` best columns (``cols[j]`` names column j; sorted) with a score above 0: the highest first,
    ties to the lower column, also at the k-th place."""
    if score.shape[1] == 0 or k <= 0:
        return [[] for _ in range(len(score))]
    kk = min(k, score.shape[1])
    kth = -np.partition(-score, kk - 1, axis=1)[:, kk - 1]  # each row's k-th highest score
    out = []
    for row, bar in zip(score, kth, strict=True):
        at = np.flatnonzero((row >= bar) & (row > 0))  # the k best and every tie of the k-th: k or a few more
        out.append(cols[at[np.lexsort((at, -row[at]))][:k]].tolist())
    return out
