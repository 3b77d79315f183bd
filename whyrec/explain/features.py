"""``--method features``: Integrated Gradients (Captum) of one prediction ŷ(u, m) over the side
features of the user and the movie together (seed 000, §3.2, Figures 1 and 2).

What IG's input is
------------------
``x = concat(X_u[u], X_m[m])``: the explained pair's own feature rows (binary indicators as
loaded: one-hot gender, age bucket, occupation, zip region; multi-hot genres; one-hot release
decade), only the sides the model was trained with. Every other node's features, all trained
weights and the graph are held fixed. Changing ``x`` changes the layer-0 rows of ``u`` and ``m``
and, through propagation, every node's final embedding; the score reads only rows ``u`` and
``m``, which are exactly (:mod:`whyrec.models.lightgcn_features`)::

    δ_u = (x_u − X_u[u]) W_u,   δ_m = (x_m − X_m[m]) W_m
    e_u(x) = E_u + S_uu δ_u + S_um δ_m,   e_m(x) = E_m + S_um δ_u + S_mm δ_m,   ŷ(x) = e_u(x)·e_m(x)

with ``S = Σ_k α_k Â^k``. ``E`` (the trained final embeddings), ``W`` and the baselines do not
depend on the pair and are computed once per run; per pair, three numbers ``S_uu, S_um, S_mm``
come from K sparse products with the two indicator columns (batched over pairs). The forward
handed to Captum is this closed form, so all interpolation steps of all pairs of a chunk are
ONE small dense forward and backward, and the result equals a full re-propagation per step
(tested against exactly that).

Baselines ``x'``: ``mean`` (the seed's choice: each feature column's mean over all users, resp.
all items) or ``zero``. Method: Captum's default Gauss–Legendre rule with ``steps`` nodes.
Because ``ŷ`` is a quadratic in ``x``, the integrand of IG is linear along the path and the rule
is exact for any ``steps >= 1`` (the default is 1): completeness ``Σ attributions = ŷ(x) − ŷ(x')`` holds to
rounding (float64 here), and Captum's convergence ``delta`` is reported.

Attributions are summed per human-readable group (``gender``, ``age``, ``occupation``,
``zip_region``; each genre; ``year``) and reported per side; with ``--compare-items`` and
``--genre G`` one genre's attribution is compared across several movies (seed Figure 2).
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np
import torch

from ..models.base import FEATURES, can

__all__ = ["FeatureIG", "repropagation_forward", "explain_run", "explain_many", "describe", "details",
           "plot", "DEFAULT_STEPS"]

#: one Gauss–Legendre node is already exact here (the integrand is linear along the path, see above);
#: more nodes only cost time (``--steps`` still sets them)
DEFAULT_STEPS = 1
BASELINES = ("mean", "zero")


def _check_steps(steps) -> int:
    if steps is None:
        return DEFAULT_STEPS
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or int(steps) < 1:
        raise ValueError(f"--steps must be a positive integer, got {steps!r}")
    return int(steps)


def _check_baseline(baseline) -> str:
    if baseline not in BASELINES:
        raise ValueError(f"--baseline must be mean or zero, got {baseline!r}")
    return baseline


class FeatureIG:
    """Integrated Gradients over the features of ``(user, item)`` pairs of one trained
    :class:`~whyrec.models.lightgcn_features.LightGCNFeatures` (module docstring).

    Args:
        model: the trained model (with features on at least one side).
        user_columns, user_groups / item_columns, item_groups: names of the feature columns and
            their human-readable group (defaults: ``u0, u1, ...`` each its own group).
    """

    def __init__(self, model, user_columns: Optional[Sequence[str]] = None, user_groups: Optional[Sequence[str]] = None,
                 item_columns: Optional[Sequence[str]] = None, item_groups: Optional[Sequence[str]] = None):
        from captum.attr import IntegratedGradients

        if not can(model, FEATURES):
            raise ValueError("this model has no side features to attribute to; train --model lightgcn-features "
                             "with --features user,item (or user / item)")
        self.model = model
        dt = torch.float64
        with torch.no_grad():
            users, items = model.embeddings()
            # float64 on the CPU, whatever the model's device (the pair operator comes back to it too)
            self.E_users = users.detach().to("cpu", dt)
            self.E_items = items.detach().to("cpu", dt)
            wu, wm = model.projections()
            self.W_u = wu.detach().to("cpu", dt) if wu is not None else None
            self.W_m = wm.detach().to("cpu", dt) if wm is not None else None
            self.X_u = model.x_user.to("cpu", dt) if model.use_user else None
            self.X_m = model.x_item.to("cpu", dt) if model.use_item else None
        self.f_u = 0 if self.X_u is None else self.X_u.shape[1]
        self.f_m = 0 if self.X_m is None else self.X_m.shape[1]
        self.dim = self.f_u + self.f_m
        self.means = torch.cat([t.mean(0) for t in (self.X_u, self.X_m) if t is not None])
        self.columns = ([str(c) for c in user_columns] if user_columns is not None else
                        [f"u{j}" for j in range(self.f_u)])[: self.f_u] + \
                       ([str(c) for c in item_columns] if item_columns is not None else
                        [f"m{j}" for j in range(self.f_m)])[: self.f_m]
        ug = [str(g) for g in user_groups] if user_groups is not None else self.columns[: self.f_u]
        ig = [str(g) for g in item_groups] if item_groups is not None else self.columns[self.f_u:]
        if len(self.columns) != self.dim or len(ug[: self.f_u]) != self.f_u or len(ig[: self.f_m]) != self.f_m:
            raise ValueError("feature names do not match the model's feature matrices")
        self.sides = ["user"] * self.f_u + ["item"] * self.f_m
        raw_groups = ug[: self.f_u] + ig[: self.f_m]
        clash = set(ug[: self.f_u]) & set(ig[: self.f_m])
        self.groups = [f"{s}:{g}" if g in clash else g for s, g in zip(self.sides, raw_groups)]
        self.group_names = list(dict.fromkeys(self.groups))
        self.group_side = {g: s for g, s in zip(self.groups, self.sides)}
        gi = {g: k for k, g in enumerate(self.group_names)}
        self.group_matrix = torch.zeros(self.dim, len(self.group_names), dtype=dt)
        self.group_matrix[torch.arange(self.dim), torch.tensor([gi[g] for g in self.groups])] = 1.0
        self.genre_groups = [g for g, c in zip(self.groups, self.columns) if c.startswith("genre=")]
        self.genre_groups = list(dict.fromkeys(self.genre_groups))
        self._ig = IntegratedGradients(self._forward)

    @classmethod
    def for_run(cls, run) -> "FeatureIG":
        """The (cached) explainer of a loaded run; column names from its ``extras.npz``."""
        from . import run_cache

        cache = run_cache(run, "features")
        if "ig" in cache:
            return cache["ig"]
        model = run.model
        if not can(model, FEATURES):
            from ..recipes import get_recipe

            name = run.config.get("model")
            methods = ", ".join(get_recipe(name).explain_methods) if name else ""
            raise ValueError(f"a {name} run has no side features, so --method features cannot explain it"
                             + (f"; supported: {methods}" if methods else "")
                             + " (train --model lightgcn-features --features user,item)")
        ex = run.extras
        obj = cls(model, ex.get("user_feature_columns"), ex.get("user_feature_groups"),
                  ex.get("item_feature_columns"), ex.get("item_feature_groups"))
        cache["ig"] = obj
        return obj

    # ------------------------------------------------------------------ #
    def _forward(self, x, e_u0, e_m0, s, x0):
        """``ŷ`` of a batch of rows: ``x`` ``(b, D)`` inputs; ``e_u0``/``e_m0`` ``(b, d)`` final
        embeddings of the pair at ``x0``; ``s`` ``(b, 3)`` = ``S_uu, S_um, S_mm``; ``x0`` ``(b, D)``
        the pair's actual features."""
        dx = x - x0
        zero = torch.zeros((), dtype=x.dtype)
        d_u = dx[:, : self.f_u] @ self.W_u if self.f_u else zero
        d_m = dx[:, self.f_u:] @ self.W_m if self.f_m else zero
        e_u = e_u0 + s[:, 0:1] * d_u + s[:, 1:2] * d_m
        e_m = e_m0 + s[:, 1:2] * d_u + s[:, 2:3] * d_m
        return (e_u * e_m).sum(-1)

    def inputs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.X_u is not None:
            parts.append(self.X_u[users])
        if self.X_m is not None:
            parts.append(self.X_m[items])
        return torch.cat(parts, 1)

    def baselines(self, kind: str, b: int) -> torch.Tensor:
        kind = _check_baseline(kind)
        base = self.means if kind == "mean" else torch.zeros_like(self.means)
        return base.unsqueeze(0).expand(b, -1).contiguous()

    def attribute(self, users, items, steps: int = DEFAULT_STEPS, baseline: str = "mean",
                  chunk: int = 256) -> dict:
        """IG for pairs ``(users[k], items[k])`` (indices). Returns float64 tensors:
        ``inputs``/``baselines``/``attributions`` ``(b, D)``, ``groups`` ``(b, G)``
        (per :attr:`group_names`), ``score``, ``baseline_score``, ``delta`` ``(b,)``."""
        steps = _check_steps(steps)
        _check_baseline(baseline)
        users = torch.as_tensor(np.asarray(users), dtype=torch.long).reshape(-1)
        items = torch.as_tensor(np.asarray(items), dtype=torch.long).reshape(-1)
        if users.numel() != items.numel():
            raise ValueError("users and items must have the same length")
        out = {k: [] for k in ("inputs", "baselines", "attributions", "score", "baseline_score", "delta", "pair_op")}
        for s0 in range(0, users.numel(), chunk):
            u, m = users[s0:s0 + chunk], items[s0:s0 + chunk]
            b = u.numel()
            s = self.model.pair_operator(u, m).to("cpu", torch.float64)
            x = self.inputs(u, m)
            xb = self.baselines(baseline, b)
            eu, em = self.E_users[u], self.E_items[m]
            args = (eu, em, s, x)
            attr, delta = self._ig.attribute(x, baselines=xb, additional_forward_args=args, n_steps=steps,
                                             method="gausslegendre", return_convergence_delta=True)
            with torch.no_grad():
                score = self._forward(x, *args)
                base = self._forward(xb, *args)
            for k, v in (("inputs", x), ("baselines", xb), ("attributions", attr.detach()), ("score", score),
                         ("baseline_score", base), ("delta", delta.detach().to(torch.float64)), ("pair_op", s)):
                out[k].append(v)
        res = {k: torch.cat(v, 0) for k, v in out.items()}
        res["groups"] = res["attributions"] @ self.group_matrix
        return res

    # ------------------------------------------------------------------ #
    def value_label(self, group: str, x_row: torch.Tensor) -> str:
        """What the pair's input holds in ``group``: the active category (``K-12 student``),
        ``yes``/``no`` for a single indicator (a genre)."""
        cols = [j for j, g in enumerate(self.groups) if g == group]
        if len(cols) == 1:
            return "yes" if float(x_row[cols[0]]) > 0.5 else "no"
        active = [self.columns[j].split("=", 1)[-1] for j in cols if float(x_row[j]) > 0.5]
        return ", ".join(active) if active else "-"


