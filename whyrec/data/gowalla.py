"""Gowalla as released by the LightGCN authors (``train.txt`` / ``test.txt``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .dataset import InteractionData
from .errors import DataError
from .parsing import read_id_lists, read_text, require_file


def _count_list(path: Path) -> int | None:
    """Number of ids in an ``org_id remap_id`` list file (header line excluded)."""
    if not path.is_file():
        return None
    lines = [ln for ln in read_text(path, "ascii").splitlines()[1:] if ln.strip()]
    return len(lines)


def load_gowalla(folder: str | Path) -> InteractionData:
    """Gowalla check-ins with the authors' official train/test split.

    Ids in the files are already 0-based indices, so raw id == index.  The
    catalogue size comes from ``item_list.txt`` when present (else the largest
    id seen + 1).  ``official_test`` marks the ``test.txt`` interactions.
    """
    folder = Path(folder)
    train_path = require_file(folder, "train.txt", "gowalla")
    test_path = require_file(folder, "test.txt", "gowalla")
    tr_u, tr_i, tr_lines = read_id_lists(train_path)
    te_u, te_i, _ = read_id_lists(test_path)
    counts = np.bincount(tr_u, minlength=int(tr_lines.max()) + 1)
    empty = np.flatnonzero(counts[tr_lines] == 0)
    if len(empty):
        raise DataError(
            f"user {tr_lines[empty[0]]} has no training interactions (expected 'user item item ...')",
            train_path,
            int(empty[0]) + 1,
        )
    n_users = int(max(tr_u.max(), te_u.max())) + 1
    n_items = _count_list(folder / "item_list.txt") or int(max(tr_i.max(), te_i.max())) + 1
    if max(tr_i.max(), te_i.max()) >= n_items:
        raise DataError(f"item id {max(tr_i.max(), te_i.max())} exceeds the {n_items} items of item_list.txt", folder)
    users = np.concatenate([tr_u, te_u])
    items = np.concatenate([tr_i, te_i])
    official_test = np.concatenate([np.zeros(len(tr_u), bool), np.ones(len(te_u), bool)])
    return InteractionData(
        name="gowalla",
        user_ids=np.arange(n_users, dtype=np.int64),
        item_ids=np.arange(n_items, dtype=np.int64),
        users=users,
        items=items,
        ratings=np.ones(len(users), np.float32),
        explicit=False,
        official_test=official_test,
        source_dir=str(folder),
    )
