"""Plots written into the bundle (``plots/``): pictures a person would rather look at than read."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_kmeans_sweep(sweep: list[dict[str, Any]], k: int, elbow: int, path: Path) -> None:
    """Elbow (WSSSE) and cosine silhouette against k, with the elbow and the chosen k marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r["k"] for r in sweep]
    fig, ax1 = plt.subplots(figsize=(7, 4.6), dpi=110)
    ax1.plot(ks, [r["wssse"] for r in sweep], "o-", color="tab:blue", label="WSSSE (elbow)")
    ax1.set_xlabel("k (clusters)")
    ax1.set_ylabel("WSSSE", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(ks, [r["silhouette"] for r in sweep], "s--", color="tab:orange", label="silhouette (cosine)")
    ax2.set_ylabel("silhouette", color="tab:orange")
    ax1.axvline(elbow, color="grey", linestyle=":", label=f"elbow k={elbow}")
    ax1.axvline(k, color="tab:green", linewidth=2, label=f"chosen k={k}")
    handles = ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax1.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, fontsize=8, frameon=False)
    ax1.set_title("KMeans sweep: elbow + silhouette")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
