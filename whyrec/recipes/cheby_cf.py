"""``--model cheby-cf``: ChebyCF (Kim et al., SIGIR 2025), training-free. ``--opt`` any
:class:`~whyrec.models.cheby_cf.ChebyCFConfig` field (``order flatness rank alpha beta nodes
svd``); on a split with validation, ``rank``, ``alpha`` and ``beta`` are chosen from the grid below
unless fixed (:mod:`whyrec.recipes.filters`). The defaults are the authors' Gowalla config."""

from ..models.cheby_cf import ChebyCF, ChebyCFConfig
from .filters import filter_recipe

GRID = {"rank": [512, 128, 256], "alpha": [0.2, 0.1, 0.4], "beta": [0.4, 0.2, 0.5]}

RECIPE = filter_recipe("cheby-cf", ChebyCF, ChebyCFConfig, GRID,
                       "ChebyCF: Chebyshev-interpolated spectral filter + ideal pass (training-free, exact explanations)")
