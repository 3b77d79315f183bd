"""Synthetic power-law interaction data, for scale benchmarks (``benchmarks/bench_scale.py``).

:func:`power_law` draws ``n_interactions`` distinct ``(user, item)`` pairs in which item popularity
and user activity follow Zipf laws: the item of popularity rank ``r`` is drawn with probability
``∝ r^-exponent`` (and users with ``user_exponent``, by default the same). Every user and every item
occurs at least once, so the counts are exactly those asked for; a pair is never repeated, so an item
holds at most ``n_users`` interactions (the heaviest items saturate when the exponent is large). Which
item has which rank is a random permutation. Everything is a function of ``seed``.

A per-user holdout (``test_ratio`` of each user's interactions, at least one kept in training)
marks ``official_test``, so the result behaves like Gowalla: :func:`write_gowalla_folder` writes the
LightGCN authors' ``train.txt`` / ``test.txt`` (plus ``user_list.txt`` / ``item_list.txt``) that
``load_dataset("gowalla", folder)`` reads back, or use the returned :class:`InteractionData` in memory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .dataset import InteractionData


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """``r^-exponent`` for ranks ``r = 1..n``, normalised to sum to 1."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -float(exponent)
    return w / w.sum()


def _draw(rng: np.random.Generator, cdf: np.ndarray, size: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(cdf) - 1)


def power_law(n_users: int, n_items: int, n_interactions: int, exponent: float = 1.0,
              user_exponent: float | None = None, seed: int = 0, test_ratio: float = 0.2) -> InteractionData:
    """``n_interactions`` distinct power-law ``(user, item)`` pairs with a per-user test holdout (see the
    module docstring)."""
    n_users, n_items, n_interactions = int(n_users), int(n_items), int(n_interactions)
    if n_users < 1 or n_items < 1:
        raise ValueError(f"need at least one user and one item, got {n_users} users and {n_items} items")
    if not max(n_users, n_items) <= n_interactions <= n_users * n_items:
        raise ValueError(f"n_interactions must be between max(users, items) = {max(n_users, n_items):,} (every "
                         f"user and item once) and users × items = {n_users * n_items:,}, got {n_interactions:,}")
    user_exponent = exponent if user_exponent is None else user_exponent
    for name, value in (("exponent", exponent), ("user_exponent", user_exponent)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if not 0.0 <= test_ratio < 1.0:
        raise ValueError(f"test_ratio must be in [0, 1), got {test_ratio}")
    rng = np.random.default_rng(seed)
    item_rank = rng.permutation(n_items)  # item_rank[r]: the item of popularity rank r
    user_rank = rng.permutation(n_users)
    item_cdf = np.cumsum(zipf_weights(n_items, exponent))
    user_cdf = np.cumsum(zipf_weights(n_users, user_exponent))
    # everyone once: a cover of users and items
    m = max(n_users, n_items)
    k = np.arange(m)
    keys = np.unique(rng.permutation(n_users)[k % n_users].astype(np.int64) * n_items
                     + rng.permutation(n_items)[k % n_items])
    accept = 1.0  # share of the last round's draws that were new pairs
    for _ in range(100):  # distinct pairs: draw what is missing (scaled by the repeat rate), drop repeats
        missing = n_interactions - len(keys)
        if missing <= 0:
            break
        size = int(min(missing * 1.2 / max(accept, 0.02), 4 * n_interactions + 1024)) + 16
        new = user_rank[_draw(rng, user_cdf, size)].astype(np.int64) * n_items + item_rank[_draw(rng, item_cdf, size)]
        new = np.setdiff1d(np.unique(new), keys, assume_unique=True)
        accept = max(len(new) / size, 1e-6)
        if len(new) > missing:
            new = rng.choice(new, missing, replace=False)
        keys = np.union1d(keys, new)
    else:  # saturated heavy items make repeats ever likelier: fill the rest uniformly
        while len(keys) < n_interactions:
            size = 2 * (n_interactions - len(keys)) + 16
            new = np.setdiff1d(np.unique(rng.integers(0, n_users * n_items, size, dtype=np.int64)), keys,
                               assume_unique=True)
            keys = np.union1d(keys, rng.choice(new, min(len(new), n_interactions - len(keys)), replace=False))
    users, items = np.divmod(keys, n_items)  # sorted by user
    # per-user holdout: shuffle within users, the first ceil-ish share is test, at least one kept for training
    order = np.lexsort((rng.random(len(users)), users))
    users, items = users[order], items[order]
    starts = np.searchsorted(users, np.arange(n_users))
    counts = np.diff(np.append(starts, len(users)))
    pos = np.arange(len(users)) - np.repeat(starts, counts)
    n_test = np.minimum(np.floor(counts * test_ratio + rng.random(n_users)).astype(np.int64), counts - 1)
    test = pos < np.repeat(n_test, counts)
    return InteractionData(
        name="synthetic",
        user_ids=np.arange(n_users, dtype=np.int64),
        item_ids=np.arange(n_items, dtype=np.int64),
        users=users.astype(np.int64),
        items=items.astype(np.int64),
        ratings=np.ones(len(users), np.float32),
        explicit=False,
        official_test=test,
        notes=[],
    )


def _lines(users: np.ndarray, items: np.ndarray, n_users: int) -> list[str]:
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    bounds = np.searchsorted(users, np.arange(n_users + 1))
    text = items.astype(str)
    return [f"{u} " + " ".join(text[bounds[u]:bounds[u + 1]]) for u in range(n_users) if bounds[u + 1] > bounds[u]]


def write_gowalla_folder(data: InteractionData, folder: str | Path, overwrite: bool = False) -> Path:
    """Write ``data`` (0-based ids; ``official_test`` marks the test part) as the LightGCN authors'
    Gowalla files in ``folder``; written into a temporary folder beside it and renamed into place.
    An existing non-empty ``folder`` is refused unless ``overwrite``."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())) and not overwrite:
        raise FileExistsError(f"{folder} already exists; pass overwrite=True to replace it")
    test = data.official_test if data.official_test is not None else np.zeros(data.n_interactions, bool)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=folder.parent))
    try:
        for name, mask in (("train.txt", ~test), ("test.txt", test)):
            lines = _lines(data.users[mask], data.items[mask], data.n_users)
            (work / name).write_text("\n".join(lines) + ("\n" if lines else ""), encoding="ascii")
        for name, n in (("user_list.txt", data.n_users), ("item_list.txt", data.n_items)):
            (work / name).write_text("org_id remap_id\n" + "".join(f"{i} {i}\n" for i in range(n)), encoding="ascii")
        os.chmod(work, 0o755)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.rmdir(old)
            os.rename(folder, old)
            os.rename(work, folder)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            os.rename(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return folder


__all__ = ["power_law", "write_gowalla_folder", "zipf_weights"]
