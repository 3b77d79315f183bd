"""``--method intrinsic``: the resolved model's own explanation (seed 002, appendix A.1).

For a recommended item ``t`` of user ``u`` the model's arithmetic names

* each history item ``j ∈ N_u`` with ``s(j; u, t) = Σ_c p(t,c) exp(⟨z_u^{itm,c}, d_t⟩) p(j,c)/|N_u|``,
* each entity ``j`` reachable from the history with
  ``s(j; u, t) = Σ_c exp(⟨z_u^{ent,c}, d_t^{ent,c}⟩) Σ_{m∈N_u} 1(m,j) p(j,c)/(|N_u||N_m|)``,
* each node's dominant factor ``argmax_c p(v, c)`` and, for the user, the factor term of
  eq. 13 that contributes most to ``S(u, t)``,

computed by :meth:`whyrec.models.resolved.Resolved.importance` (the decoder dictionary
``d_t`` stands in for ``z_t`` exactly as in the decoder). Scores are also given as shares
of their kind's total (history items and entities separately).

Item factors (C2) and entity factors (C1) are different index sets; they are named
``I1..I{C2}`` and ``E1..E{C1}``.

:func:`importances` is the faithfulness interface: ``importances(run, user_idx, item_idx)
-> {history item index: s(j; u, t)}``.
"""

from __future__ import annotations

import numpy as np

from ..models.base import INTRINSIC, can

__all__ = ["explain_run", "describe", "details", "plot", "importances"]


def _model(run):
    model = run.model
    if not can(model, INTRINSIC):
        raise ValueError(f"a {run.config.get('model')} run has no intrinsic explanation; train --model resolved")
    return model


def _check_user(run, user_idx: int) -> np.ndarray:
    hist = run.matrices["train"][int(user_idx)].indices
    if len(hist) == 0:
        raise ValueError(f"user {run.user_ids[int(user_idx)]} has no training history; the intrinsic explanation "
                         "names the history items behind a recommendation and there are none")
    return hist


def _title(run, i: int) -> str:
    if run.item_titles:
        return str(run.item_titles[i])
    return f"item {int(run.item_ids[i])}"


def _frozen(run) -> dict:
    """Per-run values that depend only on the trained weights (entity names, every node's dominant
    factor), computed once and dropped when the weights change."""
    from . import run_cache

    cache = run_cache(run, "intrinsic")
    if not cache:
        names = run.extras.get("entity_names")
        cache["dominant"] = run.model.dominant_factors()
        cache["names"] = [str(x) for x in names] if names is not None else []
    return cache


def _entity_names(run) -> list[str]:
    return _frozen(run)["names"]


def prepare(run) -> None:
    """Entity names and dominant factors now (``whyrec serve`` start-up)."""
    _model(run)
    _frozen(run)


def importances(run, user_idx: int, item_idx: int) -> dict[int, float]:
    """``{history item index: s(j; u, t)}`` for the faithfulness yardstick."""
    model = _model(run)
    hist = _check_user(run, user_idx)
    imp = model.importance(int(user_idx), int(item_idx), history=hist)
    return {int(j): float(s) for j, s in zip(imp["items"], imp["item_scores"])}


def explain_run(run, user_idx: int, item_idx=None, top: int = 10, **_options) -> dict:
    """JSON-ready explanation of ``item_idx`` (default: the user's top recommendation) for
    ``user_idx``: top ``top`` history items and entities with ``s(j; u, t)``, factors."""
    model = _model(run)
    hist = _check_user(run, user_idx)
    if item_idx is None:
        from . import default_item

        item_idx = default_item(run, user_idx)
    u, t = int(user_idx), int(item_idx)
    imp = model.importance(u, t, history=hist)
    dom = _frozen(run)["dominant"]
    names = _entity_names(run)
    it_tot = float(imp["item_scores"].sum()) or 1.0
    en_tot = float(imp["entity_scores"].sum()) or 1.0
    order = np.argsort(-imp["item_scores"], kind="stable")[:top]
    hist_rows = [{
        "item": int(run.item_ids[imp["items"][k]]),
        "index": int(imp["items"][k]),
        "title": _title(run, int(imp["items"][k])),
        "score": float(imp["item_scores"][k]),
        "share": float(imp["item_scores"][k]) / it_tot,
        "factor": f"I{int(dom['items'][imp['items'][k]]) + 1}",
        "factor_scores": [float(x) for x in imp["item_factor_scores"][k]],
    } for k in order]
    eorder = np.argsort(-imp["entity_scores"], kind="stable")[:top]
    ent_rows = [{
        "entity": int(imp["entities"][k]),
        "name": names[int(imp["entities"][k])] if names else f"entity {int(imp['entities'][k])}",
        "score": float(imp["entity_scores"][k]),
        "share": float(imp["entity_scores"][k]) / en_tot,
        "factor": f"E{int(dom['entities'][imp['entities'][k]]) + 1}",
        "factor_scores": [float(x) for x in imp["entity_factor_scores"][k]],
    } for k in eorder]
    # links between the shown history items and shown entities (item–entity edges)
    a_ie = model.a_ie
    shown_e = {r["entity"] for r in ent_rows}
    links = [[r["item"], int(e)] for r in hist_rows for e in a_ie[r["index"]].indices if int(e) in shown_e]
    links_t = [int(e) for e in a_ie[t].indices if int(e) in shown_e]
    terms = {f"I{c + 1}": float(v) for c, v in enumerate(imp["user_item_terms"])}
    terms.update({f"E{c + 1}": float(v) for c, v in enumerate(imp["user_entity_terms"])})
    return {
        "method": "intrinsic",
        "user": int(run.user_ids[u]),
        "item": int(run.item_ids[t]),
        "item_title": _title(run, t),
        "item_factor": f"I{int(dom['items'][t]) + 1}",
        "score": imp["score"],
        "user_factor_terms": terms,
        "user_dominant_factor": max(terms, key=terms.get),
        "n_history": int(len(imp["items"])),
        "n_entities": int(len(imp["entities"])),
        "history_total": float(imp["item_scores"].sum()),
        "entity_total": float(imp["entity_scores"].sum()),
        "history": hist_rows,
        "entities": ent_rows,
        "links": links,
        "target_links": links_t,
    }


