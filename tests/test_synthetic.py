"""The synthetic power-law generator: seeded, counts as asked, heavy-tailed, readable as Gowalla."""

from __future__ import annotations

import numpy as np
import pytest

from whyrec.data import load_dataset
from whyrec.data.synthetic import power_law, write_gowalla_folder


def test_seeded_and_counts_as_requested():
    a = power_law(2000, 1000, 30_000, exponent=1.0, seed=11)
    b = power_law(2000, 1000, 30_000, exponent=1.0, seed=11)
    c = power_law(2000, 1000, 30_000, exponent=1.0, seed=12)
    for field in ("users", "items", "official_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.items, c.items)
    assert (a.n_users, a.n_items, a.n_interactions) == (2000, 1000, 30_000)
    assert len(np.unique(a.users)) == 2000 and len(np.unique(a.items)) == 1000  # everyone occurs
    assert len(np.unique(a.users * 1000 + a.items)) == 30_000  # no pair twice
    # per-user holdout: about 20 % test, every user keeps a training interaction
    assert abs(a.official_test.mean() - 0.2) < 0.01
    assert len(np.unique(a.users[~a.official_test])) == 2000


def test_degrees_are_heavy_tailed():
    data = power_law(5000, 2000, 100_000, exponent=1.0, seed=3)
    item_deg = np.sort(np.bincount(data.items, minlength=2000))[::-1]
    user_deg = np.sort(np.bincount(data.users, minlength=5000))[::-1]
    assert item_deg[:20].sum() / 100_000 > 0.15  # the top 1 % of items: > 15 % of the interactions
    assert user_deg[:50].sum() / 100_000 > 0.05  # the top 1 % of users: > 5 %
    assert np.median(item_deg) < item_deg.mean() / 2  # most items are far below the mean
    flat = power_law(5000, 2000, 100_000, exponent=0.0, seed=3)
    assert np.sort(np.bincount(flat.items))[::-1][:20].sum() / 100_000 < 0.02  # exponent 0: uniform
    # a steeper law concentrates more
    steep = power_law(5000, 2000, 100_000, exponent=1.3, seed=3)
    assert np.sort(np.bincount(steep.items))[::-1][:20].sum() > item_deg[:20].sum()


def test_written_as_gowalla_and_read_back(tmp_path):
    data = power_law(800, 600, 12_000, exponent=0.9, seed=5)
    folder = write_gowalla_folder(data, tmp_path / "syn")
    assert sorted(p.name for p in folder.iterdir()) == ["item_list.txt", "test.txt", "train.txt", "user_list.txt"]
    back = load_dataset("gowalla", folder)
    assert (back.n_users, back.n_items, back.n_interactions) == (800, 600, 12_000)
    assert back.official_test.sum() == data.official_test.sum()
    key = lambda d, m: np.sort(d.users[m] * 600 + d.items[m])  # noqa: E731
    np.testing.assert_array_equal(key(back, back.official_test), key(data, data.official_test))
    np.testing.assert_array_equal(key(back, ~back.official_test), key(data, ~data.official_test))
    from whyrec.data.splits import make_split

    split = make_split(back, "official")  # the official split is the generator's holdout
    assert len(split.test) == data.official_test.sum()
    with pytest.raises(FileExistsError, match="already exists"):
        write_gowalla_folder(data, folder)
    write_gowalla_folder(power_law(50, 40, 400, seed=1), folder, overwrite=True)
    assert load_dataset("gowalla", folder).n_users == 50


@pytest.mark.parametrize("args, match", [((10, 10, 5), "between"), ((10, 10, 101), "between"),
                                         ((0, 10, 10), "at least one"), ((10, 10, 50, -1.0), "exponent")])
def test_bad_parameters(args, match):
    with pytest.raises(ValueError, match=match):
        power_law(*args)
