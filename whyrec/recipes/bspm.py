"""``--model bspm``: blurring-sharpening process model (Choi et al., SIGIR 2023), training-free.
``--opt`` any :class:`~whyrec.models.bspm.BSPMConfig` field (``rank beta T_s K_s solver T_b K_b
merge t_point_combination svd``); on a split with validation, ``rank``, ``beta`` and ``T_s`` are
chosen from the grid below unless fixed (:mod:`whyrec.recipes.filters`). The defaults are the
paper's Gowalla setting (EM, RK4, T_s 2.5, k 448, β 0.2)."""

from ..models.bspm import BSPM, BSPMConfig
from .filters import filter_recipe

GRID = {"rank": [448, 128, 256], "beta": [0.2, 0.1, 0.4], "T_s": [2.5, 1.0, 1.5]}

RECIPE = filter_recipe("bspm", BSPM, BSPMConfig, GRID,
                       "BSPM: blurring-sharpening ODEs on the item graph (training-free, exact explanations)")