def describe(result: dict) -> dict:
    """The common shape: the history items, then the entities, each by ``s(j; u, t)``; the score is
    ``log S(u, t)``."""
    from .explanation import ENTITY, HISTORY, Contribution

    rows = [Contribution(HISTORY, r["title"], float(r["score"]), r["item"]) for r in result["history"]]
    rows += [Contribution(ENTITY, str(r["name"]), float(r["score"])) for r in result["entities"]]
    return {"contributions": rows, "stats": {"item factor": result["item_factor"],
                                             "user's dominant factor": result["user_dominant_factor"],
                                             "history items": result["n_history"],
                                             "entities": result["n_entities"]}}


def details(result: dict) -> list[str]:
    return ["decoder terms of eq. 13 (I = item factors, E = entity factors): "
            + "  ".join(f"{k} {v:.3g}" for k, v in result["user_factor_terms"].items()),
            "score = log S(u, t); values = s(j; u, t) of each history item and reachable entity"]


def plot(result: dict, path) -> None:
    """A layered graph in the spirit of the seed's Figures 3 and 6: the user on top, the
    history items in the middle, entities at the bottom, the recommended item on the right;
    edge width ∝ s(j; u, t), node colour = dominant factor."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    hist, ents = result["history"], result["entities"]
    factors = sorted({r["factor"] for r in hist + ents} | {result["item_factor"]})
    cmap = {f: c for f, c in zip(factors, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple",
                                            "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"] * 4)}
    fig = Figure(figsize=(11, 6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axis_off()
    n_h, n_e = max(1, len(hist)), max(1, len(ents))
    pos_u = (0.45, 0.92)
    pos_t = (0.97, 0.5)
    pos_h = {r["item"]: (0.05 + 0.8 * (k + 0.5) / n_h, 0.55) for k, r in enumerate(hist)}
    pos_e = {r["entity"]: (0.05 + 0.8 * (k + 0.5) / n_e, 0.15) for k, r in enumerate(ents)}
    hmax = max([r["share"] for r in hist] + [1e-12])
    emax = max([r["share"] for r in ents] + [1e-12])
    for r in hist:
        x, y = pos_h[r["item"]]
        ax.plot([pos_u[0], x], [pos_u[1], y], color="grey", lw=0.5 + 5 * r["share"] / hmax, alpha=0.7, zorder=1)
    for item, e in result["links"]:
        if item in pos_h and e in pos_e:
            ax.plot([pos_h[item][0], pos_e[e][0]], [pos_h[item][1], pos_e[e][1]], color="lightgrey", lw=0.8, zorder=0)
    for e in result.get("target_links", []):
        if e in pos_e:
            ax.plot([pos_t[0], pos_e[e][0]], [pos_t[1], pos_e[e][1]], color="lightgrey", ls="--", lw=0.8, zorder=0)
    for r in ents:
        x, y = pos_e[r["entity"]]
        ax.scatter([x], [y], s=80 + 500 * r["share"] / emax, color=cmap[r["factor"]], marker="s", zorder=2)
        ax.text(x, y - 0.06, f"{r['name'][:28]}\n{100 * r['share']:.0f}%", ha="center", va="top", fontsize=6, rotation=20)
    for r in hist:
        x, y = pos_h[r["item"]]
        ax.scatter([x], [y], s=80 + 500 * r["share"] / hmax, color=cmap[r["factor"]], zorder=2)
        ax.text(x, y + 0.04, f"{r['title'][:22]}\n{100 * r['share']:.0f}%", ha="center", va="bottom", fontsize=6)
    ax.scatter([pos_u[0]], [pos_u[1]], s=300, color="black", marker="^", zorder=3)
    ax.text(pos_u[0], pos_u[1] + 0.04, f"user {result['user']} (dominant {result['user_dominant_factor']})",
            ha="center", fontsize=8)
    ax.scatter([pos_t[0]], [pos_t[1]], s=300, color=cmap[result["item_factor"]], marker="*", zorder=3)
    ax.text(pos_t[0], pos_t[1] + 0.05, f"recommended:\n{result['item_title'][:24]}", ha="center", fontsize=8)
    ax.annotate("", xy=(pos_t[0] - 0.02, pos_t[1] + 0.02), xytext=(pos_u[0] + 0.03, pos_u[1] - 0.02),
                arrowprops={"arrowstyle": "->", "color": "black", "lw": 1.2})
    for k, f in enumerate(factors):
        ax.scatter([], [], color=cmap[f], label=f"factor {f}")
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    ax.set_xlim(-0.02, 1.05)
    ax.set_ylim(-0.05, 1.02)
    ax.set_title("history items (circles) and entities (squares) by s(j; u, t); colour = dominant factor", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
