"""MovieLens loaders: ml-100k, ml-1m and ml-latest-small in their official layouts.

Users and items are indexed in increasing raw-id order over the users and
movies that occur in the ratings file (ML-1M lists 3,883 movies of which 3,706
are rated; unrated movies cannot be learned and are left out of the catalogue).
A rating that names a user or movie missing from the user/movie file is dropped
with a note naming the file and line (``InteractionData.notes``; the CLI prints
them), or is an error with ``strict=True``.  The shared copy of
ml-latest-small ends with one such line (user 999, movie 999999), which is why
it loads as the official 100,836 ratings and 610 users.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import InteractionData
from .errors import DataError
from .features import AGE_BUCKETS, age_bucket, concat, decade, multi_hot, one_hot, year_from_title, zip_region
from .parsing import FLOAT, INT, STR, read_csv_quoted, read_delimited, read_text, require_file

#: ML-1M occupation codes, from the dataset's official README.
ML1M_OCCUPATIONS = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
]
ML1M_GENRES = [
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
]
AGE_ORDER = list(AGE_BUCKETS.values())
ZIP_ORDER = [str(d) for d in range(10)] + ["other"]


def _index(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique raw ids and the index of each raw value."""
    ids, inverse = np.unique(raw, return_inverse=True)
    return ids.astype(np.int64), inverse.astype(np.int64)


