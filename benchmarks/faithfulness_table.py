"""The faithfulness table (issue 16, item 5): every explainer that ranks history items × every model that
re-scores from a changed history × ML-100K, the ML-1M files and Last.fm, over three trained seeds.

For each cell (dataset, model, seed) it trains the model with the short schedule of :data:`MODELS`
(``--threads 1``; ``--seed`` sets the split and the initialisation, so three seeds are three trained
models on three splits), asks the explainer registry which explainers rank history items for that run
(``whyrec.explain.supported_methods``, ``ranks_history``; ``random`` always), and runs, one process per
explainer (so that each is timed alone)::

    whyrec faithfulness RUN --method M --metric deletion,insertion,knockout,fidelity,flip,shift \\
        --users 100 --max-remove M_d --remove 1,2,5,10 --runs 1 --json

(the first 100 test users with more than ``M_d`` training items; ``M_d`` = 10 on MovieLens, 5 on Last.fm,
whose histories are short). Per cell it writes ``benchmarks/results/faithfulness_table/<dataset>_<model>_
seed<seed>.json`` (the training command, time and test metrics, per explainer its summaries, per-user rows,
time and load average, and the paired test against random); a cell whose JSON exists is skipped, so a
partial run is useful and a re-run resumes. Then (or alone, ``--summary-only``) it pools the cells into
``summary.json`` (:func:`summarize`: per (dataset, model, explainer) the means with 95 % confidence
intervals over users pooled over seeds, the spread over seeds, the paired Wilcoxon test against random and
the verdict) and draws ``docs/figures/faithfulness_table.png``.

    python benchmarks/faithfulness_table.py                       # the whole table (resumes)
    python benchmarks/faithfulness_table.py --cells ml-100k:gf-cf  # some cells
    python benchmarks/faithfulness_table.py --summary-only         # pool what exists, draw the figure
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "faithfulness_table"
FIGURE = ROOT / "docs" / "figures" / "faithfulness_table.png"
DATA = Path(os.environ.get("WHYREC_DATASETS", ROOT.parent / "shared" / "datasets"))

#: dataset key -> (whyrec dataset name, folder under the datasets, M = --max-remove)
DATASETS = {"ml-100k": ("ml-100k", "ml-100k", 10), "ml-1m": ("ml-1m", "ml-1m-sample", 10),
            "lastfm": ("lastfm-kg", "lastfm-kg", 5)}
_RESOLVED = ["--opt", "lr=1e-2", "--opt", "input_dropout=0.5", "--opt", "anneal_epochs=5", "--opt", "epochs=30",
             "--opt", "eval_every=5"]
_LGCN_HISTORY = ["--opt", "user_repr=history", "--lr", "1e-2", "--eval-every", "20", "--patience", "2"]
#: model key -> (whyrec model, training flags, per-dataset extra flags): the short schedules
MODELS = {
    "gf-cf": ("gf-cf", [], {}),  # closed form; rank/alpha selected on validation by `whyrec train`
    "cheby-cf": ("cheby-cf", [], {}),
    "bspm": ("bspm", [], {}),
    "nmf": ("nmf", [], {}),  # one scikit-learn fit
    # history-only LightGCN: lr 1e-2 (the documented run: 5e-3, 300 epochs), at most 120 epochs (ML-1M: 60
    # epochs of 8192-example batches), early stop on validation Recall@20
    "lightgcn/history": ("lightgcn", _LGCN_HISTORY, {"ml-1m": ["--epochs", "60", "--batch-size", "8192"],
                                                      "*": ["--epochs", "120"]}),
    # seed 002's tuned row at half its epochs (30 instead of 60)
    "resolved": ("resolved", _RESOLVED, {}),
    "vae": ("vae", _RESOLVED, {}),
}
SEEDS = (2020, 2021, 2022)
#: the order cells run in: cheap ones first (the filters are closed-form)
PLAN = [(d, m) for m in ("gf-cf", "cheby-cf", "bspm") for d in ("ml-100k", "ml-1m", "lastfm")] + \
       [("ml-100k", "lightgcn/history"), ("lastfm", "nmf"), ("ml-100k", "nmf"), ("lastfm", "lightgcn/history"),
        ("lastfm", "resolved"), ("lastfm", "vae"), ("ml-1m", "nmf"), ("ml-1m", "lightgcn/history"),
        ("ml-100k", "resolved"), ("ml-100k", "vae")]
N_USERS = 100
#: per-user keys left out of the cell JSON (their means over users are kept in ``deletion``/``insertion``)
DROP_PER_USER = ("deletion_score", "insertion_score", "insertion_rank")
CURVES = "deletion,insertion,knockout,fidelity,flip,shift"


def cell_path(dataset: str, model: str, seed: int) -> Path:
    return OUT / f"{dataset}_{model.replace('/', '-')}_seed{seed}.json"


def whyrec_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "whyrec", *args]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _round(x, nd: int = 5):
    """``x`` with every float to ``nd`` significant digits (a p-value of 1e-30 stays 1e-30)."""
    if isinstance(x, float):
        return float(f"{x:.{nd}g}")
    if isinstance(x, list):
        return [_round(v, nd) for v in x]
    if isinstance(x, dict):
        return {k: _round(v, nd) for k, v in x.items()}
    return x


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def train_args(dataset: str, model: str, seed: int, run_dir: Path) -> list[str]:
    name, folder, _ = DATASETS[dataset]
    wmodel, flags, extra = MODELS[model]
    return ["train", "--dataset", name, "--data-dir", str(DATA / folder), "--model", wmodel, "--seed", str(seed),
            "--out", str(run_dir), "--overwrite", "--threads", "1", "--no-progress", *flags,
            *extra.get(dataset, extra.get("*", []))]


def run_cell(dataset: str, model: str, seed: int, work: Path, n_users: int = N_USERS) -> dict:
    """Train one (dataset, model, seed), run every applicable explainer and random, write the cell JSON."""
    from whyrec.explain import EXPLAINERS, supported_methods
    from whyrec.explain.faithfulness import paired_test
    from whyrec.run import load_run

    run_dir = work / f"{dataset}_{model.replace('/', '-')}_seed{seed}"
    targs = train_args(dataset, model, seed, run_dir)
    t0, load0 = time.time(), os.getloadavg()[0]
    if not (run_dir / "metrics.json").exists():
        subprocess.run(whyrec_cmd(*targs), check=True, capture_output=True, text=True, cwd=ROOT, env=_env())
    train_s = time.time() - t0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run = load_run(run_dir)
    methods = [m for m in supported_methods(run) if EXPLAINERS[m].ranks_history] + ["random"]
    del run
    M = DATASETS[dataset][2]
    results = []
    for m in methods:
        fargs = ["faithfulness", str(run_dir), "--method", m, "--metric", CURVES, "--users", str(n_users),
                 "--max-remove", str(M), "--remove", "1,2,5,10", "--runs", "1", "--json", "--no-progress"]
        la, t1 = os.getloadavg()[0], time.time()
        out = subprocess.run(whyrec_cmd(*fargs), check=True, capture_output=True, text=True, cwd=ROOT, env=_env())
        res = json.loads(out.stdout)
        res["seconds"], res["load_average"] = time.time() - t1, [la, os.getloadavg()[0]]
        res["command"] = "whyrec " + " ".join(fargs[:1] + ["RUN"] + fargs[2:])
        for row in res["per_user"]:  # the per-m score curves are in the summaries; keep what the tests need
            for key in DROP_PER_USER:
                row.pop(key, None)
        results.append(res)
    rand = next(r for r in results if r["method"] == "random")
    for res in results:
        if res is not rand:
            res["vs_random"] = paired_test(res, rand)
    doc = {"dataset": dataset, "model": model, "seed": seed, "n_users_requested": n_users, "max_remove": M,
           "train": {"command": "whyrec " + " ".join(a if a != str(run_dir) else "RUN" for a in targs),
                     "seconds": train_s, "load_average": [load0, os.getloadavg()[0]],
                     "test": metrics.get("test"), "best_epoch": metrics.get("best_epoch")},
           "machine": machine(), "methods": _round(results)}
    OUT.mkdir(parents=True, exist_ok=True)
    path = cell_path(dataset, model, seed)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc) + "\n")
    tmp.replace(path)
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default=None, help="dataset:model,... (default: the whole plan, cheap cells first)")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--users", type=int, default=N_USERS)
    ap.add_argument("--work", type=Path, default=Path("/tmp/whyrec_faithfulness_table"))
    ap.add_argument("--summary-only", action="store_true", help="pool the cell JSONs that exist, draw the figure")
    ap.add_argument("--figure", type=Path, default=FIGURE)
    args = ap.parse_args()
    plan = PLAN if args.cells is None else [tuple(c.split(":", 1)) for c in args.cells.split(",")]
    for d, m in plan:
        if d not in DATASETS or m not in MODELS:
            raise SystemExit(f"unknown cell {d}:{m}")
    if not args.summary_only:
        for d, m in plan:
            for s in map(int, args.seeds.split(",")):
                if cell_path(d, m, s).exists():
                    continue
                t0 = time.time()
                try:
                    run_cell(d, m, s, args.work, args.users)
                except subprocess.CalledProcessError as err:
                    print(f"FAILED {d} {m} {s}: {err.stderr[-2000:]}", flush=True)
                    continue
                print(f"{time.strftime('%H:%M:%S')} {d} {m} seed {s}: {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
