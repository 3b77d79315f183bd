"""Reproducible train / validation / test splits of the implicit positives.

A :class:`Split` holds indices into the dataset's interaction arrays, so it is
small, exact and can be saved with a run (``split.npz``) and re-used by
``whyrec evaluate``.  Every split is a pure function of the dataset, the
positive rule and the seed.

Users or items that appear only in validation/test are kept: the catalogue is
always the whole item set and every user with a held-out positive is
evaluated.  An item with no training interaction has no graph edge, so
LightGCN ranks it by its (untrained) layer-0 embedding alone; a user with no
training interaction likewise.  Which splits can produce them: the global edge
split (seed 003) can; the per-user holdout keeps at least one training
interaction per user; 002's protocol keeps 80 % of each held-out user's
history in training.  :meth:`Split.describe` counts such cold users/items.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .dataset import InteractionData
from .errors import DataError

METHODS = ("user-holdout", "edge", "heldout-users", "official")


@dataclass
class Split:
    """Interaction indices of each part plus how they were made.

    ``train``, ``valid``, ``test``: int64 index arrays into the dataset's
    interactions (disjoint; only positives under ``min_rating``).
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    method: str
    seed: int
    min_rating: float | None
    params: dict = field(default_factory=dict)

    def matrices(self, data: InteractionData) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
        """Binary ``(n_users, n_items)`` CSR matrices for train, valid and test."""
        return tuple(data.interaction_matrix(part) for part in (self.train, self.valid, self.test))

    def describe(self, data: InteractionData) -> dict:
        """Sizes of the parts and counts of users/items seen only outside training."""
        train_users = np.zeros(data.n_users, bool)
        train_users[data.users[self.train]] = True
        train_items = np.zeros(data.n_items, bool)
        train_items[data.items[self.train]] = True
        held = np.concatenate([self.valid, self.test])
        return {
            "method": self.method,
            "seed": self.seed,
            "min_rating": self.min_rating,
            **self.params,
            "n_train": len(self.train),
            "n_valid": len(self.valid),
            "n_test": len(self.test),
            "n_test_users": int(len(np.unique(data.users[self.test]))),
            "cold_users": int(len(np.setdiff1d(np.unique(data.users[held]), np.flatnonzero(train_users)))),
            "cold_items": int(len(np.setdiff1d(np.unique(data.items[held]), np.flatnonzero(train_items)))),
        }

    def save(self, path: str | Path) -> None:
        meta = {"method": self.method, "seed": self.seed, "min_rating": self.min_rating, "params": self.params}
        np.savez_compressed(path, train=self.train, valid=self.valid, test=self.test, meta=json.dumps(meta))

    @classmethod
    def load(cls, path: str | Path) -> "Split":
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return cls(z["train"], z["valid"], z["test"], meta["method"], meta["seed"], meta["min_rating"],
                           meta.get("params", {}))
        except (OSError, KeyError, ValueError) as err:
            raise DataError(f"not a whyrec split file ({err})", path) from None


def _positives(data: InteractionData, min_rating: float | None) -> np.ndarray:
    idx = np.flatnonzero(data.positive_mask(min_rating))
    if len(idx) == 0:
        raise DataError(f"no positive interactions left under rating >= {min_rating}", data.source_dir)
    return idx


def user_holdout(
    data: InteractionData, test_ratio: float = 0.2, valid_ratio: float = 0.1, seed: int = 2020,
    min_rating: float | None = 4.0,
) -> Split:
    """Per-user random holdout: of each user's positives, ``test_ratio`` go to test,
    ``valid_ratio`` to validation (rounded down), and at least one stays in training."""
    _check_ratios(test_ratio, valid_ratio)
    idx = _positives(data, min_rating)
    rng = np.random.default_rng(seed)
    order = idx[rng.permutation(len(idx))]
    order = order[np.argsort(data.users[order], kind="stable")]  # grouped by user, random within
    users = data.users[order]
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    counts = np.diff(np.r_[starts, len(users)])
    rank = np.arange(len(order)) - np.repeat(starts, counts)
    n_test = np.floor(counts * test_ratio).astype(int)
    n_valid = np.floor(counts * valid_ratio).astype(int)
    # keep >= 1 training interaction per user
    over = n_test + n_valid >= counts
    n_valid[over] = np.maximum(0, counts[over] - 1 - n_test[over])
    n_test[over] = np.minimum(n_test[over], counts[over] - 1)
    t = np.repeat(n_test, counts)
    v = np.repeat(n_valid, counts)
    test = np.sort(order[rank < t])
    valid = np.sort(order[(rank >= t) & (rank < t + v)])
    train = np.sort(order[rank >= t + v])
    return Split(train, valid, test, "user-holdout", seed, min_rating,
                 {"test_ratio": test_ratio, "valid_ratio": valid_ratio})