def _rows_in(ids: np.ndarray, table_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row of each id in ``table_ids`` and whether it was found there."""
    order = np.argsort(table_ids)
    pos = np.clip(np.searchsorted(table_ids, ids, sorter=order), 0, len(table_ids) - 1)
    rows = order[pos]
    return rows, table_ids[rows] == ids


def _drop_unknown(
    ratings: pd.DataFrame, col: str, table_ids: np.ndarray, ratings_path: Path, table_name: str,
    line_offset: int, strict: bool, notes: list[str],
) -> pd.DataFrame:
    """Drop ratings whose user/movie is not in its table, with a note naming each line.

    ``strict`` turns the first such rating into a :class:`DataError`.
    """
    _, found = _rows_in(ratings[col].to_numpy(), table_ids)
    if found.all():
        return ratings
    bad = np.flatnonzero(~found)
    what = "movie" if col == "item" else "user"
    first = f"{what} {ratings[col].iloc[bad[0]]} is not in {table_name}"
    if strict:
        raise DataError(first, ratings_path, int(bad[0]) + line_offset)
    lines = ", ".join(str(int(b) + line_offset) for b in bad[:5]) + (" ..." if len(bad) > 5 else "")
    notes.append(
        f"{ratings_path}: dropped {len(bad)} rating(s) naming a {what} absent from {table_name} "
        f"(line {lines}; first: {first})"
    )
    return ratings.iloc[np.flatnonzero(found)].reset_index(drop=True)


def _check_duplicates(ids: np.ndarray, path: Path, what: str) -> None:
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{what} {uniq[np.argmax(counts > 1)]} is listed twice", path)


def _check_ratings(frame: pd.DataFrame, path: Path, low: float, high: float, line_offset: int = 1) -> None:
    r = frame["rating"].to_numpy()
    bad = (r < low) | (r > high)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"rating {r[row]} outside {low}..{high}", path, row + line_offset)


def _user_features_ml(gender: list[str], age: list[str], occupation: list[str], zips: list[str], occupations: list[str]):
    return one_hot(
        {
            "gender": gender,
            "age": age,
            "occupation": occupation,
            "zip_region": [zip_region(z) for z in zips],
        },
        order={"gender": ["F", "M"], "age": AGE_ORDER, "occupation": occupations, "zip_region": ZIP_ORDER},
    )


def _item_features_ml(genres: list[list[str]], years: list[int | None], vocabulary: list[str]):
    decades = [decade(y) for y in years]
    order = sorted(d for d in set(decades) if d != "unknown") + (["unknown"] if "unknown" in decades else [])
    return concat(multi_hot(genres, vocabulary), one_hot({"year": decades}, order={"year": order}))


def _finish(name, folder, ratings, users_table, items_table, titles, genres, years, user_feat_fn, vocabulary,
            notes):
    """Index users/items from the ratings and attach features in index order."""
    user_ids, u = _index(ratings["user"].to_numpy())
    item_ids, i = _index(ratings["item"].to_numpy())
    item_rows, _ = _rows_in(item_ids, items_table)
    user_features = None
    if user_feat_fn is not None:
        user_rows, _ = _rows_in(user_ids, users_table)
        user_features = user_feat_fn(user_rows)
    item_genres = [genres[r] for r in item_rows]
    return InteractionData(
        name=name,
        user_ids=user_ids,
        item_ids=item_ids,
        users=u,
        items=i,
        ratings=ratings["rating"].to_numpy(np.float32),
        timestamps=ratings["timestamp"].to_numpy(np.int64),
        explicit=True,
        item_titles=[titles[r] for r in item_rows],
        item_genres=item_genres,
        user_features=user_features,
        item_features=_item_features_ml(item_genres, [years[r] for r in item_rows], vocabulary),
        source_dir=str(folder),
        notes=notes,
    )


def load_ml100k(folder: str | Path, strict: bool = False) -> InteractionData:
    """MovieLens 100K: ``u.data`` (tab), ``u.user`` and ``u.item`` (``|``, latin-1)."""
    folder = Path(folder)
    data_path = require_file(folder, "u.data", "ml-100k")
    user_path = require_file(folder, "u.user", "ml-100k")
    item_path = require_file(folder, "u.item", "ml-100k")
    ratings = read_delimited(data_path, "\t", ["user", "item", "rating", "timestamp"], [INT, INT, FLOAT, INT])
    _check_ratings(ratings, data_path, 1, 5)
    users = read_delimited(
        user_path, "|", ["user", "age", "gender", "occupation", "zip"], [INT, INT, STR, STR, STR], "latin-1"
    )
    _check_duplicates(users["user"].to_numpy(), user_path, "user id")
    genre_names = _read_genre_names(folder)
    item_cols = ["item", "title", "release", "video_release", "url"] + [f"g{j}" for j in range(len(genre_names))]
    items = read_delimited(item_path, "|", item_cols, [INT, STR, STR, STR, STR] + [INT] * len(genre_names), "latin-1")
    _check_duplicates(items["item"].to_numpy(), item_path, "movie id")
    flags = items[[f"g{j}" for j in range(len(genre_names))]].to_numpy()
    genres = [[genre_names[j] for j in np.flatnonzero(row)] for row in flags]
    years = [None if not d else int(d[-4:]) if d[-4:].isdigit() else None for d in items["release"]]
    occupations = _read_lines(folder / "u.occupation") if (folder / "u.occupation").is_file() else None

    def user_feats(rows):
        t = users.iloc[rows]
        return _user_features_ml(
            list(t["gender"]), [age_bucket(a) for a in t["age"]], list(t["occupation"]), list(t["zip"]),
            occupations or sorted(set(users["occupation"])),
        )

    notes: list[str] = []
    ratings = _drop_unknown(ratings, "user", users["user"].to_numpy(), data_path, "u.user", 1, strict, notes)
    ratings = _drop_unknown(ratings, "item", items["item"].to_numpy(), data_path, "u.item", 1, strict, notes)
    return _finish(
        "ml-100k", folder, ratings, users["user"].to_numpy(), items["item"].to_numpy(),
        list(items["title"]), genres, years, user_feats, genre_names, notes,
    )


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in read_text(path, "latin-1").splitlines() if line.strip()]


def _read_genre_names(folder: Path) -> list[str]:
    """ML-100K genre names in flag order, from ``u.genre`` (``name|index``)."""
    path = folder / "u.genre"
    if not path.is_file():
        return ["unknown", "Action", "Adventure", "Animation", "Children's"] + ML1M_GENRES[4:]
    frame = read_delimited(path, "|", ["genre", "index"], [STR, INT], "latin-1")
    return list(frame.sort_values("index")["genre"])


def load_ml1m(folder: str | Path, strict: bool = False) -> InteractionData:
    """MovieLens 1M: ``ratings.dat``, ``users.dat``, ``movies.dat`` (``::``, latin-1).

    Age and occupation codes are decoded to the names of the official README.
    """
    folder = Path(folder)
    ratings_path = require_file(folder, "ratings.dat", "ml-1m")
    users_path = require_file(folder, "users.dat", "ml-1m")
    movies_path = require_file(folder, "movies.dat", "ml-1m")
    ratings = read_delimited(ratings_path, "::", ["user", "item", "rating", "timestamp"], [INT, INT, FLOAT, INT])
    _check_ratings(ratings, ratings_path, 1, 5)
    users = read_delimited(
        users_path, "::", ["user", "gender", "age", "occupation", "zip"], [INT, STR, INT, INT, STR], "latin-1"
    )
    _check_duplicates(users["user"].to_numpy(), users_path, "user id")
    for col, valid in (("age", AGE_BUCKETS), ("occupation", range(len(ML1M_OCCUPATIONS)))):
        bad = ~users[col].isin(list(valid))
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise DataError(f"unknown {col} code {users[col].iloc[row]} (see the ml-1m README)", users_path, row + 1)
    movies = read_delimited(movies_path, "::", ["item", "title", "genres"], [INT, STR, STR], "latin-1")
    _check_duplicates(movies["item"].to_numpy(), movies_path, "movie id")
    genres = [g.split("|") if g else [] for g in movies["genres"]]
    for row, gs in enumerate(genres):
        unknown = [g for g in gs if g not in ML1M_GENRES]
        if unknown:
            raise DataError(f"unknown genre {unknown[0]!r} (expected one of {', '.join(ML1M_GENRES)})", movies_path, row + 1)

    def user_feats(rows):
        t = users.iloc[rows]
        return _user_features_ml(
            list(t["gender"]), [AGE_BUCKETS[a] for a in t["age"]],
            [ML1M_OCCUPATIONS[o] for o in t["occupation"]], list(t["zip"]), ML1M_OCCUPATIONS,
        )

    notes: list[str] = []
    ratings = _drop_unknown(ratings, "user", users["user"].to_numpy(), ratings_path, "users.dat", 1, strict, notes)
    ratings = _drop_unknown(ratings, "item", movies["item"].to_numpy(), ratings_path, "movies.dat", 1, strict, notes)
    return _finish(
        "ml-1m", folder, ratings, users["user"].to_numpy(), movies["item"].to_numpy(),
        list(movies["title"]), genres, [year_from_title(t) for t in movies["title"]], user_feats, ML1M_GENRES,
        notes,
    )


def load_ml_latest_small(folder: str | Path, strict: bool = False) -> InteractionData:
    """MovieLens latest-small: ``ratings.csv`` (half stars), ``movies.csv`` (quoted titles, ``|`` genres).

    There are no user demographics; ``tags.csv`` (if present) becomes ``item_tags``.
    """
    folder = Path(folder)
    ratings_path = require_file(folder, "ratings.csv", "ml-latest-small")
    movies_path = require_file(folder, "movies.csv", "ml-latest-small")
    ratings = read_csv_quoted(ratings_path, ["userId", "movieId", "rating", "timestamp"], [INT, INT, FLOAT, INT])
    ratings = ratings.rename(columns={"userId": "user", "movieId": "item"})
    _check_ratings(ratings, ratings_path, 0.5, 5, line_offset=2)
    movies = read_csv_quoted(movies_path, ["movieId", "title", "genres"], [INT, STR, STR])
    _check_duplicates(movies["movieId"].to_numpy(), movies_path, "movie id")
    genres = [[] if g == "(no genres listed)" else g.split("|") for g in movies["genres"]]
    vocabulary = sorted({g for gs in genres for g in gs})
    notes: list[str] = []
    ratings = _drop_unknown(ratings, "item", movies["movieId"].to_numpy(), ratings_path, "movies.csv", 2, strict, notes)
    data = _finish(
        "ml-latest-small", folder, ratings, None, movies["movieId"].to_numpy(),
        list(movies["title"]), genres, [year_from_title(t) for t in movies["title"]], None, vocabulary, notes,
    )
    tags_path = folder / "tags.csv"
    if tags_path.is_file():
        tags = read_csv_quoted(tags_path, ["userId", "movieId", "tag", "timestamp"], [INT, INT, STR, INT])
        per_item: dict[int, list[str]] = {}
        for movie, tag in zip(tags["movieId"].to_numpy(), tags["tag"]):
            per_item.setdefault(int(movie), []).append(tag.strip().lower())
        data.item_tags = [sorted(set(per_item.get(int(m), []))) for m in data.item_ids]
    return data
