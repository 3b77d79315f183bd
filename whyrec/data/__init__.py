"""Dataset loaders and splits.

>>> from whyrec.data import load_dataset
>>> data = load_dataset("ml-100k", "../shared/datasets/ml-100k")
>>> data.n_users, data.n_items, data.n_interactions
(943, 1682, 100000)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .dataset import FeatureMatrix, InteractionData
from .errors import DataError, WhyrecError
from .gowalla import load_gowalla
from .lastfm import load_lastfm_kg
from .movielens import load_ml1m, load_ml100k, load_ml_latest_small

LOADERS: dict[str, Callable[..., InteractionData]] = {
    "ml-100k": load_ml100k,
    "ml-1m": load_ml1m,
    "ml-latest-small": load_ml_latest_small,
    "gowalla": load_gowalla,
    "lastfm-kg": load_lastfm_kg,
}


def load_dataset(name: str, data_dir: str | Path | None = None) -> InteractionData:
    """Load dataset ``name`` from ``data_dir`` (official layout), or download it when ``None``."""
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(LOADERS)}")
    if data_dir is None:
        from .download import fetch

        data_dir = fetch(name)
    return LOADERS[name](Path(data_dir))


__all__ = [
    "DataError",
    "FeatureMatrix",
    "InteractionData",
    "LOADERS",
    "WhyrecError",
    "load_dataset",
]
