"""Loaders on the real files: official counts, known records, features, KG."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import dataset_dir
from whyrec.data import load_dataset
from whyrec.data.download import SOURCES, md5sum


def test_ml100k_counts_and_user_one(ml100k):
    assert (ml100k.n_users, ml100k.n_items, ml100k.n_interactions) == (943, 1682, 100_000)
    assert ml100k.explicit and ml100k.timestamps is not None
    u = ml100k.user_index(1)  # 1|24|M|technician|85711
    feats = ml100k.user_features
    on = {feats.columns[j] for j in np.flatnonzero(feats.values[u])}
    assert on == {"gender=M", "age=18-24", "occupation=technician", "zip_region=8"}
    assert feats.group_names == ["gender", "age", "occupation", "zip_region"]
    # every user has exactly one value per group
    assert np.all(feats.values.sum(1) == 4)
    # user 196 rated movie 242 with 3 at 881250949 (first line of u.data)
    first = np.flatnonzero((ml100k.users == ml100k.user_index(196)) & (ml100k.items == ml100k.item_index(242)))
    assert len(first) == 1
    assert ml100k.ratings[first[0]] == 3 and ml100k.timestamps[first[0]] == 881250949


def test_ml100k_latin1_titles_and_genres(ml100k):
    i = ml100k.item_index(543)
    assert ml100k.item_titles[i] == "Misérables, Les (1995)"
    assert ml100k.item_genres[i] == ["Drama", "Musical"]
    toy = ml100k.item_index(1)
    assert ml100k.item_titles[toy] == "Toy Story (1995)"
    assert ml100k.item_genres[toy] == ["Animation", "Children's", "Comedy"]
    f = ml100k.item_features
    on = {f.columns[j] for j in np.flatnonzero(f.values[toy])}
    assert on == {"genre=Animation", "genre=Children's", "genre=Comedy", "year=1990s"}
    assert len(f.group_names) == 19 + 1  # 19 genres (incl. unknown) + release decade


def test_ml1m_codes_decoded(ml1m):
    assert ml1m.n_interactions == 487_515  # every rating of users 1..2998
    assert ml1m.n_users == 2998
    feats = ml1m.user_features
    on = {feats.columns[j] for j in np.flatnonzero(feats.values[ml1m.user_index(1)])}
    assert on == {"gender=F", "age=Under 18", "occupation=K-12 student", "zip_region=4"}  # 1::F::1::10::48067
    i = ml1m.item_index(73)
    assert ml1m.item_titles[i] == "Misérables, Les (1995)"
    assert ml1m.item_genres[i] == ["Drama", "Musical"]
    assert "occupation=writer" in feats.columns and "age=56+" in feats.columns


def test_ml_latest_small_quotes_half_stars_and_bad_tail(mlsmall):
    # the shared copy has one extra line (user 999, movie 999999) naming no movie: dropped with a note
    assert (mlsmall.n_users, mlsmall.n_interactions) == (610, 100_836)
    assert len(mlsmall.notes) == 1 and "100838" in mlsmall.notes[0] and "999999" in mlsmall.notes[0]
    i = mlsmall.item_index(11)
    assert mlsmall.item_titles[i] == "American President, The (1995)"
    assert mlsmall.item_genres[i] == ["Comedy", "Drama", "Romance"]
    assert set(np.unique(mlsmall.ratings)) == {0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5}
    assert mlsmall.user_features is None
    assert mlsmall.item_tags is not None and "funny" in mlsmall.item_tags[mlsmall.item_index(60756)]


def test_ml_latest_small_strict_mode_rejects_unknown_movie():
    from whyrec.data.movielens import load_ml_latest_small
    from whyrec.data.errors import DataError

    with pytest.raises(DataError, match=r"ratings.csv:100838: movie 999999 is not in movies.csv"):
        load_ml_latest_small(dataset_dir("ml-latest-small"), strict=True)


def test_gowalla_official_split(gowalla):
    assert (gowalla.n_users, gowalla.n_items) == (29_858, 40_981)
    assert int((~gowalla.official_test).sum()) == 810_128
    assert int(gowalla.official_test.sum()) == 217_242
    # train.txt line 2 starts: 1 127 128 129 ...
    u1 = gowalla.items[(gowalla.users == 1) & ~gowalla.official_test]
    assert list(u1[:3]) == [127, 128, 129]


def test_lastfm_kgcn_preprocessing(lastfm):
    assert (lastfm.n_users, lastfm.n_items) == (1872, 3846)
    # 21,173 listening events survive; seed 002 reports 42,346 = 2 x 21,173 because KGCN's
    # preprocessing adds one sampled negative per positive and counts both.
    assert lastfm.n_interactions == 21_173
    assert 2 * lastfm.n_interactions == 42_346
    assert lastfm.n_triples == 15_518 and lastfm.n_entities == 9_366
    # item index == entity id: artist 2 is entity 0 (first line of item_index2entity_id.txt)
    assert lastfm.item_ids[0] == 2
    # user 2 played artist 52 (entity 20) 11,690 times; artist 51 has no entity and is dropped
    assert lastfm.item_index(52) == 20
    j = np.flatnonzero((lastfm.users == lastfm.user_index(2)) & (lastfm.items == 20))
    assert len(j) == 1 and lastfm.ratings[j[0]] == 11690
    with pytest.raises(KeyError, match="unknown item id 51"):
        lastfm.item_index(51)
    assert lastfm.relation_names and all(isinstance(r, str) for r in lastfm.relation_names)
    assert lastfm.kg_triples.max() < lastfm.n_entities


def test_positive_rule(ml100k):
    assert ml100k.positive_mask(4).sum() == (ml100k.ratings >= 4).sum() == 55_375
    assert ml100k.positive_mask(3).sum() == (ml100k.ratings >= 3).sum()
    assert ml100k.positive_mask(None).all()


def test_interaction_matrix_is_binary(ml100k):
    m = ml100k.interaction_matrix()
    assert m.shape == (943, 1682) and m.nnz == 100_000 and set(np.unique(m.data)) == {1.0}


def test_pinned_checksums_match_the_official_files():
    """The download pins must agree with the md5 of the official copies we have."""
    folders = {"ml-100k": "ml-100k", "ml-1m": "ml-1m-sample", "ml-latest-small": "ml-latest-small",
               "gowalla": "gowalla", "lastfm-kg": "lastfm-kg"}
    for name, folder in folders.items():
        for fname, md5 in SOURCES[name].md5.items():
            assert md5sum(dataset_dir(folder) / fname) == md5, (name, fname)


def test_download_without_network_names_data_dir(tmp_path, monkeypatch):
    from whyrec.data import download
    from whyrec.data.errors import DataError

    monkeypatch.setattr(download, "_reachable", lambda url, timeout: False)
    monkeypatch.setenv("WHYREC_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("ml-100k")


def test_download_verifies_and_extracts(tmp_path, monkeypatch):
    """A served zip in the official layout is extracted and checksum-verified; a tampered one is refused."""
    import io
    import zipfile

    from whyrec.data import download
    from whyrec.data.errors import DataError

    src = dataset_dir("ml-100k")
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w") as zf:
        for f in ("u.data", "u.item", "u.user", "u.genre", "u.occupation"):
            zf.write(src / f, f"ml-100k/{f}")
    blob = payload.getvalue()

    class FakeResponse(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(download, "_reachable", lambda url, timeout: True)
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: FakeResponse(blob))
    folder = download.fetch("ml-100k", cache=tmp_path)
    assert (folder / "u.data").is_file() and (folder / ".verified").is_file()
    assert load_dataset("ml-100k", folder).n_interactions == 100_000

    tampered = io.BytesIO()
    with zipfile.ZipFile(tampered, "w") as zf:
        for f in ("u.item", "u.user", "u.genre", "u.occupation"):
            zf.write(src / f, f"ml-100k/{f}")
        zf.writestr("ml-100k/u.data", (src / "u.data").read_bytes()[:-100])
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: FakeResponse(tampered.getvalue()))
    with pytest.raises(DataError, match="checksum mismatch"):
        download.fetch("ml-100k", cache=tmp_path / "other")
    assert not (tmp_path / "other" / "ml-100k").exists()


def test_id_index_maps_raw_ids_back_to_rows():
    from whyrec.data.ids import IdIndex

    index = IdIndex(np.array([10, 3, 7]))
    assert [index.find(r) for r in (10, "3", 7)] == [0, 1, 2]
    assert index.find(5) is None and index.find("seven") is None and index.find(None) is None
    assert index[7] == 2 and len(index) == 3
    with pytest.raises(KeyError):
        index["5"]
