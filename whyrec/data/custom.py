"""Users' own interaction data: :func:`from_interactions` builds the same :class:`InteractionData`
the dataset loaders return, from a pandas DataFrame or from numpy arrays.

Raw ids must be integers (as in every supported dataset: run folders store them as JSON
integers); strings that hold integers are accepted. With ``rating`` the data are explicit ratings
and the split's positive rule (``min_rating``, default 4) applies; without it every interaction is a
positive (weight 1).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .dataset import InteractionData
from .errors import DataError

__all__ = ["from_interactions"]


def _int_ids(values, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(f"{what} must be integer ids; found non-integer values")
        return arr.astype(np.int64)
    try:
        return np.array([int(v) for v in arr], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        bad = next((v for v in arr if not str(v).lstrip("-").isdigit()), arr[0] if len(arr) else None)
        raise DataError(f"{what} must be integer ids (run folders store ids as integers); found {bad!r}") from None


def from_interactions(df=None, *, user: str = "user", item: str = "item", rating: Optional[str] = None,
                      timestamp: Optional[str] = None, titles=None, users=None, items=None, ratings=None,
                      timestamps=None, name: str = "custom") -> InteractionData:
    """Interaction data from a DataFrame ``df`` (column names ``user``, ``item`` and optionally
    ``rating``, ``timestamp``) or from arrays (``users=``, ``items=``, ``ratings=``, ``timestamps=``).

    ``titles``: item titles, as a column name of ``df``, a mapping raw item id -> title, or a
    sequence aligned with the interactions. Items are ``0..n_items-1`` in increasing raw-id order
    (users likewise); ``InteractionData.item_ids`` maps back.
    """
    if df is not None:
        missing = [c for c in (user, item, rating, timestamp) if c is not None and c not in df.columns]
        if missing:
            raise DataError(f"the DataFrame has no column {', '.join(map(repr, missing))} "
                            f"(columns: {', '.join(map(str, df.columns))})")
        users = df[user].to_numpy()
        items = df[item].to_numpy()
        ratings = df[rating].to_numpy() if rating is not None else None
        timestamps = df[timestamp].to_numpy() if timestamp is not None else None
        if isinstance(titles, str):
            if titles not in df.columns:
                raise DataError(f"the DataFrame has no titles column {titles!r}")
            titles = df[titles].to_numpy()
    if users is None or items is None:
        raise DataError("give a DataFrame, or both users= and items= arrays")
    u_raw, i_raw = _int_ids(users, "user ids"), _int_ids(items, "item ids")
    if len(u_raw) != len(i_raw):
        raise DataError(f"users and items differ in length ({len(u_raw)} vs {len(i_raw)})")
    if len(u_raw) == 0:
        raise DataError("no interactions: not a dataset")
    explicit = ratings is not None
    r = np.ones(len(u_raw), np.float32) if ratings is None else np.asarray(ratings, dtype=np.float64)
    if len(r) != len(u_raw) or not np.all(np.isfinite(r)):
        raise DataError("ratings must be finite numbers, one per interaction")
    user_ids, u = np.unique(u_raw, return_inverse=True)
    item_ids, i = np.unique(i_raw, return_inverse=True)
    ts = None
    if timestamps is not None:
        ts = np.asarray(timestamps)
        if ts.dtype.kind == "M":
            ts = ts.astype("datetime64[s]").astype(np.int64)
        ts = np.asarray(ts, dtype=np.int64)
    item_titles = None
    if titles is not None:
        if hasattr(titles, "get") and not hasattr(titles, "shape"):  # a mapping raw id -> title
            item_titles = [str(titles.get(int(rid), titles.get(str(int(rid)), f"item {int(rid)}")))
                           for rid in item_ids]
        else:
            t = list(titles)
            if len(t) != len(i_raw):
                raise DataError(f"titles must be one per interaction ({len(i_raw)}), got {len(t)}")
            first = {}
            for k, idx in enumerate(i):
                first.setdefault(int(idx), str(t[k]))
            item_titles = [first[k] for k in range(len(item_ids))]
    return InteractionData(name=name, user_ids=user_ids.astype(np.int64), item_ids=item_ids.astype(np.int64),
                           users=u.astype(np.int64), items=i.astype(np.int64), ratings=r.astype(np.float32),
                           timestamps=ts, explicit=explicit, item_titles=item_titles)
