"""Explanations: one explainer interface, one registry (:data:`EXPLAINERS`), one result type
(:class:`whyrec.explain.explanation.Explanation`).

An explainer is an :class:`Explainer`: the capabilities a model must declare for it
(:func:`whyrec.models.base.can`), the options it takes (any other is an error), and the module doing the
work, which exposes

* ``explain_run(run, user, item, **options) -> dict`` — the method's JSON-ready result (at least
  ``"method"``, ``"user"`` and ``"item"``, raw ids);
* ``describe(result) -> dict`` — that result in the common shape: ``contributions`` (ordered
  :class:`~whyrec.explain.explanation.Contribution` s), ``score``, ``baseline`` and ``additive``,
  ``statement``, ``stats`` (every key optional);
* optionally ``importances(run, user, item) -> {history item index: importance}`` (the faithfulness
  benchmark ranks history items by it), ``details(result) -> list[str]`` (lines the text adds after the
  contributions), ``plot(result, path)`` (a figure of the method's own; otherwise the generic one) and
  ``prepare(run)`` (per-run work done once, up front: ``whyrec serve`` calls it at start-up).

:meth:`Explainer.explain` is the one way in (the CLI, :meth:`whyrec.run.Run.explain` and the service):
it validates the options, applies **one rule for the default item** (:func:`default_item`: what
``whyrec recommend`` lists first for the user, every item they rated masked) for every method that
explains an item, and flags an item the user has already interacted with (``already_interacted``).

``user`` and ``item`` are *indices* into the run. Which methods a model supports is listed in its
recipe (``whyrec models``); each must also pass its explainer's capability check.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Optional



@dataclass(frozen=True)
class Explainer:
    """``name``: the ``--method``; ``module``: where ``explain_run``/``describe`` live; ``needs``: the
    model must declare one of these capabilities (``"GRAPH"`` for :data:`whyrec.models.base.GRAPH`, ...;
    empty: any model); ``options``: the options it takes
    besides ``top`` (how many contributions to list), which every explainer takes; ``per_user``: it
    explains a user, not an item (no default item); ``ranks_history``: it has ``importances``."""

    name: str
    module: str
    needs: tuple = ()
    options: tuple = ()
    per_user: bool = False
    ranks_history: bool = False

    def load(self):
        """The implementing module; :class:`ValueError` when it is missing from this installation."""
        try:
            return importlib.import_module(self.module)
        except ModuleNotFoundError as err:
            if err.name == self.module:
                raise ValueError(f"explanation method {self.name!r} is not available in this version of whyrec") \
                    from None
            raise

    def supports(self, model) -> bool:
        """Whether ``model`` declares one of :attr:`needs` (named as :mod:`whyrec.models.base`'s constants,
        resolved here so that importing the registry does not import torch)."""
        from ..models import base

        return not self.needs or any(base.can(model, getattr(base, c)) for c in self.needs)

    def check_options(self, options: dict, flag=lambda name: "--" + name.replace("_", "-")) -> dict:
        """``options`` without the ``None`` values; :class:`ValueError` naming any this explainer does not
        take and the methods that do."""
        opts = {k: v for k, v in options.items() if v is not None}
        unknown = [k for k in opts if k != "top" and k not in self.options]
        if unknown:
            owners = [e.name for e in EXPLAINERS.values() if set(unknown) <= set(e.options)]
            where = f" only apply to --method {', '.join(owners)}" if owners else " are not options of any method"
            raise ValueError(f"{', '.join(flag(k) for k in unknown)}{where} (--method {self.name} takes "
                             f"{', '.join(flag(k) for k in ('top', *self.options))})")
        return opts

    def importances(self, run, user: int, item: int) -> dict[int, float]:
        """``{history item index: importance}`` of ``ŷ(user, item)`` (larger = more important)."""
        if not self.ranks_history:
            raise ValueError(f"--method {self.name} does not rank history items")
        return self.load().importances(run, int(user), int(item))

    def explain(self, run, user: int, item: Optional[int] = None, **options):
        """The :class:`~whyrec.explain.explanation.Explanation` of ``ŷ(user, item)`` (indices; ``item``
        ``None``: :func:`default_item`)."""
        from .explanation import Explanation

        opts = self.check_options(options)
        module = self.load()
        u = int(user)
        if item is None and not self.per_user:
            item = default_item(run, u)
        result = module.explain_run(run, u, None if item is None else int(item), **opts)
        e = Explanation.from_result(result, describe=getattr(module, "describe", None),
                                    already_interacted=item is not None and interacted(run, u, int(item)))
        e.faithfulness = verdict(run, self.name) if self.ranks_history else None
        return e

    def render_text(self, result: dict, top: Optional[int] = None) -> str:
        from .explanation import render_text

        return render_text(result, top=top, details=getattr(self.load(), "details", None))

    def plot(self, result: dict, path) -> None:
        from .explanation import plot

        getattr(self.load(), "plot", plot)(result, path)


_F = "whyrec.explain."
#: every explanation method
EXPLAINERS: dict[str, Explainer] = {e.name: e for e in (
    Explainer("features", _F + "features", ("GRAPH",), ("steps", "baseline", "compare_items", "genre")),  # IG, features
    Explainer("history", _F + "history", ("GRAPH", "EXACT_HISTORY"), ("steps",), ranks_history=True),  # IG / exact
    Explainer("concepts", _F + "concepts", (), ("genre", "seed", "min_items"), per_user=True),  # CAVs (seed 004)
    Explainer("intrinsic", _F + "intrinsic", ("INTRINSIC",), ranks_history=True),  # the model's own (seed 002)
    Explainer("paths", _F + "paths", (), ranks_history=True),  # post-hoc path weights (stands in for SEP)
    Explainer("counterfactual", _F + "counterfactual", ("RESCORE", "GRAPH"), ("k", "max_size", "beam", "pool"),
              ranks_history=True),  # the smallest history set whose removal drops the item
    Explainer("shapley", _F + "shapley", ("RESCORE",), ("samples", "seed"),
              ranks_history=True),  # Shapley values of the history items, exact re-scorings (additive)
)}
#: method name -> module implementing it
METHODS: dict[str, str] = {name: e.module for name, e in EXPLAINERS.items()}


#: what the faithfulness benchmark measured (docs/explanations.md, "The faithfulness table"): (method, model key,
#: dataset) -> (deletion area of the method, random's, Wilcoxon p of the paired per-user areas, where), written by
#: ``benchmarks/faithfulness_table.py`` (``measured_literal``); (method, model key) -> the same for a model measured
#: on one dataset outside the table, or the table's verdict for the model on every dataset it covers, used for a
#: dataset the table does not cover. The rule: an explainer whose deletion area is not significantly below
#: random's (p >= 0.05, or not lower) is **not faithful**.
MEASURED: dict[tuple, tuple[float, float, float, str]] = {
    ("history", "gf-cf"): (0.609, 0.783, 1.4e-34, "ML-100K, 200 users"),
    ("counterfactual", "gf-cf"): (0.692, 0.783, 1.1e-30, "ML-100K, 200 users"),
    ("intrinsic", "resolved"): (0.953, 0.999, 4.0e-03, "Last.fm, 171 users"),
    ("paths", "resolved"): (0.840, 0.999, 8.2e-18, "Last.fm, 171 users"),
    ("counterfactual", "resolved"): (0.782, 0.999, 4.6e-26, "Last.fm, 171 users"),
    ("history", "lightgcn"): (0.897, 0.949, 1.9e-09, "ML-100K, 30 users"),
    ("history", "lightgcn/history"): (0.674, 0.783, 1.4e-34, "ML-100K, 200 users"),
    ("counterfactual", "lightgcn/history"): (0.758, 0.783, 2.7e-13, "ML-100K, 200 users"),
    # the faithfulness table (benchmarks/faithfulness_table.py, summary.json): 3 trained seeds, 100 users each
    ('history', 'gf-cf', 'ml-100k'): (0.639, 0.793, 6.1e-51, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'gf-cf', 'ml-100k'): (0.664, 0.793, 6.3e-51, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'gf-cf', 'ml-100k'): (0.713, 0.793, 2.5e-44, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('history', 'cheby-cf', 'ml-100k'): (0.583, 0.789, 6.1e-51, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'cheby-cf', 'ml-100k'): (0.612, 0.789, 6.4e-51, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'cheby-cf', 'ml-100k'): (0.689, 0.789, 4.9e-41, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('history', 'bspm', 'ml-100k'): (0.559, 0.793, 6.1e-51, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'bspm', 'ml-100k'): (0.584, 0.793, 6.1e-51, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'bspm', 'ml-100k'): (0.692, 0.793, 1.7e-41, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'nmf', 'ml-100k'): (0.534, 0.797, 2.9e-47, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'nmf', 'ml-100k'): (0.545, 0.797, 1.4e-48, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('history', 'lightgcn/history', 'ml-100k'): (0.698, 0.789, 6.1e-51, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'lightgcn/history', 'ml-100k'): (0.732, 0.789, 9.7e-49, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'lightgcn/history', 'ml-100k'): (0.769, 0.789, 3.0e-14, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('intrinsic', 'resolved', 'ml-100k'): (0.966, 1.003, 6.2e-22, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'resolved', 'ml-100k'): (0.968, 1.003, 1.1e-20, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'resolved', 'ml-100k'): (0.976, 1.003, 8.4e-12, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('intrinsic', 'vae', 'ml-100k'): (0.997, 1.000, 8.7e-01, "ml-100k, 300 users, 3 seeds, 0/3 alone"),
    ('paths', 'vae', 'ml-100k'): (0.919, 1.000, 5.0e-49, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'vae', 'ml-100k'): (0.979, 1.000, 3.9e-12, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('history', 'gf-cf', 'ml-1m'): (0.618, 0.819, 6.1e-51, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'gf-cf', 'ml-1m'): (0.651, 0.819, 6.1e-51, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'gf-cf', 'ml-1m'): (0.732, 0.819, 7.1e-44, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('history', 'cheby-cf', 'ml-1m'): (0.598, 0.822, 6.1e-51, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'cheby-cf', 'ml-1m'): (0.626, 0.822, 6.1e-51, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'cheby-cf', 'ml-1m'): (0.726, 0.822, 5.1e-45, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('history', 'bspm', 'ml-1m'): (0.604, 0.821, 6.1e-51, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'bspm', 'ml-1m'): (0.628, 0.821, 6.1e-51, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'bspm', 'ml-1m'): (0.728, 0.821, 2.2e-45, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'nmf', 'ml-1m'): (0.486, 0.826, 7.0e-50, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'nmf', 'ml-1m'): (0.598, 0.826, 3.5e-44, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('history', 'lightgcn/history', 'ml-1m'): (0.738, 0.822, 6.1e-51, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'lightgcn/history', 'ml-1m'): (0.771, 0.822, 6.0e-48, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'lightgcn/history', 'ml-1m'): (0.790, 0.822, 6.4e-25, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('intrinsic', 'resolved', 'ml-1m'): (0.994, 1.009, 7.4e-04, "ml-1m, 300 users, 3 seeds, 1/3 alone"),
    ('paths', 'resolved', 'ml-1m'): (0.941, 1.009, 3.1e-46, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'resolved', 'ml-1m'): (0.984, 1.009, 8.7e-14, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('intrinsic', 'vae', 'ml-1m'): (0.998, 1.002, 9.7e-02, "ml-1m, 300 users, 3 seeds, 0/3 alone"),
    ('paths', 'vae', 'ml-1m'): (0.916, 1.002, 1.1e-49, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'vae', 'ml-1m'): (0.981, 1.002, 8.1e-14, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('history', 'gf-cf', 'lastfm-kg'): (0.444, 0.652, 6.1e-51, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'gf-cf', 'lastfm-kg'): (0.482, 0.652, 2.9e-47, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'gf-cf', 'lastfm-kg'): (0.530, 0.652, 2.0e-38, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('history', 'cheby-cf', 'lastfm-kg'): (0.366, 0.643, 6.1e-51, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'cheby-cf', 'lastfm-kg'): (0.378, 0.643, 8.1e-51, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'cheby-cf', 'lastfm-kg'): (0.463, 0.643, 1.1e-42, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('history', 'bspm', 'lastfm-kg'): (0.405, 0.658, 6.1e-51, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'bspm', 'lastfm-kg'): (0.442, 0.658, 3.3e-47, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'bspm', 'lastfm-kg'): (0.509, 0.658, 1.2e-37, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'nmf', 'lastfm-kg'): (0.262, 0.658, 5.2e-44, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'nmf', 'lastfm-kg'): (0.224, 0.658, 1.2e-48, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('history', 'lightgcn/history', 'lastfm-kg'): (0.516, 0.658, 6.1e-51, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'lightgcn/history', 'lastfm-kg'): (0.637, 0.658, 2.5e-06, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'lightgcn/history', 'lastfm-kg'): (0.619, 0.658, 5.0e-11, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('intrinsic', 'resolved', 'lastfm-kg'): (0.971, 1.020, 6.8e-04, "lastfm, 300 users, 3 seeds, 1/3 alone"),
    ('paths', 'resolved', 'lastfm-kg'): (0.865, 1.020, 2.7e-29, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'resolved', 'lastfm-kg'): (0.795, 1.020, 3.7e-42, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('shapley', 'resolved', 'lastfm-kg'): (0.741, 1.020, 2.5e-50, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('shapley', 'nmf', 'lastfm-kg'): (0.149, 0.658, 6.1e-51, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('intrinsic', 'vae', 'lastfm-kg'): (0.970, 0.987, 5.4e-03, "lastfm, 300 users, 3 seeds, 1/3 alone"),
    ('paths', 'vae', 'lastfm-kg'): (0.889, 0.987, 4.2e-42, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'vae', 'lastfm-kg'): (0.942, 0.987, 3.8e-16, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('history', 'lightgcn', 'ml-100k'): (0.902, 0.947, 6.1e-51, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'lightgcn', 'ml-100k'): (0.926, 0.947, 7.5e-39, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'lightgcn', 'ml-100k'): (0.939, 0.947, 1.7e-07, "ml-100k, 300 users, 3 seeds, 3/3 alone"),
    ('history', 'lightgcn', 'ml-1m'): (0.938, 0.969, 6.1e-51, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'lightgcn', 'ml-1m'): (0.957, 0.969, 1.8e-25, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('counterfactual', 'lightgcn', 'ml-1m'): (0.960, 0.969, 8.2e-14, "ml-1m, 300 users, 3 seeds, 3/3 alone"),
    ('history', 'lightgcn', 'lastfm-kg'): (0.761, 0.889, 6.1e-51, "lastfm, 300 users, 3 seeds, 3/3 alone"),
    ('paths', 'lightgcn', 'lastfm-kg'): (0.880, 0.889, 4.5e-03, "lastfm, 300 users, 3 seeds, 0/3 alone"),
    ('counterfactual', 'lightgcn', 'lastfm-kg'): (0.880, 0.889, 9.8e-02, "lastfm, 300 users, 3 seeds, 0/3 alone"),
}


def model_key(run) -> str:
    """``run``'s model as :data:`MEASURED` names it (``lightgcn/history`` for LightGCN's history-only mode)."""
    repr_ = (run.config.get("model_config") or {}).get("user_repr")
    return f"{run.config.get('model')}/{repr_}" if repr_ else str(run.config.get("model"))


def verdict(run, method: str) -> dict:
    """The benchmark's verdict on ``method`` for this run's model: ``{"verdict": "faithful" | "not faithful" |
    "not measured", "note"}`` (:data:`MEASURED`, the run's dataset's entry first; concepts and features explain no
    removal: not measured)."""
    key = (method, model_key(run))
    m = MEASURED.get((*key, run.config.get("dataset")), MEASURED.get(key))
    if m is None:
        return {"verdict": "not measured", "note": "its deletion area has not been compared with random removal's "
                                                   "for this model"}
    area, rand, p, where = m
    ok = p < 0.05 and area < rand
    return {"verdict": "faithful" if ok else "not faithful",
            "note": f"deletion area {area:.3f} against random's {rand:.3f}, paired Wilcoxon p = {p:.2g} ({where})"}


def default_item(run, user_idx: int) -> int:
    """The item every method explains when none is given: what ``whyrec recommend`` lists first for
    the user (every item they rated masked)."""
    from ..recommend import top_item

    return top_item(run, int(user_idx))


def interacted(run, user_idx: int, item_idx: int) -> bool:
    """Whether the user has interacted with the item (any rating, in any part of the split)."""
    seen = run.matrices["seen"]
    return bool(seen[int(user_idx), int(item_idx)])


def explainer(method: str):
    """The module implementing ``method``; :class:`ValueError` naming the known ones."""
    if method not in EXPLAINERS:
        raise ValueError(f"unknown explanation method {method!r}; choose one of: {', '.join(EXPLAINERS)}")
    return EXPLAINERS[method].load()


class UnsupportedMethod(ValueError):
    """The run's model does not support this explanation method (``.supported`` lists those it does)."""

    def __init__(self, message: str, supported: tuple[str, ...]):
        super().__init__(message)
        self.supported = tuple(supported)


