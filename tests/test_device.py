"""``--device`` on every command and in the library: ``cpu`` and ``auto`` give the default's results
on this machine, ``cuda`` where there is none (or for a CPU-only model) is one ``error: …`` line, the
resolver's rules under a pretended CUDA, and — where CUDA exists — every main command on CUDA against
the CPU (skipped without one, like tests/test_graph.py's propagation check)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import whyrec
from conftest import cli_fails, cli_ok, dataset_dir
from whyrec.device import resolve_device
from whyrec.models import LightGCN, LightGCNConfig
from whyrec.models.base import CUDA, Recommender, can
from whyrec.models.bspm import BSPM
from whyrec.models.cheby_cf import ChebyCF
from whyrec.models.gf_cf import GFCF
from whyrec.models.nmf import NMFRecommender

NO_CUDA = not torch.cuda.is_available()


class CPUOnly(Recommender):
    """A model that declares no :data:`CUDA` (every whyrec model now computes on CUDA; the rule stays)."""


def commands(run, tmp_path):
    """Every command that reads a run, with what it prints (JSON where it has it)."""
    return {
        "evaluate": ["evaluate", run, "--k", "10,20", "--json"],
        "recommend": ["recommend", run, "--user", "1", "--k", "5", "--json"],
        "recommend-new": ["recommend", run, "--liked", "50", "--liked", "181", "--k", "5", "--json"],
        "explain": ["explain", run, "--user", "1", "--method", "history", "--top", "5", "--json"],
        "faithfulness": ["faithfulness", run, "--method", "history", "--remove", "1", "--runs", "1", "--users", "3",
                         "--json", "--no-progress"],
        "export": ["export", run, "--out", tmp_path / "export", "--json", "--overwrite"],
    }


def numbers(text: str):
    """The numbers of a JSON answer, for comparison across devices (paths and timings left out)."""
    def walk(x):
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items() if k not in ("run", "seconds", "out", "path", "files")}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(json.loads(text))


def close(a, b, tol=1e-4):
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            close(a[k], b[k], tol)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            close(x, y, tol)
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=tol, abs=tol)
    else:
        assert a == b


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_device_flag_on_every_command_gives_the_default_result(tiny_run, tmp_path, device):
    for name, args in commands(tiny_run, tmp_path).items():
        default = cli_ok(args).stdout
        flagged = cli_ok([*args, "--device", device]).stdout
        if NO_CUDA or device == "cpu":
            assert numbers(flagged) == numbers(default), name  # the very same computation
        else:
            close(numbers(flagged), numbers(default))
    out = tmp_path / "concepts"
    cli_ok(["concepts", tiny_run, "--out", out, "--random-runs", "0", "--genres", "Comedy", "--device", device])
    assert (out / "summary.json").is_file()


def test_the_library_takes_a_device(tiny_run):
    run = whyrec.load(tiny_run, device="cpu")
    assert run.device.type == "cpu" and run.to("cpu") is run
    before = run.evaluate(k=20)
    assert run.to("auto").evaluate(k=20) == pytest.approx(before)
    with pytest.raises(ValueError, match="unknown device"):
        run.to("gpu0")


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_cuda_where_there_is_none_is_one_error_line(tiny_run, tmp_path):
    for name, args in commands(tiny_run, tmp_path).items():
        cli_fails([*args, "--device", "cuda"], "CUDA is not available", "--device cpu")
    cli_fails(["concepts", tiny_run, "--out", tmp_path / "c", "--device", "cuda"], "CUDA is not available")
    cli_fails(["serve", tiny_run, "--port", "0", "--device", "cuda:0"], "CUDA is not available")
    cli_fails(["train", "--dataset", "ml-100k", "--data-dir", dataset_dir("ml-100k"), "--out", tmp_path / "t",
               "--epochs", "1", "--device", "cuda"], "CUDA is not available")
    assert not (tmp_path / "t").exists() and not (tmp_path / "export").exists()
    cli_fails(["evaluate", tiny_run, "--device", "tpu"], "unknown device 'tpu'")
    with pytest.raises(ValueError, match="CUDA is not available"):
        whyrec.load(tiny_run, device="cuda")


def test_resolver_rules_with_a_pretended_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    train = sp.random(20, 15, density=0.3, format="csr", random_state=0, dtype=np.float32)
    train.data[:] = 1
    graph_model = LightGCN(20, 15, LightGCNConfig(dim=4))
    filters = [GFCF(train), BSPM(train), ChebyCF(train), NMFRecommender(20, 15)]  # torch, CUDA included
    cpu_model = CPUOnly(20, 15)
    assert can(graph_model, CUDA) and all(can(m, CUDA) for m in filters) and not can(cpu_model, CUDA)
    for model in (graph_model, *filters):
        assert resolve_device("auto", model) == torch.device("cuda")
        assert resolve_device("cuda:0", model) == torch.device("cuda", 0)
    assert resolve_device("auto", cpu_model) == torch.device("cpu")  # auto: where the model computes
    with pytest.raises(ValueError, match="CPUOnly computes on the CPU"):
        resolve_device("cuda", cpu_model)
    with pytest.raises(ValueError, match="has 1 CUDA device"):
        resolve_device("cuda:3")
    with pytest.raises(ValueError, match="unsupported device 'meta'"):
        resolve_device("meta")


# ------------------------------------------------------------------------------------------------ #
# on a machine with CUDA
# ------------------------------------------------------------------------------------------------ #
@pytest.fixture(scope="module")
def mf_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mf") / "run"
    cli_ok(["train", "--dataset", "ml-100k", "--data-dir", dataset_dir("ml-100k"), "--model", "mf", "--out", out,
            "--epochs", "2", "--dim", "8", "--no-progress", "--device", "cpu"])
    return out


def command_agrees_on_cuda(args) -> None:
    """The numbers a command prints with ``--device cuda`` are the CPU's, to tolerance."""
    close(numbers(cli_ok([*args, "--device", "cuda"]).stdout), numbers(cli_ok([*args, "--device", "cpu"]).stdout))


