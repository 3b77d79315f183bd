"""`whyrec train / evaluate / recommend` end to end on ML-100K, and run-folder safety."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import cli_fails, cli_ok as ok, dataset_dir, interrupt_evaluation
from whyrec.cli import app

runner = CliRunner()
ML100K = str(dataset_dir("ml-100k"))


def fails(args, *needles):
    return cli_fails(args, *needles, single=False)


@pytest.fixture(scope="module")
def lgcn_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lgcn"
    ok(["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--model", "lightgcn", "--out", out,
        "--epochs", "3", "--lr", "0.01", "--dim", "16", "--eval-every", "1", "--no-progress", "--seed", "1"])
    return out


@pytest.fixture(scope="module")
def pop_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "pop"
    ok(["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--model", "pop", "--out", out, "--no-progress"])
    return out


def test_run_folder_contents(lgcn_run):
    names = {p.name for p in lgcn_run.iterdir()}
    for f in ("config.json", "weights.safetensors", "split.npz", "items.json", "users.json", "metrics.json",
              "manifest.json", "curves.csv", "curves.png"):
        assert f in names
    config = json.loads((lgcn_run / "config.json").read_text())
    assert config["model"] == "lightgcn" and config["model_config"] == {"dim": 16, "n_layers": 3}
    assert config["train_config"]["epochs"] == 3 and config["split"]["method"] == "user-holdout"
    curves = (lgcn_run / "curves.csv").read_text().splitlines()
    assert len(curves) == 1 + 3 and "recall@20" in curves[0]


def test_evaluate_reproduces_training_metrics(lgcn_run):
    saved = json.loads((lgcn_run / "metrics.json").read_text())["test"]
    out = json.loads(ok(["evaluate", lgcn_run, "--k", "10", "20", "--json"]).stdout)
    for key in ("recall@20", "ndcg@20", "precision@20", "recall@10"):
        assert out[key] == pytest.approx(saved[key], abs=1e-6)
    both = json.loads(ok(["evaluate", lgcn_run, "--k", "10,20", "--json"]).stdout)
    assert both["recall@10"] == out["recall@10"]


def test_runs_with_the_same_seed_share_the_split(lgcn_run, pop_run):
    lg = json.loads(ok(["evaluate", lgcn_run, "--json"]).stdout)
    pop = json.loads(ok(["evaluate", pop_run, "--json"]).stdout)
    assert pop["recall@20"] > 0.1  # popularity is a real baseline on ML-100K
    assert lg["n_users"] == pop["n_users"]  # same split: same seed and rule


def test_recommend_known_user_excludes_seen(lgcn_run):
    from whyrec.run import load_run

    res = json.loads(ok(["recommend", lgcn_run, "--user", "1", "--k", "7", "--json"]).stdout)
    recs = res["recommendations"]
    assert res["user"] == 1 and len(recs) == 7 and [r["rank"] for r in recs] == list(range(1, 8))
    assert all(r["title"] and isinstance(r["genres"], list) for r in recs)
    scores = [r["score"] for r in recs]
    assert scores == sorted(scores, reverse=True)
    run = load_run(lgcn_run)
    seen = set(run.item_ids[run.matrices["seen"][run.user_index(1)].indices])
    assert not seen & {r["item_id"] for r in recs}
    text = ok(["recommend", lgcn_run, "--user", "1", "--k", "3"]).stdout
    assert "top 3 for user 1" in text and recs[0]["title"] in text


def test_recommend_new_user_from_titles_and_ids(lgcn_run):
    res = json.loads(ok(["recommend", lgcn_run, "--liked", "toy story", "--liked", "50", "--liked",
                         "The Usual Suspects", "--k", "5", "--json"]).stdout)
    assert res["liked"] == ["Toy Story (1995)", "Star Wars (1977)", "Usual Suspects, The (1995)"]
    ids = {r["item_id"] for r in res["recommendations"]}
    assert len(ids) == 5 and not ids & {1, 50, 12}


def test_recommend_bad_input(lgcn_run, pop_run):
    fails(["recommend", lgcn_run, "--liked", "Tpy Stroy"], "no item matches 'Tpy Stroy'", "Toy Story (1995)")
    fails(["recommend", lgcn_run, "--user", "99999"], "unknown user id '99999'")
    fails(["recommend", lgcn_run], "give either --user")
    fails(["recommend", pop_run, "--liked", "Toy Story"], "only into a LightGCN run")


def test_refuses_to_overwrite(lgcn_run):
    fails(["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--model", "pop", "--out", lgcn_run,
           "--no-progress"], "already exists", "--overwrite")
    assert (lgcn_run / "weights.safetensors").is_file()


def test_refuses_to_overwrite_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    fails(["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--model", "pop", "--out", tmp_path,
           "--overwrite", "--no-progress"], "not a whyrec run folder")
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_tampered_and_incomplete_runs(tmp_path, pop_run):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(pop_run, bad)
    raw = bytearray((bad / "items.json").read_bytes())
    raw[10] ^= 1
    (bad / "items.json").write_bytes(bytes(raw))
    fails(["evaluate", bad], "items.json was modified")
    (bad / "split.npz").unlink()
    fails(["evaluate", bad], "incomplete", "split.npz")
    fails(["evaluate", tmp_path / "nothing"], "does not exist")


def test_unknown_model_and_bad_k(tmp_path, pop_run):
    fails(["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--model", "svd", "--out", tmp_path / "x"],
          "unknown model 'svd'", "lightgcn")
    fails(["evaluate", pop_run, "--k", "ten"], "--k expects positive integers")


def test_cosine_schedule_from_the_command_line(tmp_path):
    out = tmp_path / "cos"
    ok(["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--model", "mf", "--out", out, "--epochs", "3",
        "--lr", "0.01", "--lr-schedule", "cosine", "--lr-min", "0.001", "--no-progress", "--threads", "1"])
    import pandas as pd

    lrs = pd.read_csv(out / "curves.csv")["lr"].tolist()
    assert lrs == pytest.approx([0.01, 0.001 + 0.009 * 0.75, 0.001 + 0.009 * 0.25])  # (1 + cos(pi e/3)) / 2
    fails(["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--lr-schedule", "step", "--out", tmp_path / "s"],
          "--lr-schedule must be one of constant, cosine")
    assert not (tmp_path / "s").exists()


def test_user_uniform_positives_from_the_command_line(tmp_path):
    out = tmp_path / "users"
    ok(["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--model", "mf", "--out", out, "--epochs", "1",
        "--positives", "users", "--no-progress", "--threads", "1"])
    assert json.loads((out / "config.json").read_text())["train_config"]["positives"] == "users"
    fails(["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--positives", "edges", "--out", tmp_path / "p"],
          "--positives must be one of interactions, users")
    assert not (tmp_path / "p").exists()


def test_model_options_are_checked(tmp_path):
    """``--opt`` is never silently ignored: LightGCN takes init_std (recorded, and it sets the init),
    a typo or a bad value is a one-line error for every model."""
    out = tmp_path / "small_init"
    ok(["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--model", "lightgcn", "--out", out, "--epochs", "1",
        "--opt", "init_std=0.001", "--no-progress", "--threads", "1", "--lr", "1e-6"])
    assert json.loads((out / "config.json").read_text())["model_config"]["init_std"] == 0.001
    from safetensors.torch import load_file

    w = load_file(out / "weights.safetensors")["user_emb.weight"]
    assert 0.0005 < float(w.std()) < 0.002  # one tiny step away from N(0, 0.001²), not the default 0.1
    base = ["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--epochs", "1"]
    fails(base + ["--model", "lightgcn", "--opt", "init_sdt=0.01", "--out", tmp_path / "a"],
          "lightgcn does not know --opt init_sdt", "init_std")
    fails(base + ["--model", "lightgcn", "--opt", "init_std=-1", "--out", tmp_path / "b"],
          "--opt init_std must be a number > 0")
    fails(base + ["--model", "lightgcn", "--opt", "propagation_dtype=fp8", "--out", tmp_path / "e"],
          "--opt propagation_dtype must be one of float32, bfloat16")
    fails(base + ["--model", "pop", "--opt", "alpha=1", "--out", tmp_path / "c"], "pop does not know --opt alpha")
    fails(base + ["--model", "nmf", "--opt", "beta=1", "--out", tmp_path / "d"], "nmf does not know --opt beta")


def test_bfloat16_propagation_from_the_command_line(tmp_path):
    """``--opt propagation_dtype=bfloat16`` is recorded in the run and reloads into the model's config; the run
    trains (a batch covering ML-100K takes the one-node step) and evaluates."""
    from whyrec.run import load_run

    out = tmp_path / "bf16"
    ok(["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--model", "lightgcn", "--out", out, "--epochs", "2",
        "--batch-size", "40000", "--opt", "propagation_dtype=bfloat16", "--no-progress", "--threads", "2"])
    assert json.loads((out / "config.json").read_text())["model_config"]["propagation_dtype"] == "bfloat16"
    run = load_run(out)
    assert run.model.config.propagation_dtype == "bfloat16"
    assert 0.0 < run.evaluate(k=[20])["recall@20"] < 1.0


def test_models_lists_recipes():
    out = ok(["models"]).stdout
    for name in ("lightgcn", "mf", "pop"):
        assert name in out


def test_split_saved_and_reused(lgcn_run):
    from whyrec.data import load_dataset
    from whyrec.data.splits import user_holdout
    from whyrec.run import load_run

    run = load_run(lgcn_run)
    data = load_dataset("ml-100k", ML100K)
    again = user_holdout(data, seed=1)
    assert np.array_equal(run.split.test, again.test)
    assert (run.matrices["test"] != again.matrices(data)[2]).nnz == 0


def test_interrupted_train_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """Ctrl-C after the 2nd of 4 evaluations keeps ``training_state.pt``; ``--resume`` with the same options
    ends with exactly the weights of an uninterrupted run; mismatches and misuse are one-line errors."""
    from safetensors.torch import load_file

    args = ["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--model", "lightgcn", "--epochs", "4",
            "--eval-every", "1", "--batch-size", "8192", "--lr", "0.01", "--lr-schedule", "cosine", "--patience", "0",
            "--no-progress", "--threads", "1"]
    ok(args + ["--out", tmp_path / "whole"])

    restore = interrupt_evaluation(monkeypatch, 3)
    cut = tmp_path / "cut"
    result = runner.invoke(app, [str(a) for a in args + ["--out", cut]])
    assert result.exit_code != 0 and "run the same command with --resume" in result.stderr
    assert (cut / "training_state.pt").is_file() and not (cut / "config.json").exists()
    restore()

    fails(args + ["--out", cut], "holds an interrupted training run", "--resume")
    fails(["evaluate", cut], "stopped before its end", "--resume")
    fails(args[:-2] + ["--lr", "0.02", "--threads", "1", "--out", cut, "--resume"],
          "cannot resume, the config differs", "lr: saved 0.01, now 0.02")
    fails(args + ["--out", tmp_path / "none", "--resume"], "nothing to resume")
    ok(args + ["--out", cut, "--resume"])
    assert not (cut / "training_state.pt").exists()
    whole, resumed = load_file(tmp_path / "whole" / "weights.safetensors"), load_file(cut / "weights.safetensors")
    assert set(whole) == set(resumed) and all(torch.equal(whole[k], resumed[k]) for k in whole)
    metrics = json.loads((cut / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 4 and metrics["best_epoch"] is not None
