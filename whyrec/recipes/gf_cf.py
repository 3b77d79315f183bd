"""``--model gf-cf``: GF-CF (Shen et al., CIKM 2021), training-free. ``--opt rank=256 --opt alpha=0.3
--opt svd=randomized|arpack``; on a split with validation, ``rank`` and ``alpha`` are chosen from
the grid below unless fixed (:mod:`whyrec.recipes.filters`)."""

from ..models.gf_cf import GFCF, GFCFConfig
from .filters import filter_recipe

GRID = {"rank": [256, 64, 128, 512], "alpha": [0.3, 0.1, 0.5, 1.0]}

RECIPE = filter_recipe("gf-cf", GFCF, GFCFConfig, GRID,
                       "GF-CF: linear item-item filter + ideal low-pass (training-free, exact explanations)")
