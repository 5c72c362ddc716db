"""The k-choice rule on hand-made sweeps (pure logic, no Spark)."""

from index_builder.cluster import choose_k, elbow_k


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