def edge_split(
    data: InteractionData, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 2020,
    min_rating: float | None = 4.0,
) -> Split:
    """Global random edge split (seed 003: 80/10/10 of all positive edges)."""
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"ratios must be three non-negative numbers summing to 1, got {ratios}")
    idx = _positives(data, min_rating)
    perm = idx[np.random.default_rng(seed).permutation(len(idx))]
    n_train = int(round(ratios[0] * len(idx)))
    n_valid = int(round(ratios[1] * len(idx)))
    return Split(np.sort(perm[:n_train]), np.sort(perm[n_train:n_train + n_valid]),
                 np.sort(perm[n_train + n_valid:]), "edge", seed, min_rating, {"ratios": list(ratios)})


def heldout_users(
    data: InteractionData, n_valid_users: int = 200, n_test_users: int = 200, keep_ratio: float = 0.8,
    seed: int = 2020, min_rating: float | None = 4.0,
) -> Split:
    """Seed 002's protocol: hold out ``n_valid_users`` + ``n_test_users`` users; keep
    ``keep_ratio`` of each held-out user's positives in training, the rest are their targets.

    Only users with at least 2 positives can be held out (one to keep, one to predict).
    """
    if not 0 < keep_ratio < 1:
        raise ValueError(f"keep_ratio must be in (0, 1), got {keep_ratio}")
    idx = _positives(data, min_rating)
    counts = np.bincount(data.users[idx], minlength=data.n_users)
    eligible = np.flatnonzero(counts >= 2)
    need = n_valid_users + n_test_users
    if len(eligible) < need:
        raise DataError(f"only {len(eligible)} users have >= 2 positives; {need} held-out users requested",
                        data.source_dir)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(eligible, size=need, replace=False)
    role = np.zeros(data.n_users, np.int8)  # 0 train-only, 1 valid, 2 test
    role[chosen[:n_valid_users]] = 1
    role[chosen[n_valid_users:]] = 2
    order = idx[rng.permutation(len(idx))]
    order = order[np.argsort(data.users[order], kind="stable")]
    users = data.users[order]
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    n = np.diff(np.r_[starts, len(users)])
    rank = np.arange(len(order)) - np.repeat(starts, n)
    keep = np.maximum(1, np.minimum(n - 1, np.floor(n * keep_ratio).astype(int)))
    held_part = (rank >= np.repeat(keep, n)) & (role[users] > 0)
    valid = np.sort(order[held_part & (role[users] == 1)])
    test = np.sort(order[held_part & (role[users] == 2)])
    train = np.sort(order[~held_part])
    return Split(train, valid, test, "heldout-users", seed, min_rating,
                 {"n_valid_users": n_valid_users, "n_test_users": n_test_users, "keep_ratio": keep_ratio})


def official_split(data: InteractionData, valid_ratio: float = 0.0, seed: int = 2020) -> Split:
    """The dataset's own train/test split (Gowalla).  ``valid_ratio`` > 0 moves that
    share of each user's training interactions to validation (default: none, as the
    LightGCN paper, which reports test metrics of a fixed training budget)."""
    if data.official_test is None:
        raise DataError(f"dataset {data.name} has no official split; use --split user-holdout, edge or heldout-users")
    test = np.flatnonzero(data.official_test)
    train = np.flatnonzero(~data.official_test)
    valid = np.array([], dtype=np.int64)
    if valid_ratio > 0:
        sub = InteractionData(data.name, data.user_ids, data.item_ids, data.users[train], data.items[train],
                              data.ratings[train], source_dir=data.source_dir)
        inner = user_holdout(sub, test_ratio=valid_ratio, valid_ratio=0.0, seed=seed, min_rating=None)
        valid, train = np.sort(train[inner.test]), np.sort(train[inner.train])
    return Split(train, valid, test, "official", seed, None, {"valid_ratio": valid_ratio})


def make_split(data: InteractionData, method: str | None = None, seed: int = 2020,
               min_rating: float | None = 4.0, **params) -> Split:
    """Split by name; ``None`` picks the dataset's default (official for Gowalla,
    seed 002's held-out users for Last.fm, per-user holdout otherwise)."""
    if method is None:
        method = "official" if data.official_test is not None else (
            "heldout-users" if data.name == "lastfm-kg" else "user-holdout")
    if method == "user-holdout":
        return user_holdout(data, seed=seed, min_rating=min_rating, **params)
    if method == "edge":
        return edge_split(data, seed=seed, min_rating=min_rating, **params)
    if method == "heldout-users":
        return heldout_users(data, seed=seed, min_rating=min_rating, **params)
    if method == "official":
        return official_split(data, seed=seed, **params)
    raise ValueError(f"unknown split {method!r}; choose one of: {', '.join(METHODS)}")


def _check_ratios(test_ratio: float, valid_ratio: float) -> None:
    if not (0 <= test_ratio < 1 and 0 <= valid_ratio < 1 and test_ratio + valid_ratio < 1):
        raise ValueError(f"test_ratio and valid_ratio must be in [0, 1) and sum below 1, got {test_ratio}, {valid_ratio}")
