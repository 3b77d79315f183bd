"""Figures for concept analysis (matplotlib, Agg canvas; no global pyplot state).

* :func:`plot_cav_pca` -- CAVs as labelled arrows in a 2-D PCA plane (seed 004, Figure 1);
* :func:`plot_cosine_heatmap` -- cosine similarity between CAVs;
* :func:`plot_genre_scatter` -- one genre: sensitivity vs the user's mean rating (Figure 2);
* :func:`plot_correlation_bars` -- Pearson r per genre, vs mean rating and vs share;
* :func:`plot_user` -- one user's sensitivities next to their genre history (``explain``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["plot_cav_pca", "plot_cosine_heatmap", "plot_genre_scatter", "plot_correlation_bars", "plot_user",
           "write_report_figures"]


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_cav_pca(coords: np.ndarray, names: Sequence[str], path, energy: Optional[np.ndarray] = None,
                 highlight: Optional[Sequence[str]] = None, title: str = "CAVs (2-D PCA, unit vectors)") -> None:
    """Arrows from the origin to each CAV's ``(G, 2)`` PCA coordinates, labelled."""
    fig = _figure(6.5, 6.5)
    ax = fig.add_subplot(1, 1, 1)
    hl = {h.lower() for h in (highlight or [])}
    colors = {}
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    for j, (g, (x, y)) in enumerate(zip(names, coords)):
        c = cmap(j % cmap.N)
        colors[g] = c
        strong = not hl or g.lower() in hl
        ax.annotate("", xy=(x, y), xytext=(0, 0),
                    arrowprops=dict(arrowstyle="-|>", color=c, lw=2.2 if strong else 1.0,
                                    alpha=1.0 if strong else 0.45))
        ax.text(x * 1.08, y * 1.08, g, color=c, fontsize=10 if strong else 8, ha="center", va="center",
                fontweight="bold" if strong and hl else "normal")
    lim = max(1e-9, float(np.abs(coords).max())) * 1.3
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_aspect("equal")
    if energy is not None and len(energy) >= 2:
        ax.set_xlabel(f"PC1 ({energy[0]:.0%} of CAV energy)")
        ax.set_ylabel(f"PC2 ({energy[1]:.0%})")
    ax.set_title(title)
    _save(fig, path)


def plot_cosine_heatmap(cosine: np.ndarray, names: Sequence[str], path, title: str = "cosine between CAVs") -> None:
    """``(G, G)`` heatmap with the values written in the cells."""
    G = len(names)
    size = max(4.5, 0.45 * G + 2)
    fig = _figure(size + 1, size)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(cosine, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(G))
    ax.set_yticks(range(G))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    for a in range(G):
        for b in range(G):
            ax.text(b, a, f"{cosine[a, b]:.2f}", ha="center", va="center", fontsize=6 if G > 10 else 8,
                    color="white" if abs(cosine[a, b]) > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title)
    _save(fig, path)


def plot_genre_scatter(sens: np.ndarray, behaviour: np.ndarray, genre: str, path, corr: Optional[dict] = None,
                       ylabel: str = "average rating of the genre's movies") -> None:
    """Scatter of users' sensitivity ``(n,)`` against their behaviour ``(n,)`` for one genre."""
    fig = _figure(6.5, 5)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(sens, behaviour, s=6, alpha=0.35, color="tab:blue", edgecolors="none")
    if len(sens) >= 2 and np.ptp(sens) > 0:
        k, b = np.polyfit(sens, behaviour, 1)
        xs = np.linspace(sens.min(), sens.max(), 50)
        ax.plot(xs, k * xs + b, color="tab:red", lw=1.5, label="least-squares line")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel(f"conceptual sensitivity to {genre}  (e_u · v_{genre})")
    ax.set_ylabel(ylabel)
    t = f"{genre}: sensitivity vs behaviour"
    if corr and corr.get("pearson_r") is not None:
        t += (f"\nPearson r={corr['pearson_r']:.3f} (p={corr['pearson_p']:.2g}), "
              f"Spearman ρ={corr['spearman_r']:.3f} (p={corr['spearman_p']:.2g}), n={corr['n']}")
    ax.set_title(t, fontsize=9)
    _save(fig, path)


