"""Explanations.  Each method lives in its own module and exposes

* ``explain_run(run, user, item, **options) -> dict`` — a JSON-ready result with at least
  ``"method"``, ``"user"`` (raw id) and ``"item"`` (raw id or ``None``);
* ``render_text(result) -> str`` — the ranked table the CLI prints;
* ``plot(result, path) -> None`` — the figure ``--figure`` writes.

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


__all__ = ["METHODS", "explainer"]
