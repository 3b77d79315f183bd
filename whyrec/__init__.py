"""whyrec: graph-based recommendation that can say why.

The library's face (imported on first use, so that ``whyrec --help`` does not pay for torch):
:func:`load_dataset`, :func:`from_interactions`, :func:`fit`, :func:`load`, :class:`Run`,
:class:`Explanation`. See :mod:`whyrec.api`.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "load_dataset": ("whyrec.data", "load_dataset"),
    "from_interactions": ("whyrec.data.custom", "from_interactions"),
    "fit": ("whyrec.api", "fit"),
    "load": ("whyrec.api", "load"),
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