def plot_correlation_bars(agreement: Sequence[dict], path, title: str = "sensitivity vs behaviour, per genre") -> None:
    """Pearson r per genre against mean rating and against interaction share;
    hatched bars are not significant at 0.05."""
    names = [a["genre"] for a in agreement]
    G = len(names)
    fig = _figure(max(6, 0.5 * G + 2), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(G)
    for off, key, label, color in ((-0.2, "mean_rating", "vs mean rating", "tab:blue"),
                                   (0.2, "share", "vs share of training positives", "tab:orange")):
        r = [a[key]["pearson_r"] if a[key]["pearson_r"] is not None else 0.0 for a in agreement]
        p = [a[key]["pearson_p"] if a[key]["pearson_p"] is not None else 1.0 for a in agreement]
        bars = ax.bar(x + off, r, width=0.4, color=color, label=label)
        for bar, pv in zip(bars, p):
            if pv >= 0.05:
                bar.set_hatch("//")
                bar.set_alpha(0.5)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("Pearson r across users")
    ax.set_title(title + " (hatched: p ≥ 0.05)", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_user(result: dict, path) -> None:
    """``explain --method concepts`` figure: sensitivities (left) and the user's history (right)."""
    rows = result["genres"]
    names = [r["genre"] for r in rows][::-1]
    fig = _figure(11, max(3.5, 0.32 * len(rows) + 1.5))
    ax1 = fig.add_subplot(1, 3, 1)
    sens = [r["sensitivity"] for r in rows][::-1]
    ax1.barh(names, sens, color=["tab:green" if s > 0 else "tab:red" for s in sens])
    ax1.axvline(0, color="black", lw=0.6)
    ax1.set_title("model: sensitivity e_u·v_C", fontsize=9)
    ax2 = fig.add_subplot(1, 3, 2, sharey=ax1)
    ax2.barh(names, [(r["share"] or 0.0) for r in rows][::-1], color="tab:orange")
    ax2.set_title("history: share of training positives", fontsize=9)
    ax3 = fig.add_subplot(1, 3, 3, sharey=ax1)
    ax3.barh(names, [(r["mean_rating"] or 0.0) for r in rows][::-1], color="tab:blue")
    for y, r in enumerate(rows[::-1]):
        ax3.text(0.05, y, f"n={r['n_rated']}", va="center", fontsize=7, color="white")
    ax3.set_xlim(0, 5)
    ax3.set_title("history: mean rating", fontsize=9)
    for ax in (ax2, ax3):
        ax.tick_params(labelleft=False)
    fig.suptitle(f"user {result['user']}: what the model thinks vs what they did", fontsize=10)
    _save(fig, path)


def write_report_figures(report, out_dir, scatter_genre: Optional[str] = None,
                         highlight: Optional[Sequence[str]] = None) -> dict:
    """All figures of a :class:`~whyrec.explain.concepts.ConceptReport`; returns name -> path."""
    out = Path(out_dir)
    paths = {}
    paths["pca"] = out / "cav_pca.png"
    plot_cav_pca(report.pca, report.names, paths["pca"], report.pca_energy, highlight)
    paths["cosine"] = out / "cav_cosine.png"
    plot_cosine_heatmap(report.cosine, report.names, paths["cosine"])
    paths["bars"] = out / "correlations.png"
    plot_correlation_bars(report.agreement, paths["bars"])
    genres = [scatter_genre] if scatter_genre else report.names
    min_r = report.settings.get("min_ratings", 5)
    for g in genres:
        j = report.names.index(g)
        keep = report.history.n_rated[:, j] >= max(1, min_r)
        p = out / f"scatter_{_slug(g)}.png"
        plot_genre_scatter(report.S[keep, j], report.history.mean_rating[keep, j], g, p,
                           report.agreement[j]["mean_rating"],
                           ylabel=f"user's average rating of {g} movies (≥{min_r} rated)")
        paths[f"scatter_{g}"] = p
    return {k: str(v) for k, v in paths.items()}


def _slug(name: str) -> str:
    return "".join(c.lower() if c.isalnum() else "_" for c in name).strip("_")
