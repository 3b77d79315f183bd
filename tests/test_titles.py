"""Title suggestions rank by the distinctive words (rapidfuzz), not by "The" and the year; liked
entries that name the same movie are said so."""

from __future__ import annotations

import warnings

import pytest
from typer.testing import CliRunner

from conftest import dataset_dir
from whyrec.cli import app
from whyrec.data.titles import TitleIndex, distinctive, normalize_title

runner = CliRunner()


@pytest.fixture(scope="module")
def index(ml100k):
    return TitleIndex.from_dataset(ml100k)


def message(index, query) -> str:
    with pytest.raises(KeyError) as err:
        index.resolve(query)
    return err.value.args[0]


def test_articles_and_years_do_not_make_titles_close(index):
    msg = message(index, "The Matrix (1999)")  # not in ML-100K (it ends in 1998)
    assert "War, The" not in msg and "Mask, The" not in msg, msg


@pytest.mark.parametrize("query, expect", [
    ("usual suspcts", "Usual Suspects, The (1995)"),
    ("Shawshank Redemtion", "Shawshank Redemption, The (1994)"),
    ("toy stroy (1995)", "Toy Story (1995)"),
])
def test_misspelt_titles_suggest_the_movie_first(index, query, expect):
    msg = message(index, query)
    assert "closest: " + expect in msg, msg


def test_distinctive_words():
    assert distinctive(normalize_title("Usual Suspects, The (1995)")) == "usual suspects"
    assert distinctive(normalize_title("The Matrix (1999)")) == "matrix"


def test_duplicates_are_named(index):
    notes = index.duplicates(["toy story", "Toy Story (1995)", "1", "star wars"])
    assert len(notes) == 1 and "Toy Story (1995)" in notes[0] and "'toy story'" in notes[0]
    assert index.duplicates(["toy story", "star wars"]) == []


@pytest.fixture(scope="module")
def lgcn(tmp_path_factory):
    out = tmp_path_factory.mktemp("titles") / "run"
    r = runner.invoke(app, ["train", "--dataset", "ml-100k", "--data-dir", str(dataset_dir("ml-100k")), "--out",
                            str(out), "--epochs", "1", "--dim", "8", "--eval-every", "1", "--no-progress",
                            "--threads", "1"])
    assert r.exit_code == 0, r.output
    return out


def test_recommend_says_when_liked_entries_are_the_same_movie(lgcn):
    r = runner.invoke(app, ["recommend", str(lgcn), "--liked", "toy story", "--liked", "Toy Story (1995)",
                            "--liked", "star wars", "--k", "3"])
    assert r.exit_code == 0, r.output
    assert "same movie, Toy Story (1995)" in r.stderr and r.stderr.startswith("note: ")


def test_service_says_it_too(lgcn):
    warnings.filterwarnings("ignore", message="Using `httpx` with")
    from fastapi.testclient import TestClient

    from whyrec.serve.app import create_app

    client = TestClient(create_app(lgcn))
    body = client.post("/recommendations", json={"liked": ["toy story", 1, "star wars"], "k": 3}).json()
    assert len(body["notes"]) == 1 and "Toy Story (1995)" in body["notes"][0]
    assert body["liked_ids"] == [1, 50]
    assert client.post("/recommendations", json={"liked": [1, 50], "k": 3}).json()["notes"] == []
