"""Dataset loaders and splits.

>>> from whyrec.data import load_dataset
>>> data = load_dataset("ml-100k", "../shared/datasets/ml-100k")
>>> data.n_users, data.n_items, data.n_interactions
(943, 1682, 100000)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .errors import DataError, WhyrecError
from .names import DATASET_NAMES

if TYPE_CHECKING:  # pragma: no cover
    from .dataset import FeatureMatrix, InteractionData


def _loaders() -> dict[str, Callable[..., "InteractionData"]]:
    # imported on first use: numpy, scipy and pandas are not needed to print `whyrec --help`
    from .gowalla import load_gowalla
    from .lastfm import load_lastfm_kg
    from .movielens import load_ml1m, load_ml100k, load_ml_latest_small

    loaders = {
        "ml-100k": load_ml100k,
        "ml-1m": load_ml1m,
        "ml-latest-small": load_ml_latest_small,
        "gowalla": load_gowalla,
        "lastfm-kg": load_lastfm_kg,
    }
    assert tuple(loaders) == DATASET_NAMES
    return loaders


def __getattr__(name: str):
    if name == "LOADERS":
        return _loaders()
    if name in ("FeatureMatrix", "InteractionData"):
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_dataset(name: str, data_dir: str | Path | None = None) -> "InteractionData":
    """Load dataset ``name`` from ``data_dir`` (official layout), or download it when ``None``."""
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    if data_dir is None:
        from .download import fetch

        data_dir = fetch(name)
    data = _loaders()[name](Path(data_dir))
    if data.n_interactions == 0 or data.n_users == 0 or data.n_items == 0:
        raise DataError(f"no interactions ({data.n_users} users, {data.n_items} items): not a dataset", data_dir)
    return data


__all__ = [
    "DATASET_NAMES",
    "DataError",
    "FeatureMatrix",
    "InteractionData",
    "LOADERS",
    "WhyrecError",
    "load_dataset",
]
