"""Strict readers for delimited text files.

Every reader here either returns exactly what the file says or raises a
:class:`~whyrec.data.errors.DataError` naming the file, the line and what was
expected.  The fast path is pandas' C parser; when it rejects a file (or a
value fails its type), a line-by-line pass finds the first offending line so
the message can point at it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .errors import DataError

INT = "int"
FLOAT = "float"
STR = "str"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class OutOfRange(ValueError):
    """An integer field that does not fit in 64 bits."""


def require_file(folder: Path, name: str, dataset: str) -> Path:
    """Path of ``folder/name``; a :class:`DataError` if the folder or file is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder does not exist (expected the {dataset} files here)", folder)
    path = folder / name
    if not path.is_file():
        present = sorted(p.name for p in folder.iterdir())[:8]
        listing = ", ".join(present) if present else "nothing"
        raise DataError(
            f"missing file {name}: this folder does not look like {dataset} "
            f"(found: {listing})",
            folder,
        )
    return path


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """Whole file as text; empty files and undecodable bytes are errors."""
    raw = Path(path).read_bytes()
    if not raw.strip():
        raise DataError("file is empty", path)
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"cannot decode as {encoding}: {err.reason}", path, line) from None


def _convert(value: str, kind: str) -> object:
    if kind == INT:
        v = int(value)
        if not INT64_MIN <= v <= INT64_MAX:
            raise OutOfRange(value)
        return v
    if kind == FLOAT:
        v = float(value)
        if not np.isfinite(v):
            raise ValueError(value)
        return v
    return value


def _find_bad_line(
    text: str, path: Path, sep: str, names: Sequence[str], kinds: Sequence[str], first_line: int
) -> None:
    """Raise a DataError at the first line that does not parse; return if all do."""
    shown = "tab" if sep == "\t" else repr(sep)
    for offset, line in enumerate(text.splitlines()):
        lineno = first_line + offset
        if not line.strip():
            raise DataError("blank line (expected a record)", path, lineno)
        fields = line.split(sep)
        if len(fields) != len(names):
            raise DataError(
                f"expected {len(names)} fields ({', '.join(names)}) separated by {shown}, "
                f"found {len(fields)}",
                path,
                lineno,
            )
        for name, kind, value in zip(names, kinds, fields):
            try:
                _convert(value.strip(), kind)
            except OutOfRange:
                raise DataError(f"field '{name}' is out of range (ids and counts must fit in 64 bits): "
                                f"{_short(value)}", path, lineno) from None
            except ValueError:
                what = "an integer" if kind == INT else "a number"
                raise DataError(f"field '{name}' is not {what}: {_short(value)}", path, lineno) from None


def _short(value: str, limit: int = 40) -> str:
    """``repr`` of a field, cut in the middle when it is very long."""
    value = str(value)
    return repr(value) if len(value) <= limit else repr(value[:20] + "…" + value[-10:]) + f" ({len(value)} characters)"