def loaded_on_both(run):
    """``(cpu_run, gpu_run)`` of one run folder, checked to evaluate alike."""
    cpu_run, gpu_run = whyrec.load(run), whyrec.load(run, device="cuda")
    assert gpu_run.device.type == "cuda"
    close(gpu_run.evaluate(k=[10, 20]), cpu_run.evaluate(k=[10, 20]))
    return cpu_run, gpu_run


@pytest.mark.skipif(NO_CUDA, reason="no CUDA device")
def test_every_command_on_cuda_matches_the_cpu(tiny_run, mf_run, tmp_path):
    for run in (tiny_run, mf_run):
        for name, args in commands(run, tmp_path).items():
            if name == "explain" and run == mf_run:
                args = ["explain", run, "--user", "1", "--method", "concepts", "--json"]
            if name in ("faithfulness", "recommend-new") and run == mf_run:
                continue  # MF's scores do not depend on a history (and it folds in no new user)
            command_agrees_on_cuda(args)
    cpu_run, gpu_run = loaded_on_both(tiny_run)
    a = [r.item for r in cpu_run.recommend(user="1", k=10)]
    b = [r.item for r in gpu_run.recommend(user="1", k=10)]
    assert a[:5] == b[:5]
    # training on CUDA: the same metrics as on the CPU to tolerance
    common = ["train", "--dataset", "ml-100k", "--data-dir", dataset_dir("ml-100k"), "--epochs", "2", "--dim", "8",
              "--seed", "0", "--no-progress"]
    cli_ok([*common, "--out", tmp_path / "c", "--device", "cpu"])
    cli_ok([*common, "--out", tmp_path / "g", "--device", "cuda"])
    mc = json.loads((tmp_path / "c" / "metrics.json").read_text())["test"]
    mg = json.loads((tmp_path / "g" / "metrics.json").read_text())["test"]
    assert mg["recall@20"] == pytest.approx(mc["recall@20"], abs=5e-3)


