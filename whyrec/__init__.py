"""whyrec: graph-based recommendation that can say why.

The library's face (imported on first use, so that ``whyrec --help`` does not pay for torch):
:func:`load_dataset`, :func:`from_interactions`, :func:`fit`, :func:`load`, :class:`Run`,
:class:`Explanation`, and the model registry: :func:`available_models` (name -> description),
``MODELS`` (name -> :class:`~whyrec.recipes.Recipe`, what ``fit(model=…)`` and ``whyrec train
--model`` accept; :mod:`whyrec.recipes`). See :mod:`whyrec.api`.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "load_dataset": ("whyrec.data", "load_dataset"),
    "from_interactions": ("whyrec.data.custom", "from_interactions"),
    "fit": ("whyrec.api", "fit"),
    "load": ("whyrec.api", "load"),
    "available_models": ("whyrec.api", "available_models"),
    "MODELS": ("whyrec.api", "MODELS"),
    "Run": ("whyrec.run", "Run"),
    "Explanation": ("whyrec.explain.explanation", "Explanation"),
    "Recommendation": ("whyrec.recommend", "Recommendation"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        module, attr = _EXPORTS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'whyrec' has no attribute {name!r}")