def read_delimited(
    path: Path,
    sep: str,
    names: Sequence[str],
    kinds: Sequence[str],
    encoding: str = "utf-8",
    header: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read a separator-delimited file with a fixed number of typed fields.

    ``header`` — if given, the first line must equal these names.
    Values of kind ``str`` are kept verbatim (the separator may not occur in
    them; use :func:`read_csv_quoted` for quoted CSV).
    """
    text = read_text(path, encoding)
    first_line = 1
    if header is not None:
        head, _, text = text.partition("\n")
        got = [h.strip() for h in head.rstrip("\r").split(sep)]
        if got != list(header):
            raise DataError(
                f"header is {got}, expected {list(header)} separated by "
                f"{'tab' if sep == chr(9) else repr(sep)}",
                path,
                1,
            )
        first_line = 2
        if not text.strip():
            raise DataError("file has a header but no records", path)
    text = text.rstrip("\r\n")
    body = text.replace(sep, "\x1f") if len(sep) > 1 else text
    dtypes = {n: ("int64" if k == INT else "float64" if k == FLOAT else "string") for n, k in zip(names, kinds)}
    try:
        frame = pd.read_csv(
            io.StringIO(body),
            sep="\x1f" if len(sep) > 1 else sep,
            names=list(names),
            dtype=dtypes,
            header=None,
            quoting=3,  # csv.QUOTE_NONE: quotes are data here
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            engine="c",
        )
        ok = len(frame) == text.count("\n") + 1
        for n, k in zip(names, kinds):
            if k == FLOAT and not np.isfinite(frame[n].to_numpy()).all():
                ok = False
    except (ValueError, pd.errors.ParserError, OverflowError):
        ok = False
    if not ok:
        _find_bad_line(text, path, sep, names, kinds, first_line)
        raise DataError("could not parse file", path)  # pragma: no cover - defensive
    return frame


def read_csv_quoted(path: Path, columns: Sequence[str], kinds: Sequence[str]) -> pd.DataFrame:
    """Read an RFC-4180 CSV file with a header (quoted fields may hold commas)."""
    read_text(path)  # empty / undecodable checks
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (ValueError, pd.errors.ParserError) as err:
        msg = str(err).strip().splitlines()[-1]
        line = None
        if "line" in msg:
            digits = [int(t.strip(",.")) for t in msg.split() if t.strip(",.").isdigit()]
            line = digits[-1] if digits else None
        raise DataError(f"malformed CSV ({msg})", path, line) from None
    if list(frame.columns) != list(columns):
        raise DataError(f"header is {list(frame.columns)}, expected {list(columns)}", path, 1)
    if len(frame) == 0:
        raise DataError("file has a header but no records", path)
    for col, kind in zip(columns, kinds):
        if kind == STR:
            continue
        values = frame[col]
        converted = pd.to_numeric(values, errors="coerce")
        if kind == INT and converted.dtype != np.int64:  # a value pandas could not hold as int64
            frame[col] = _exact_ints(values, col, path)
            continue
        bad = converted.isna() | ~np.isfinite(converted.to_numpy(dtype=float, na_value=np.nan))
        if kind == INT:
            bad |= converted.notna() & (converted != converted.round())
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            what = "an integer" if kind == INT else "a number"
            raise DataError(f"field '{col}' is not {what}: {values.iloc[row]!r}", path, row + 2)
        frame[col] = converted.astype("int64" if kind == INT else "float64")
    return frame


def _exact_ints(values: pd.Series, col: str, path: Path) -> np.ndarray:
    """An integer column checked value by value (the slow path: some value is not a plain int64);
    the first bad row (header = line 1) is named."""
    out = np.empty(len(values), dtype=np.int64)
    for row, raw in enumerate(values.tolist()):
        try:
            out[row] = _convert(raw.strip(), INT)
        except OutOfRange:
            raise DataError(f"field '{col}' is out of range (ids and counts must fit in 64 bits): {_short(raw)}",
                            path, row + 2) from None
        except ValueError:
            raise DataError(f"field '{col}' is not an integer: {_short(raw)}", path, row + 2) from None
    return out


#: largest id a file of 0-based indices may hold (indices are stored as int32 in a run folder)
MAX_INDEX = 2**31 - 1


def read_id_lists(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a LightGCN-style ``user item item ...`` file.

    Returns ``(users, items, line_users)``: one ``(user, item)`` pair per
    interaction, and the user id of every line (a line holding only a user id
    is a user without items).
    """
    text = read_text(path, "ascii")
    lines = text.splitlines()
    lengths = np.fromiter((len(line.split()) for line in lines), dtype=np.int64, count=len(lines))
    # 0-based indices: an id far beyond the number of ids in the file would make millions of empty
    # users or items (and the arrays sized by it); beyond int32 it would not fit a run folder at all
    bound = min(MAX_INDEX, 16 * int(lengths.sum()) + 1_000_000)
    try:
        ids = np.array(text.split(), dtype=np.int64)
        ok = not (lengths == 0).any() and not (ids < 0).any() and not (ids > bound).any()
    except (ValueError, OverflowError):
        ok = False
    if not ok:  # find and name the first bad line
        for lineno, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields:
                raise DataError("blank line (expected 'user item item ...')", path, lineno)
            bad = [f for f in fields if not f.isdigit()]
            if bad:
                what = "negative id (expected 0-based ids)" if bad[0].lstrip("-").isdigit() else (
                    f"not an integer id: {_short(bad[0])} (expected 'user item item ...')")
                raise DataError(what, path, lineno)
            huge = [f for f in fields if int(f) > bound]
            if huge:
                raise DataError(f"id {_short(huge[0])} is out of range: the ids of this file are 0-based indices, "
                                f"at most {bound:,} for a file of {int(lengths.sum()):,} ids", path, lineno)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    line_users = ids[starts]
    is_item = np.ones(len(ids), dtype=bool)
    is_item[starts] = False
    users = np.repeat(line_users, lengths - 1)
    return users, ids[is_item], line_users