def test_the_service_takes_a_device(tiny_run, monkeypatch):
    from fastapi.testclient import TestClient

    from whyrec.serve.app import DEVICE_ENV, RUN_ENV, app_from_env, create_app

    want = cli_ok(["recommend", tiny_run, "--user", "1", "--k", "5", "--json"]).stdout
    for app in (create_app(tiny_run, device="cpu"), create_app(whyrec.load(tiny_run), device="auto")):
        body = TestClient(app).get("/users/1/recommendations?k=5").json()
        assert [r["item_id"] for r in body["recommendations"]] == \
            [r["item_id"] for r in json.loads(want)["recommendations"]]
    monkeypatch.setenv(RUN_ENV, str(tiny_run))
    monkeypatch.setenv(DEVICE_ENV, "tpu")  # what serve --workers hands each worker
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        app_from_env()


# ------------------------------------------------------------------------------------------------ #
# the closed-form models (graph filters, NMF): torch on the model's device
# ------------------------------------------------------------------------------------------------ #
CLOSED_FORM = ("gf-cf", "bspm", "cheby-cf", "nmf")


@pytest.fixture(scope="module")
def closed_form_runs(tmp_path_factory):
    """``name -> run folder`` on ML-100K, trained on the CPU on first use (filters: a small basis, the
    paper's settings without selection, so that a CPU and a CUDA fit choose alike)."""
    root, made = tmp_path_factory.mktemp("closed"), {}

    def get(name):
        if name not in made:
            opts = [] if name == "nmf" else ["--opt", "rank=32", "--opt", "select=false"]
            cli_ok(["train", "--dataset", "ml-100k", "--data-dir", dataset_dir("ml-100k"), "--model", name, *opts,
                    "--out", root / name, "--no-progress", "--device", "cpu", "--threads", "1"])
            made[name] = root / name
        return made[name]

    return get


def closed_form_commands(run, name, tmp_path):
    """The commands that read a closed-form run, with what each model supports."""
    out = {
        "evaluate": ["evaluate", run, "--k", "10,20", "--json"],
        "recommend": ["recommend", run, "--user", "1", "--k", "5", "--json"],
        "recommend-new": ["recommend", run, "--liked", "50", "--liked", "181", "--k", "5", "--json"],
        "counterfactual": ["explain", run, "--user", "1", "--method", "counterfactual", "--json"],
    }
    if name == "nmf":
        out["export"] = ["export", run, "--out", tmp_path / "export", "--json", "--overwrite"]
    else:
        out["history"] = ["explain", run, "--user", "1", "--method", "history", "--top", "5", "--json"]
        out["concepts"] = ["explain", run, "--user", "1", "--method", "concepts", "--json"]
        out["faithfulness"] = ["faithfulness", run, "--method", "history", "--remove", "1", "--runs", "1", "--users",
                               "3", "--json", "--no-progress"]
    return out