def repropagation_forward(model, user: int, item: int, dtype: Optional[torch.dtype] = None):
    """The seed's forward for IG, kept as the slow reference :class:`FeatureIG` is checked and
    benchmarked against: for each interpolated feature vector ``x`` (a row of ``(steps, f_u + f_m)``),
    write ``x`` into the pair's rows of ``X_u`` and ``X_m``, rebuild every layer-0 embedding
    ``E⁰ = P + X W`` and re-propagate the WHOLE graph, then score ``e_u · e_m``. One full
    propagation per row: minutes per explanation on ML-1M, which is why :class:`FeatureIG` uses
    the closed form instead. ``dtype``: compute in this dtype (``torch.float64`` for tests)."""
    from whyrec.graph import propagate_final

    cast = (lambda t: t.detach().to(dtype)) if dtype is not None else (lambda t: t.detach())
    adj = model.adj.to(dtype) if dtype is not None else model.adj
    P_u, P_m = cast(model.user_emb.weight), cast(model.item_emb.weight)
    W_u, W_m = (cast(w) for w in model.projections())
    X_u, X_m = cast(model.x_user), cast(model.x_item)
    f_u = X_u.shape[1]

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = []
        for row in x:
            xu = torch.cat([X_u[:user], row[:f_u].unsqueeze(0), X_u[user + 1:]])
            xm = torch.cat([X_m[:item], row[f_u:].unsqueeze(0), X_m[item + 1:]])
            e = propagate_final(adj, torch.cat([P_u + xu @ W_u, P_m + xm @ W_m]), model.n_layers, model.alphas)
            out.append(e[user] @ e[model.n_users + item])
        return torch.stack(out)

    return forward


