"""Explanations.  Each method lives in its own module and exposes

* ``explain_run(run, user, item, **options) -> dict`` — a JSON-ready result with at least
  ``"method"``, ``"user"`` (raw id) and ``"item"`` (raw id or ``None``);
* ``render_text(result) -> str`` — the ranked table the CLI prints;
* ``plot(result, path) -> None`` — the figure ``--figure`` writes;
* optionally ``prepare(run) -> None`` — does once, up front, the per-run work its explanations share
  (``whyrec serve`` calls it at start-up, so no request pays for it).

``user`` and ``item`` are *indices* into the run (``item`` may be ``None`` for
per-user methods such as ``concepts``).  Which methods a model supports is listed
in its recipe (``whyrec models``).
"""

from __future__ import annotations

import importlib

#: method name -> module implementing it
METHODS: dict[str, str] = {
    "features": "whyrec.explain.features",   # Integrated Gradients over side features (seed 000)
    "history": "whyrec.explain.history",     # Integrated Gradients over the user's graph edges
    "concepts": "whyrec.explain.concepts",   # concept activation vectors for genres (seed 004)
    "intrinsic": "whyrec.explain.intrinsic", # the disentangled model's own importances (seed 002)
    "paths": "whyrec.explain.paths",         # post-hoc path weights to the item (stands in for SEP)
    "counterfactual": "whyrec.explain.counterfactual",  # the smallest history set whose removal drops the item
}


def explainer(method: str):
    """The module implementing ``method``; :class:`ValueError` naming the known ones."""
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose one of: {', '.join(METHODS)}")
    try:
        return importlib.import_module(METHODS[method])
    except ModuleNotFoundError as err:
        if err.name == METHODS[method]:
            raise ValueError(f"explanation method {method!r} is not available in this version of whyrec") from None
        raise


class UnsupportedMethod(ValueError):
    """The run's model does not support this explanation method (``.supported`` lists those it does)."""

    def __init__(self, message: str, supported: tuple[str, ...]):
        super().__init__(message)
        self.supported = tuple(supported)


class MethodUnavailable(ValueError):
    """The method is supported by the model but its module is missing from this installation."""


def supported_methods(run) -> tuple[str, ...]:
    """The explanation methods the run's model supports, in its recipe's order."""
    from ..train.recipes import get_recipe

    return tuple(get_recipe(run.config["model"]).explain_methods)


def explanation_module(run, method: str, *, option: str = "method"):
    """The module implementing ``method`` for ``run``.

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
        return explainer(method)
    except ValueError as err:
        raise MethodUnavailable(str(err)) from None


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
    (``model._version()`` where the model has one, else every parameter's in-place version)."""
    model = run.model
    version_fn = getattr(model, "_version", None)  # nn.Module has an int ``_version`` of its own
    version = version_fn() if callable(version_fn) else tuple((p._version, p.data_ptr()) for p in model.parameters())
    caches = getattr(run, "_explain_caches", None)
    if caches is None:
        caches = {}
        try:
            run._explain_caches = caches
        except AttributeError:  # pragma: no cover - a run type without attributes: nothing is kept
            pass
    entry = caches.get(name)
    if entry is None or entry[0] is not model or entry[1] != version:
        entry = caches[name] = (model, version, {})
    return entry[2]


__all__ = ["METHODS", "run_cache", "MethodUnavailable", "UnsupportedMethod", "available_methods", "explainer",
           "explanation_module", "supported_methods"]