def saved(path):
    """A safetensors file's metadata and tensors (its header's key order is not fixed from file to file)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def same_weights(model, name, path, reference) -> bool:
    """Whether ``model`` writes the weights file ``reference`` holds (what write_run calls, at ``path``)."""
    from whyrec.train.checkpoint import save_weights

    save_weights(model, path, metadata={"model": name})
    (meta, tensors), (meta_ref, tensors_ref) = saved(path), saved(reference)
    return meta == meta_ref and tensors.keys() == tensors_ref.keys() and all(
        tensors[k].dtype == tensors_ref[k].dtype and torch.equal(tensors[k], tensors_ref[k]) for k in tensors)


@pytest.mark.parametrize("name", ["gf-cf", "nmf"])
def test_closed_form_runs_take_a_device(closed_form_runs, tmp_path, name):
    """``--device cpu|auto`` on a filter or NMF run gives the default's numbers (here auto is the CPU; on
    a CUDA machine the test below compares), and a loaded model writes the very weights file it was
    loaded from: the operator moved with the model is not saved."""
    run = closed_form_runs(name)
    for cmd, args in closed_form_commands(run, name, tmp_path).items():
        default = numbers(cli_ok(args).stdout)
        for device in ("cpu", "auto"):
            flagged = numbers(cli_ok([*args, "--device", device]).stdout)
            if NO_CUDA:
                assert flagged == default, (cmd, device)
            else:
                close(flagged, default)
    loaded = whyrec.load(run, device="auto")
    assert can(loaded.model, CUDA)
    assert same_weights(loaded.model, name, tmp_path / "w.safetensors", run / "weights.safetensors")


def test_nmf_scores_on_its_device_and_folds_in_by_nnls():
    from scipy.optimize import nnls

    rng = np.random.default_rng(0)
    R = sp.csr_matrix((rng.random((40, 25)) < 0.2).astype(np.float32))
    model = NMFRecommender(40, 25).fit_matrix(R)
    assert set(model.state_dict()) == {"W", "H"} and model.to("cpu").device.type == "cpu"
    H = model.H.double().numpy()
    rows = R[[0, 5, 9]]
    want = np.stack([nnls(H.T, rows[r].toarray().ravel().astype(np.float64))[0] @ H for r in range(3)])
    got = model.score_histories(rows)
    assert got.device == model.device and got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.score_users(torch.arange(40)).numpy(), model.W.numpy() @ model.H.numpy(),
                               rtol=1e-6)


@pytest.mark.skipif(NO_CUDA, reason="no CUDA device")
@pytest.mark.parametrize("name", CLOSED_FORM)
def test_closed_form_models_on_cuda_match_the_cpu(closed_form_runs, tmp_path, name):
    """Graph filters and NMF on CUDA: every command, the library's scoring entry points, a move there and
    back, the weights a CUDA model writes, and a fit with --device cuda, against the CPU."""
    run = closed_form_runs(name)
    for args in closed_form_commands(run, name, tmp_path).values():
        command_agrees_on_cuda(args)
    cpu_run, gpu_run = loaded_on_both(run)
    users = torch.arange(0, cpu_run.n_users, 7)
    s_cpu = cpu_run.model.score_users(users)
    s_gpu = gpu_run.model.score_users(users.cuda())
    assert s_gpu.device.type == "cuda"
    torch.testing.assert_close(s_gpu.cpu(), s_cpu, rtol=1e-4, atol=1e-5)
    hist = cpu_run.matrices["train"][[0, 3, 10]]
    torch.testing.assert_close(gpu_run.model.score_histories(hist).cpu(), cpu_run.model.score_histories(hist),
                               rtol=1e-4, atol=1e-5)
    if name != "nmf":
        h = hist[0].indices
        torch.testing.assert_close(gpu_run.model.score_items(h).cpu(), cpu_run.model.score_items(h), rtol=1e-4,
                                   atol=1e-5)
        terms = gpu_run.model.history_contributions(h, np.arange(cpu_run.n_items))
        assert terms.device.type == "cuda"
        torch.testing.assert_close(terms.cpu(), cpu_run.model.history_contributions(h, np.arange(cpu_run.n_items)),
                                   rtol=1e-4, atol=1e-5)
    # the weights a CUDA model writes are the file it came from; and back on the CPU, the CPU's scores
    assert same_weights(gpu_run.model, name, tmp_path / "w.safetensors", run / "weights.safetensors")
    back = gpu_run.to("cpu")
    assert back.device.type == "cpu"
    torch.testing.assert_close(back.model.score_users(users), s_cpu, rtol=1e-6, atol=1e-7)
    # fitted with --device cuda: the fit (SVD / scikit-learn) on the CPU, selection and evaluation on CUDA
    opts = {} if name == "nmf" else {"rank": 32, "select": False}
    data = whyrec.load_dataset("ml-100k", dataset_dir("ml-100k"))
    fit_cpu = whyrec.fit(data, model=name, seed=0, device="cpu", progress=False, **opts)
    fit_gpu = whyrec.fit(data, model=name, seed=0, device="cuda", progress=False, **opts)
    assert fit_gpu.device.type == "cuda"
    close(fit_gpu.evaluate(k=[10, 20]), fit_cpu.evaluate(k=[10, 20]))
    fit_cpu.save(tmp_path / "c")
    fit_gpu.save(tmp_path / "g")
    assert same_weights(fit_gpu.model, name, tmp_path / "w2.safetensors", tmp_path / "c" / "weights.safetensors")
    assert saved(tmp_path / "g" / "weights.safetensors")[1].keys() == saved(tmp_path / "c" / "weights.safetensors")[1].keys()