class MethodUnavailable(ValueError):
    """The method is supported by the model but its module is missing from this installation."""


def supported_methods(run) -> tuple[str, ...]:
    """The explanation methods the run's model supports: its recipe's, in that order, whose explainer's
    capability needs the model meets."""
    from ..recipes import get_recipe

    return tuple(m for m in get_recipe(run.config["model"]).explain_methods
                 if m in EXPLAINERS and EXPLAINERS[m].supports(run.model))


def explainer_for(run, method: str, *, option: str = "method") -> Explainer:
    """The :class:`Explainer` of ``method`` for ``run``, its module importable.

    Raises :class:`UnsupportedMethod` when the run's model does not support ``method`` (the message
    names the supported ones; ``option`` is how the caller spells the parameter, ``--method`` for
    the CLI) and :class:`MethodUnavailable` when the method's module does not exist yet.
    """
    supported = supported_methods(run)
    if method not in supported:
        names = ", ".join(supported) if supported else "none"
        raise UnsupportedMethod(f"a {run.config['model']} run cannot be explained with {option} {method}; "
                                f"supported: {names}", supported)
    try:
        EXPLAINERS[method].load()
    except ValueError as err:
        raise MethodUnavailable(str(err)) from None
    return EXPLAINERS[method]


def explanation_module(run, method: str, *, option: str = "method"):
    """The module implementing ``method`` for ``run`` (:func:`explainer_for`'s checks)."""
    return explainer_for(run, method, option=option).load()


def available_methods(run) -> tuple[str, ...]:
    """The supported methods whose module imports (the ones an explanation request can answer now)."""
    out = []
    for m in supported_methods(run):
        try:
            explanation_module(run, m)
        except ValueError:
            continue
        out.append(m)
    return tuple(out)


def run_cache(run, name: str) -> dict:
    """A dict kept on ``run`` for explainer ``name``'s per-run work (fitted CAVs, dominant factors,
    ...), emptied whenever another model is put on the run or the model's weights change
    (:meth:`~whyrec.models.base.Recommender.weights_version`)."""
    model = run.model
    version = model.weights_version()
    caches = run._explain_caches
    if caches is None:
        caches = run._explain_caches = {}
    entry = caches.get(name)
    if entry is None or entry[0] is not model or entry[1] != version:
        entry = caches[name] = (model, version, {})
    return entry[2]


__all__ = ["EXPLAINERS", "Explainer", "METHODS", "run_cache", "MethodUnavailable", "UnsupportedMethod",
           "available_methods", "default_item", "explainer", "explainer_for", "explanation_module", "verdict",
           "interacted", "model_key", "MEASURED", "supported_methods"]
