"""Peer benchmark: the builder's collaborative models against the `implicit` library, same split, one run.

    python -m bench.cf_vs_implicit --bundle artifacts/ [--eval-cutoff 2011-11-09] [--rank 32] [--iterations 10]

Reads a built bundle's own events (events.parquet), makes the evaluation's time split, then fits on
train and scores on test with the evaluation's metric code (NDCG@10, HR@10, the same users and filter):
Spark ALS (the builder's, with the bundle's tuned regParam and alpha) and implicit's ALS at equal rank
and iterations (same weights as confidence); the builder's EASE item-item model and implicit's item-kNN
cosine. Prints fit seconds and quality side by side.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    import numpy as np
    import scipy.sparse as sp

    from index_builder.core import bundle
    from index_builder.core.constants import PRODUCT_IDX, USER_IDX, WEIGHT
    from index_builder.evaluation.evaluate import (
        EvalSettings,
        Fitted,
        Scorer,
        choose_cutoffs,
        fit_als,
        make_split,
        time_bounds,
    )
    from index_builder.evaluation.metrics import summarize
    from index_builder.pipeline import bundle_frames
    from index_builder.stages.als import ALSParams
    from index_builder.stages.itemitem import DEFAULT_LAMBDA, ease_weights, gram_matrix, prune
    from index_builder.stages.session import make_spark

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="artifacts")
    p.add_argument("--eval-cutoff", default="2011-11-09")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    folder, manifest = bundle.verify(args.bundle)
    als_params = manifest.get("als", {}).get("params", {})
    reg, alpha = als_params.get("reg_param", ALSParams.reg_param), als_params.get("alpha", ALSParams.alpha)
    lam = manifest.get("item_item", {}).get("lambda", DEFAULT_LAMBDA)
    spark = make_spark(master=f"local[{args.threads}]")
    products_pdf, embeddings, index, events = bundle_frames(folder)
    settings = EvalSettings(cutoff=args.eval_cutoff)

    lo, hi, _ = time_bounds(events)
    _, cut = choose_cutoffs(lo, hi, args.eval_cutoff)
    split = make_split("test", events, products_pdf, cut, None, settings, spark)
    n = len(products_pdf)
    rows = []

    def scored(name: str, fitted: Fitted, model: str, fit_s: float) -> None:
        scorer = Scorer(split, products_pdf, embeddings, index, fitted, manifest.get("recommender"), 42)
        m = scorer.score(model, ks=(10,))
        rows.append((name, fit_s, m["ndcg@10"], m["hr@10"], m["coverage@10"]))
        print(f"  {name}: fit {fit_s:.1f}s ndcg@10 {m['ndcg@10']:.4f}", flush=True)

    params = ALSParams(rank=args.rank, reg_param=reg, alpha=alpha, max_iter=args.iterations)
    t = time.perf_counter()
    item_f, user_f = fit_als(split, n, params)
    scored(f"cartwise Spark ALS (rank {args.rank}, {args.iterations} it, reg {reg}, alpha {alpha})",
           Fitted(item_f, user_f, None, None), "als", time.perf_counter() - t)

    inter = split.interactions[split.interactions[WEIGHT] > 0]
    x = sp.csr_matrix((inter[WEIGHT].to_numpy(dtype=np.float32),
                       (inter[USER_IDX].to_numpy(), inter[PRODUCT_IDX].to_numpy())), shape=(len(split.users), n))
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import CosineRecommender
    from threadpoolctl import threadpool_limits

    for a in sorted({alpha, 1.0}):
        t = time.perf_counter()
        with threadpool_limits(1, "blas"):  # implicit parallelises itself; BLAS threads on top slow it down
            model = AlternatingLeastSquares(factors=args.rank, regularization=reg, alpha=a, iterations=args.iterations,
                                            random_state=42, num_threads=args.threads, calculate_training_loss=False)
            model.fit(x, show_progress=False)
        fit_s = time.perf_counter() - t
        scored(f"implicit ALS (rank {args.rank}, {args.iterations} it, reg {reg}, alpha {a})",
               Fitted(np.asarray(model.item_factors), np.asarray(model.user_factors), None, None), "als", fit_s)

    t = time.perf_counter()
    gram = gram_matrix(split.interactions)
    nb, wt = prune(ease_weights(gram.matrix, lam), gram.rows, n)
    scored(f"cartwise EASE item-item (lambda {lam})", Fitted(None, None, nb, wt), "item_item",
           time.perf_counter() - t)

    t = time.perf_counter()
    binary = x.copy()
    binary.data[:] = 1.0
    knn = CosineRecommender(K=100)
    knn.fit(binary, show_progress=False)
    fit_s = time.perf_counter() - t
    user_idx = dict(zip(split.users["user_id"].astype(str), split.users[USER_IDX], strict=True))
    rankings = {}
    for uid in split.truth:
        u = int(user_idx[uid])
        ids_, _ = knn.recommend(u, binary[u], N=10, filter_already_liked_items=True)
        rankings[uid] = [int(i) for i in ids_]
    m = summarize(rankings, split.truth, n_catalog=n, ks=(10,))
    rows.append(("implicit item-kNN cosine (K=100)", fit_s, m["ndcg@10"], m["hr@10"], m["coverage@10"]))

    scorer = Scorer(split, products_pdf, embeddings, index, Fitted(item_f, user_f, nb, wt), manifest.get("recommender"), 42)
    m = scorer.score("hybrid", ks=(10,))
    rows.append(("cartwise hybrid (the chat's Recommender)", float("nan"), m["ndcg@10"], m["hr@10"], m["coverage@10"]))

    print(f"\ncut-off {cut:%Y-%m-%d}, {len(split.truth)} users evaluated, {n} products\n")
    print(f"{'model':<62}{'fit s':>8}{'ndcg@10':>10}{'hr@10':>8}{'cov@10':>8}")
    for name, fit_s, ndcg, hr, cov in rows:
        print(f"{name:<62}{fit_s:>8.1f}{ndcg:>10.4f}{hr:>8.3f}{cov:>8.3f}")
    spark.stop()


if __name__ == "__main__":
    main()