def prepare(run) -> None:
    """Build the run's feature explainer now (``whyrec serve`` start-up)."""
    FeatureIG.for_run(run)


def _title(run, i: int) -> str:
    return run.titles().label(int(i))


def _match_group(ig: FeatureIG, genre: str) -> str:
    for g in ig.group_names:
        if g.lower() == str(genre).strip().lower():
            return g
    raise ValueError(f"unknown feature/genre {genre!r}; choose one of: {', '.join(ig.group_names)}")


def _one(run, ig: FeatureIG, res: dict, k: int, user_idx: int, item_idx: int, top: int) -> dict:
    x = res["inputs"][k]
    grp = res["groups"][k]
    order = np.argsort(-np.abs(grp.numpy()), kind="stable")
    attributions = {ig.group_names[j]: float(grp[j]) for j in order}
    ranked = [{"name": ig.group_names[j], "side": ig.group_side[ig.group_names[j]],
               "value": ig.value_label(ig.group_names[j], x), "attribution": float(grp[j])} for j in order[:top]]
    col_attr = res["attributions"][k]
    corder = np.argsort(-np.abs(col_attr.numpy()), kind="stable")[:top]
    columns = [{"column": ig.columns[j], "side": ig.sides[j], "group": ig.groups[j], "input": float(x[j]),
                "baseline": float(res["baselines"][k][j]), "attribution": float(col_attr[j])} for j in corder]
    score, base, delta = float(res["score"][k]), float(res["baseline_score"][k]), float(res["delta"][k])
    diff = score - base
    return {
        "item": int(run.item_ids[item_idx]),
        "item_title": _title(run, item_idx),
        "score": score,
        "baseline_score": base,
        "delta": delta,
        "relative_delta": abs(delta) / abs(diff) if diff else 0.0,
        "attributions": attributions,
        "user_attributions": {g: v for g, v in attributions.items() if ig.group_side[g] == "user"},
        "item_attributions": {g: v for g, v in attributions.items() if ig.group_side[g] == "item"},
        "ranked": ranked,
        "columns": columns,
        "user_profile": {g: ig.value_label(g, x) for g in ig.group_names if ig.group_side[g] == "user"},
        "item_genres": [g for g in ig.genre_groups if ig.value_label(g, x) == "yes"],
    }


