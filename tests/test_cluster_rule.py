"""The k-choice rule on hand-made sweeps (pure logic, no Spark)."""

from index_builder.stages.cluster import choose_k, elbow_k, widen_while_at_edge


def test_elbow_is_the_knee_of_a_convex_curve():
    ks = [2, 3, 4, 5, 6, 7, 8]
    wssse = [100, 60, 30, 25, 22, 20, 19]
    assert elbow_k(ks, wssse) == 4


def test_highest_silhouette_past_the_elbow_wins():
    sweep = [
        {"k": 2, "wssse": 100, "silhouette": 0.50},  # best silhouette, but before the elbow
        {"k": 3, "wssse": 60, "silhouette": 0.20},
        {"k": 4, "wssse": 30, "silhouette": 0.30},
        {"k": 5, "wssse": 25, "silhouette": 0.35},
        {"k": 6, "wssse": 22, "silhouette": 0.31},
        {"k": 7, "wssse": 20, "silhouette": 0.10},
    ]
    assert choose_k(sweep) == (5, 4)


def test_ties_go_to_the_smaller_k_and_short_sweeps_work():
    sweep = [{"k": 3, "wssse": 10, "silhouette": 0.4}, {"k": 4, "wssse": 9, "silhouette": 0.4}]
    assert choose_k(sweep) == (3, 3)
    assert choose_k([{"k": 3, "wssse": 1.0, "silhouette": 0.1}]) == (3, 3)


def _fake_sweep(best: int):
    """A sweep whose silhouette peaks at ``best`` and whose WSSSE bends there; records the ranges asked for."""
    asked = []

    def sweep(lo, hi):
        asked.append((lo, hi))
        rows = [{"k": k, "wssse": 1000.0 / min(k, best) - k, "silhouette": 0.5 - abs(k - best) / 100} for k in range(lo, hi + 1)]
        return rows, {k: f"model{k}" for k in range(lo, hi + 1)}

    return sweep, asked


def test_the_sweep_widens_while_the_best_k_is_the_top_of_the_range():
    sweep, asked = _fake_sweep(best=13)
    rows, models, k, elbow, added = widen_while_at_edge(sweep, 2, 6, n_items=1000, say=lambda *a: None)
    assert asked == [(2, 6), (7, 12), (13, 24)] and added == [[7, 12], [13, 24]]
    assert k == 13 and [r["k"] for r in rows] == list(range(2, 25)) and set(models) == set(range(2, 25))


def test_the_sweep_stays_put_when_the_best_k_is_inside_or_the_catalog_is_small():
    sweep, asked = _fake_sweep(best=4)
    assert widen_while_at_edge(sweep, 2, 6, n_items=1000, say=lambda *a: None)[2] == 4 and asked == [(2, 6)]
    sweep, asked = _fake_sweep(best=50)
    *_, k, _, added = widen_while_at_edge(sweep, 2, 6, n_items=8, say=lambda *a: None)
    assert asked == [(2, 6), (7, 7)] and k == 7 and added == [[7, 7]], "never more clusters than products - 1"


def test_a_fixed_k_is_never_widened():
    sweep, asked = _fake_sweep(best=13)
    assert widen_while_at_edge(sweep, 3, 3, n_items=1000, say=lambda *a: None)[2] == 3 and asked == [(3, 3)]
