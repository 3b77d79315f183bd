"""Raw id -> row index lookup, shared by datasets, run folders and the service."""

from __future__ import annotations

from functools import cached_property
from typing import Optional

import numpy as np


class IdIndex:
    """Maps the raw ids of a file (``ids``: ``(n,)`` ints, index -> raw) back to rows ``0..n-1``.

    ``find(raw)`` accepts an int or a numeric string and returns ``None`` for an unknown or
    non-numeric id; ``index[raw]`` raises :class:`KeyError` instead.
    """

    def __init__(self, ids: np.ndarray) -> None:
        self._rows = {int(r): i for i, r in enumerate(np.asarray(ids))}

    def __len__(self) -> int:
        return len(self._rows)

    def find(self, raw: int | str) -> Optional[int]:
        try:
            return self._rows.get(int(raw))
        except (TypeError, ValueError):
            return None

    def __getitem__(self, raw: int | str) -> int:
        row = self.find(raw)
        if row is None:
            raise KeyError(raw)
        return row


class UserItemIds:
    """Mixin for objects with ``user_ids`` / ``item_ids`` arrays (index -> raw id): their sizes and
    cached raw-id lookups (:class:`~whyrec.data.dataset.InteractionData`, :class:`~whyrec.run.Run`)."""

    user_ids: np.ndarray
    item_ids: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @cached_property
    def user_lookup(self) -> IdIndex:
        return IdIndex(self.user_ids)

    @cached_property
    def item_lookup(self) -> IdIndex:
        return IdIndex(self.item_ids)