def explain_run(run, user_idx: int, item_idx=None, steps: int = DEFAULT_STEPS, baseline: str = "mean",
                top: int = 10, compare_items=None, genre: Optional[str] = None, **_options) -> dict:
    """JSON-ready IG explanation of ``ŷ(user, item)`` (default item: the user's top
    recommendation). With ``compare_items`` (item indices) every item is explained in one batch
    and ``comparison`` lists, per item, the attribution of ``genre`` and its top-3 genres."""
    steps = _check_steps(steps)
    baseline = _check_baseline(baseline)
    ig = FeatureIG.for_run(run)
    if genre is not None:
        genre = _match_group(ig, genre)
    t0 = time.perf_counter()
    u = int(user_idx)
    items: list[int] = []
    if item_idx is not None:
        items.append(int(item_idx))
    for c in compare_items or []:
        if int(c) not in items:
            items.append(int(c))
    if not items:
        from . import default_item

        items.append(default_item(run, u))
    res = ig.attribute([u] * len(items), items, steps=steps, baseline=baseline)
    first = _one(run, ig, res, 0, u, items[0], top)
    out = {"method": "features", "user": int(run.user_ids[u]), **first, "baseline": baseline, "steps": steps,
           "quadrature": "gausslegendre (exact: ŷ is quadratic in the features)",
           "genre": genre}
    if genre is not None:
        out["genre_attribution"] = first["attributions"][genre]
    if compare_items:
        rows = []
        for k, it in enumerate(items):
            one = first if k == 0 else _one(run, ig, res, k, u, it, top)
            gen = sorted(((g, one["attributions"][g]) for g in ig.genre_groups), key=lambda p: -p[1])
            rows.append({"item": one["item"], "item_title": one["item_title"], "score": one["score"],
                         "genres": one["item_genres"],
                         "genre_attribution": one["attributions"][genre] if genre else None,
                         "top_genres": [[g, v] for g, v in gen[:3]],
                         "attributions": one["attributions"]})
        out["comparison"] = rows
    out["seconds"] = time.perf_counter() - t0
    return out


