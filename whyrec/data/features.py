"""Building named feature matrices from categorical columns."""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from .dataset import FeatureMatrix

#: ML-1M's official age codes (README of ml-1m) and the buckets ML-100K ages map to.
AGE_BUCKETS = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}

_YEAR = re.compile(r"\((\d{4})(?:[-–]\d{0,4})?\)\s*$")


def age_bucket(age: int) -> str:
    """Bucket a raw age (ML-100K) into ML-1M's official age ranges."""
    for code in sorted(AGE_BUCKETS, reverse=True):
        if age >= code:
            return AGE_BUCKETS[code]
    return AGE_BUCKETS[1]


def zip_region(zip_code: str) -> str:
    """US zip region = the first digit; anything else (Canadian codes, blanks) is ``other``."""
    z = zip_code.strip()
    return z[0] if z[:1].isdigit() else "other"


def year_from_title(title: str) -> int | None:
    """Release year from a MovieLens title such as ``Toy Story (1995)``."""
    m = _YEAR.search(title)
    return int(m.group(1)) if m else None


def decade(year: int | None) -> str:
    return "unknown" if year is None else f"{year // 10 * 10}s"


def one_hot(
    groups: dict[str, Sequence[str]], order: dict[str, Sequence[str]] | None = None
) -> FeatureMatrix:
    """One-hot encode categorical columns into a :class:`FeatureMatrix`.

    ``groups`` maps a group name (``"occupation"``) to one value per row.
    ``order`` optionally fixes the category order of a group (else sorted).
    Column names read ``group=value``.
    """
    blocks, columns, names = [], [], []
    n = None
    for group, values in groups.items():
        values = list(values)
        n = len(values) if n is None else n
        if len(values) != n:
            raise ValueError(f"group {group!r} has {len(values)} rows, expected {n}")
        cats = list(order[group]) if order and group in order else sorted(set(values))
        extra = sorted(set(values) - set(cats))
        cats += extra
        index = {c: j for j, c in enumerate(cats)}
        block = np.zeros((n, len(cats)), dtype=np.float32)
        block[np.arange(n), [index[v] for v in values]] = 1.0
        blocks.append(block)
        columns += [f"{group}={c}" for c in cats]
        names += [group] * len(cats)
    return FeatureMatrix(np.hstack(blocks), columns, names)


def multi_hot(labels: list[list[str]], vocabulary: Sequence[str], prefix: str = "genre") -> FeatureMatrix:
    """Multi-hot encode label lists; each label is its own group (``"Comedy"``)."""
    index = {g: j for j, g in enumerate(vocabulary)}
    values = np.zeros((len(labels), len(vocabulary)), dtype=np.float32)
    for row, labs in enumerate(labels):
        for lab in labs:
            values[row, index[lab]] = 1.0
    return FeatureMatrix(values, [f"{prefix}={g}" for g in vocabulary], list(vocabulary))


def concat(*matrices: FeatureMatrix) -> FeatureMatrix:
    """Column-wise concatenation of feature matrices with the same rows."""
    return FeatureMatrix(
        np.hstack([m.values for m in matrices]),
        [c for m in matrices for c in m.columns],
        [g for m in matrices for g in m.groups],
    )
