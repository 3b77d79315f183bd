"""`whyrec export`: the vectors and id maps reproduce the run's scores; refusals; no overwrite."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import cli_fails as fails, cli_ok as ok, dataset_dir

ML100K = str(dataset_dir("ml-100k"))




def train(out, model, *extra):
    ok(["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--model", model, "--out", out, "--epochs", "2",
        "--dim", "16", "--eval-every", "1", "--no-progress", "--seed", "3", *extra])
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("export_runs")
    return {"lightgcn": train(base / "lgcn", "lightgcn", "--lr", "0.01"), "mf": train(base / "mf", "mf")}


@pytest.mark.parametrize("model", ["lightgcn", "mf"])
def test_exported_vectors_reproduce_the_runs_scores(runs, model, tmp_path):
    from whyrec.export import load_export
    from whyrec.run import load_run

    out = tmp_path / "exp"
    result = ok(["export", runs[model], "--out", out, "--json"])
    meta = json.loads(result.stdout)
    run = load_run(runs[model])
    assert meta["model"] == model and meta["score"] == "dot" and meta["dim"] == 16
    assert (meta["n_users"], meta["n_items"]) == (run.n_users, run.n_items) == (943, 1682)
    manifest = json.loads((runs[model] / "manifest.json").read_text())
    assert meta["run_weights_sha256"] == manifest["weights.safetensors"]
    assert json.loads((out / "export.json").read_text()) == meta

    exp = load_export(out)
    users, items = exp["users"], exp["items"]
    assert users.dtype == items.dtype == np.float32 and users.shape == (943, 16) and items.shape == (1682, 16)
    np.testing.assert_array_equal(exp["user_ids"], run.user_ids)
    np.testing.assert_array_equal(exp["item_ids"], run.item_ids)
    with torch.no_grad():
        expected = run.model.score_users(torch.arange(run.n_users)).numpy()
    np.testing.assert_allclose(users @ items.T, expected, rtol=1e-5, atol=1e-5)
    # a raw user id leads to the same scores through the id maps
    raw_user = int(run.user_ids[100])
    row = int(np.flatnonzero(exp["user_ids"] == raw_user)[0])
    np.testing.assert_allclose(users[row] @ items.T, expected[run.user_index(raw_user)], rtol=1e-5, atol=1e-5)

    # the Parquet files hold the same vectors and ids, and the titles
    ut, it = pq.read_table(out / "users.parquet"), pq.read_table(out / "items.parquet")
    assert ut.column_names == ["user_id", "row", "vector"]
    assert it.column_names == ["item_id", "row", "title", "genres", "vector"]
    np.testing.assert_array_equal(ut["user_id"].to_numpy(), run.user_ids)
    np.testing.assert_array_equal(np.stack(ut["vector"].to_numpy(zero_copy_only=False)), users)
    np.testing.assert_array_equal(np.stack(it["vector"].to_numpy(zero_copy_only=False)), items)
    np.testing.assert_array_equal(it["item_id"].to_numpy(), run.item_ids)
    assert it["title"].to_pylist() == run.item_titles and it["title"][0].as_py() == "Toy Story (1995)"
    assert it["genres"].to_pylist() == run.item_genres
    # the files' checksums are in export.json
    from whyrec.data.download import file_hash

    assert all(file_hash(out / name, "sha256") == sha for name, sha in meta["files"].items())


def test_no_overwrite_without_asking(runs, tmp_path):
    out = tmp_path / "exp"
    ok(["export", runs["mf"], "--out", out])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fails(["export", runs["lightgcn"], "--out", out], "already exists", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    ok(["export", runs["lightgcn"], "--out", out, "--overwrite"])
    assert json.loads((out / "export.json").read_text())["model"] == "lightgcn"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left

    # a folder that is not an export is never replaced, --overwrite or not
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    fails(["export", runs["mf"], "--out", other, "--overwrite"], "not a whyrec export folder")
    assert (other / "notes.txt").read_text() == "keep me" and len(list(other.iterdir())) == 1
    a_file = tmp_path / "file.npy"
    a_file.write_bytes(b"x")
    fails(["export", runs["mf"], "--out", a_file, "--overwrite"], "not a folder")
    assert a_file.read_bytes() == b"x"
    # an empty folder is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    ok(["export", runs["mf"], "--out", empty])
    assert (empty / "users.npy").is_file()


def test_models_without_a_dot_product_space_are_refused(tmp_path):
    pop = tmp_path / "pop"
    ok(["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--model", "pop", "--out", pop, "--no-progress"])
    fails(["export", pop, "--out", tmp_path / "e1"], "pop run has no dot-product embedding space")
    gf = tmp_path / "gf"
    ok(["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--model", "gf-cf", "--opt", "rank=16",
        "--opt", "alpha=0.3", "--out", gf, "--no-progress"])
    line = fails(["export", gf, "--out", tmp_path / "e2"], "gf-cf run has no dot-product embedding space",
                 "rank-k term")
    assert "concept_embeddings" in line
    assert not (tmp_path / "e1").exists() and not (tmp_path / "e2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_run_folder_is_one_line(tmp_path):
    fails(["export", tmp_path / "nope", "--out", tmp_path / "e"], "does not exist")
    assert not (tmp_path / "e").exists()