def explain_many(run, pairs, steps: int = DEFAULT_STEPS, baseline: str = "mean", chunk: int = 256) -> dict:
    """Explain many ``(user_idx, item_idx)`` pairs in one batch job. Returns arrays:
    ``users``/``items`` (raw ids), ``score``, ``baseline_score``, ``delta`` ``(b,)``,
    ``attributions`` ``(b, G)`` per ``group_names``, and ``seconds``."""
    ig = FeatureIG.for_run(run)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    t0 = time.perf_counter()
    res = ig.attribute(pairs[:, 0], pairs[:, 1], steps=steps, baseline=baseline, chunk=chunk)
    return {"users": run.user_ids[pairs[:, 0]], "items": run.item_ids[pairs[:, 1]],
            "group_names": list(ig.group_names), "attributions": res["groups"].numpy(),
            "score": res["score"].numpy(), "baseline_score": res["baseline_score"].numpy(),
            "delta": res["delta"].numpy(), "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------- #
def describe(result: dict) -> dict:
    """The common shape: the feature groups by |attribution|, user and item features, additive over the
    baseline's score."""
    from .explanation import ITEM_FEATURE, USER_FEATURE, Contribution

    return {"contributions": [Contribution(USER_FEATURE if r["side"] == "user" else ITEM_FEATURE,
                                           f"{r['name']} = {r['value']}", float(r["attribution"]))
                              for r in result["ranked"]],
            "baseline": result["baseline_score"], "additive": True, "stats": {"delta": result["delta"]}}


def details(result: dict) -> list[str]:
    lines = [f"Integrated Gradients over user and movie features ({result['baseline']} baseline, "
             f"{result['steps']} steps)",
             "user: " + ", ".join(f"{g}={v}" for g, v in result["user_profile"].items()),
             "movie genres: " + (", ".join(result["item_genres"]) or "-")]
    if result.get("comparison"):
        g = result.get("genre")
        lines.append("comparison across movies" + (f" (genre {g})" if g else "") + ":")
        for r in result["comparison"]:
            ga = f"{g} {r['genre_attribution']:+.4f}   " if g else ""
            tops = ", ".join(f"{n} {v:+.3f}" for n, v in r["top_genres"])
            lines.append(f"  {r['item_title']}: score {r['score']:.3f}   {ga}top genres: {tops}")
    return lines


def plot(result: dict, path) -> None:
    """Seed Figure 1 (the generic figure: signed bars of the top groups, user features blue, movie
    features orange) or, with a comparison, Figure 2 (each movie's top-3 genres, the chosen
    genre highlighted)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if result.get("comparison"):
        rows = result["comparison"]
        g = result.get("genre")
        fig = Figure(figsize=(max(6, 2.6 * len(rows)), 4.2))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        width = 0.8 / 4
        palette = ["tab:green", "tab:purple", "tab:brown", "tab:gray", "tab:cyan", "tab:olive"]
        for k, r in enumerate(rows):
            bars = list(r["top_genres"])
            if g and g not in [n for n, _ in bars]:
                bars.append([g, r["genre_attribution"]])
            for j, (name, v) in enumerate(bars):
                color = "tab:red" if name == g else palette[j % len(palette)]
                x = k + (j - (len(bars) - 1) / 2) * width
                ax.bar(x, v, width * 0.95, color=color, edgecolor="black" if name == g else None)
                label = name if name in r["genres"] else f"not {name}"
                ax.text(x, v, label, rotation=90, ha="center", va="bottom" if v >= 0 else "top", fontsize=7)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r["item_title"][:30] for r in rows], fontsize=8)
        ax.set_ylabel("IG attribution to the predicted score")
        ax.set_title(f"user {result['user']}: top three genres per movie by IG attribution"
                     + (f" ({g} in red)" if g else "") + "; 'not G' = the movie lacks genre G", fontsize=9)
        ymin, ymax = ax.get_ylim()
        ax.set_ylim(ymin, ymax + 0.25 * (ymax - ymin))
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        return

    from .explanation import plot as generic

    generic(result, path)
