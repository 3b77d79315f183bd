"""The one dataset object every whyrec loader returns.

Users and items are re-indexed to ``0..n_users-1`` and ``0..n_items-1``; the raw
ids of the files are kept in ``user_ids`` / ``item_ids`` (index -> raw) and
looked up with :meth:`InteractionData.user_index` / :meth:`item_index`
(raw -> index).  Interactions are parallel arrays of length ``n_interactions``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .errors import DataError
from .ids import UserItemIds


def binary_matrix(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Binary ``shape`` CSR matrix with a 1 at every ``(users[k], items[k])`` (duplicates count once)."""
    m = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


@dataclass
class FeatureMatrix:
    """A dense feature matrix with named columns.

    ``values`` is ``(n_rows, n_columns)`` float32.  ``columns`` names each
    column (``"occupation=writer"``, ``"genre=Comedy"``); ``groups`` gives the
    human-readable group of each column (``"occupation"``, ``"Comedy"``), so
    attributions over one-hot columns can be summed per group.
    """

    values: np.ndarray
    columns: list[str]
    groups: list[str]

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim != 2 or self.values.shape[1] != len(self.columns):
            raise ValueError(
                f"feature matrix of shape {self.values.shape} does not match "
                f"{len(self.columns)} column names"
            )
        if len(self.groups) != len(self.columns):
            raise ValueError("one group name per column is required")

    @property
    def group_names(self) -> list[str]:
        """Distinct groups in column order."""
        return list(dict.fromkeys(self.groups))

    def group_columns(self, group: str) -> np.ndarray:
        """Column indices that belong to ``group``."""
        return np.flatnonzero(np.asarray(self.groups) == group)


@dataclass
class InteractionData(UserItemIds):
    """Users, items, their interactions, side features and KG triples.

    Attributes
    ----------
    name: dataset name (``"ml-100k"`` ...).
    user_ids, item_ids: raw ids, ``(n_users,)`` / ``(n_items,)`` int64, index -> raw.
    users, items: ``(n_interactions,)`` int64 indices.
    ratings: ``(n_interactions,)`` float32 — the explicit rating (MovieLens),
        the play count (Last.fm) or 1.0 (Gowalla).
    timestamps: ``(n_interactions,)`` int64 or ``None``.
    explicit: whether ``ratings`` are explicit star ratings the implicit rule applies to.
    item_titles: ``n_items`` display names or ``None``.
    user_features, item_features: :class:`FeatureMatrix` or ``None``.
    item_genres: per item the list of its genre names (MovieLens) or ``None``.
    item_tags: per item its distinct user tags (ml-latest-small) or ``None``.
    kg_triples: ``(n_triples, 3)`` int64 ``(head, relation, tail)`` entity
        indices, or ``None``.  Entities ``0..n_items-1`` are the items themselves
        where the dataset links items to entities (Last.fm).
    n_entities: number of KG entities (items included), 0 without a KG.
    relation_names: name of each relation index.
    official_test: ``(n_interactions,)`` bool — True for the dataset's own test
        interactions (Gowalla), else ``None``.
    source_dir: the folder the files were read from.
    notes: what the loader dropped or repaired, one line each (shown by the CLI).
    """

    name: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray | None = None
    explicit: bool = False
    item_titles: list[str] | None = None
    user_features: FeatureMatrix | None = None
    item_features: FeatureMatrix | None = None
    item_genres: list[list[str]] | None = None
    item_tags: list[list[str]] | None = None
    kg_triples: np.ndarray | None = None
    n_entities: int = 0
    relation_names: list[str] = field(default_factory=list)
    official_test: np.ndarray | None = None
    source_dir: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.users = np.asarray(self.users, dtype=np.int64)
        self.items = np.asarray(self.items, dtype=np.int64)
        self.ratings = np.asarray(self.ratings, dtype=np.float32)
        n = len(self.users)
        if len(self.items) != n or len(self.ratings) != n:
            raise ValueError("users, items and ratings must have the same length")

    # ------------------------------------------------------------------ sizes (n_users, n_items: UserItemIds)
    @property
    def n_interactions(self) -> int:
        return len(self.users)

    @property
    def n_triples(self) -> int:
        return 0 if self.kg_triples is None else len(self.kg_triples)

    # ------------------------------------------------------------------ ids
    def user_index(self, raw_id: int | str) -> int:
        """Index of a raw user id; :class:`KeyError` with a clear message if unknown."""
        row = self.user_lookup.find(raw_id)
        if row is None:
            raise KeyError(f"unknown user id {raw_id!r} in dataset {self.name}")
        return row

    def item_index(self, raw_id: int | str) -> int:
        """Index of a raw item id; :class:`KeyError` with a clear message if unknown."""
        row = self.item_lookup.find(raw_id)
        if row is None:
            raise KeyError(f"unknown item id {raw_id!r} in dataset {self.name}")
        return row

    # ------------------------------------------------------------------ implicit feedback
    def positive_mask(self, min_rating: float | None = 4.0) -> np.ndarray:
        """``(n_interactions,)`` bool: which interactions count as implicit positives.

        For explicit ratings an interaction is positive when ``rating >= min_rating``
        (default 4; seed 001 uses 3); ``None`` keeps every rating.  Implicit data
        (Gowalla check-ins, Last.fm plays) is positive throughout.
        """
        if not self.explicit or min_rating is None:
            return np.ones(self.n_interactions, dtype=bool)
        return self.ratings >= min_rating

    def interaction_matrix(self, index: np.ndarray | None = None) -> sp.csr_matrix:
        """Binary ``(n_users, n_items)`` CSR matrix of the selected interactions."""
        u = self.users if index is None else self.users[index]
        i = self.items if index is None else self.items[index]
        return binary_matrix(u, i, (self.n_users, self.n_items))

    def summary(self, min_rating: float | None = 4.0) -> dict:
        """Counts for ``whyrec data info``."""
        n_pos = int(self.positive_mask(min_rating).sum())
        return {
            "dataset": self.name,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_interactions": self.n_interactions,
            "n_positives": n_pos,
            "positive_rule": (
                f"rating >= {min_rating}" if self.explicit and min_rating is not None else "all"
            ),
            "density": self.n_interactions / max(1, self.n_users * self.n_items),
            "has_timestamps": self.timestamps is not None,
            "has_official_split": self.official_test is not None,
            "user_features": [] if self.user_features is None else self.user_features.group_names,
            "item_features": [] if self.item_features is None else self.item_features.group_names,
            "user_feature_columns": 0 if self.user_features is None else len(self.user_features.columns),
            "item_feature_columns": 0 if self.item_features is None else len(self.item_features.columns),
            "n_entities": self.n_entities,
            "n_relations": len(self.relation_names),
            "n_triples": self.n_triples,
        }

    def check_no_empty_users(self, mask: np.ndarray, rule: str) -> None:
        """Raise :class:`DataError` if a user has no interaction left under ``mask``."""
        counts = np.bincount(self.users[mask], minlength=self.n_users)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            raise DataError(
                f"{len(empty)} user(s) have no interactions left after filtering ({rule}); "
                f"first: user {self.user_ids[empty[0]]}",
                path=self.source_dir,
            )
