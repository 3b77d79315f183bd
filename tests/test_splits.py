"""Splits: deterministic, disjoint, the promised proportions, saved and re-loaded exactly."""

from __future__ import annotations

import numpy as np
import pytest

from whyrec.data.splits import Split, edge_split, heldout_users, make_split, official_split, user_holdout


def _disjoint_cover(split: Split, expected: np.ndarray) -> None:
    parts = np.concatenate([split.train, split.valid, split.test])
    assert len(parts) == len(np.unique(parts)), "parts overlap"
    assert np.array_equal(np.sort(parts), np.sort(expected))


def test_user_holdout_per_user_ratios(ml100k):
    s = user_holdout(ml100k, test_ratio=0.2, valid_ratio=0.1, seed=7)
    pos = np.flatnonzero(ml100k.ratings >= 4)
    _disjoint_cover(s, pos)
    n_all = np.bincount(ml100k.users[pos], minlength=ml100k.n_users)
    n_test = np.bincount(ml100k.users[s.test], minlength=ml100k.n_users)
    n_valid = np.bincount(ml100k.users[s.valid], minlength=ml100k.n_users)
    n_train = np.bincount(ml100k.users[s.train], minlength=ml100k.n_users)
    has = n_all > 0
    assert np.array_equal(n_test[has], np.floor(n_all[has] * 0.2).astype(int))
    assert np.all(n_train[has] >= 1)
    assert np.all(n_valid[has] <= np.floor(n_all[has] * 0.1))
    assert s.describe(ml100k)["cold_users"] == 0


def test_user_holdout_deterministic_and_seed_dependent(ml100k):
    a = user_holdout(ml100k, seed=1)
    b = user_holdout(ml100k, seed=1)
    c = user_holdout(ml100k, seed=2)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.train, b.train)
    assert not np.array_equal(a.test, c.test)


def test_edge_split_80_10_10(mlsmall):
    s = edge_split(mlsmall, (0.8, 0.1, 0.1), seed=3, min_rating=3.0)
    pos = np.flatnonzero(mlsmall.ratings >= 3)
    _disjoint_cover(s, pos)
    assert len(s.train) == round(0.8 * len(pos)) and len(s.valid) == round(0.1 * len(pos))
    d = s.describe(mlsmall)
    assert d["cold_items"] > 0  # a global edge split does leave items only in valid/test
    with pytest.raises(ValueError, match="summing to 1"):
        edge_split(mlsmall, (0.8, 0.1, 0.2))


def test_heldout_users_protocol(lastfm):
    s = heldout_users(lastfm, 200, 200, keep_ratio=0.8, seed=0)
    _disjoint_cover(s, np.arange(lastfm.n_interactions))
    valid_users = np.unique(lastfm.users[s.valid])
    test_users = np.unique(lastfm.users[s.test])
    assert len(valid_users) == 200 and len(test_users) == 200
    assert len(np.intersect1d(valid_users, test_users)) == 0
    n_all = np.bincount(lastfm.users, minlength=lastfm.n_users)
    n_train = np.bincount(lastfm.users[s.train], minlength=lastfm.n_users)
    for u in test_users:
        want = max(1, min(n_all[u] - 1, int(np.floor(n_all[u] * 0.8))))
        assert n_train[u] == want
    others = np.setdiff1d(np.arange(lastfm.n_users), np.r_[valid_users, test_users])
    assert np.array_equal(n_train[others], n_all[others])
    assert make_split(lastfm).method == "heldout-users"


def test_official_split(gowalla):
    s = official_split(gowalla)
    assert len(s.train) == 810_128 and len(s.test) == 217_242 and len(s.valid) == 0
    v = official_split(gowalla, valid_ratio=0.1, seed=1)
    assert np.array_equal(v.test, s.test)
    assert len(v.train) + len(v.valid) == 810_128
    per_user = np.bincount(gowalla.users[s.train], minlength=gowalla.n_users)
    assert len(v.valid) == int(np.floor(per_user * 0.1).sum())  # floor(10 %) of each user's train
    assert make_split(gowalla).method == "official"


def test_official_split_requires_one(ml100k):
    from whyrec.data.errors import DataError

    with pytest.raises(DataError, match="no official split"):
        official_split(ml100k)


def test_save_load_roundtrip(tmp_path, ml100k):
    s = user_holdout(ml100k, seed=5, min_rating=3.0)
    s.save(tmp_path / "split.npz")
    r = Split.load(tmp_path / "split.npz")
    assert r.method == s.method and r.seed == 5 and r.min_rating == 3.0 and r.params == s.params
    for a, b in zip(r.matrices(ml100k), s.matrices(ml100k)):
        assert (a != b).nnz == 0


def test_load_rejects_garbage(tmp_path):
    from whyrec.data.errors import DataError

    (tmp_path / "split.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="split.npz"):
        Split.load(tmp_path / "split.npz")
