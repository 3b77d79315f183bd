"""Graph filters (gf-cf, bspm, cheby-cf) beside popularity: accuracy, fit time, full-evaluation time
and peak memory, one dataset at a time.

Each model runs in its own child process (so its peak RSS is its own), through the same recipe
path as ``whyrec train`` (SVD, selection on validation where the split has one, the chosen
settings), then ranks **every** test user against all items with training items masked. The load
average before and after each child is recorded: this machine is shared, and a lone time means
little without it.

    python benchmarks/bench_filters.py --dataset gowalla --data-dir ../shared/datasets/gowalla
    python benchmarks/bench_filters.py --dataset ml-100k --data-dir ../shared/datasets/ml-100k --k 10,20
    python benchmarks/bench_filters.py --dataset lastfm-kg --data-dir ../shared/datasets/lastfm-kg \\
        --k 2,10,50,100 --seed 2020

Writes ``benchmarks/results/filters_<dataset>[_<tag>].json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def child(args) -> dict:
    import torch

    from whyrec.data import load_dataset
    from whyrec.data.splits import make_split
    from whyrec.evaluate import evaluate_ranking
    from whyrec.train.loop import TrainConfig
    from whyrec.recipes import ModelInputs, get_recipe

    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, args.data_dir)
    params = {"valid_ratio": args.valid_ratio} if (args.split or ("official" if data.official_test is not None
                                                                   else "")) == "official" else {}
    split = make_split(data, args.split, seed=args.seed, min_rating=args.min_rating, **params)
    train, valid, test = split.matrices(data)
    recipe = get_recipe(args.child)
    options = {**recipe.model_options(None, None), "features": "none"}
    for kv in args.opt or []:
        key, _, value = kv.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    config = recipe.model_config(options)
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    model = recipe.build(ModelInputs(data.n_users, data.n_items, train, {}), config)
    train_values = {}
    for kv in args.train or []:
        key, _, value = kv.partition("=")
        train_values[key] = json.loads(value)
    tconfig = TrainConfig(seed=args.seed, device="cpu", **train_values)
    monitor = valid if valid.nnz else None
    if recipe.fit:
        hist = recipe.fit(model, ModelInputs(data.n_users, data.n_items, train, {}), monitor, tconfig, config, False)
    elif model.trainable:  # LightGCN, MF: the BPR loop of `whyrec train`
        from whyrec.train.loop import fit

        hist = fit(model, train, monitor, tconfig, progress=False)
    else:
        hist = None
    fit_s = time.perf_counter() - t0
    if recipe.final_config:
        config = recipe.final_config(model, config)
    model.eval()
    t1 = time.perf_counter()
    with torch.no_grad():
        metrics = evaluate_ranking(model.score_users, train, test, ks=args.ks)
    eval_s = time.perf_counter() - t1
    return {"model": args.child, "model_config": {k: v for k, v in config.items() if not k.startswith("_")},
            "fit_seconds": round(fit_s, 2), "eval_seconds": round(eval_s, 2),
            "total_seconds": round(fit_s + eval_s, 2),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 3),
            "selection": (hist.config.get("selection") if hist else None), "metrics": metrics,
            "train_config": train_values if model.trainable else None,
            "best_epoch": hist.best_epoch if hist else None,
            "n_users": data.n_users, "n_items": data.n_items, "n_train": int(train.nnz)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("--valid-ratio", type=float, default=0.0)
    p.add_argument("--min-rating", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--models", default="gf-cf,bspm,cheby-cf,pop")
    p.add_argument("--k", default="20")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--opt", action="append", help="MODEL:KEY=VALUE, passed to that model only")
    p.add_argument("--train", action="append", help="TrainConfig KEY=VALUE for the trained models (lightgcn, mf)")
    p.add_argument("--tag", default="")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.ks = tuple(int(k) for k in args.k.split(","))
    if args.child:
        args.opt = [o.split(":", 1)[1] for o in args.opt or [] if o.split(":", 1)[0] == args.child]
        print(json.dumps(child(args)))
        return
    rows = []
    for name in args.models.split(","):
        cmd = [sys.executable, __file__, "--child", name] + [a for a in sys.argv[1:]]
        before = os.getloadavg()[0]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            raise SystemExit(f"{name} failed")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["load_before"], row["load_after"] = round(before, 2), round(os.getloadavg()[0], 2)
        rows.append(row)
        m = row["metrics"]
        print(f"{name}: " + " ".join(f"{k} {m[k]:.4f}" for k in m if k.split("@")[0] in ("recall", "ndcg")) +
              f" | fit {row['fit_seconds']} s, eval {row['eval_seconds']} s, peak {row['peak_rss_gb']} GB, "
              f"load {row['load_before']}→{row['load_after']}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"filters_{args.dataset}{'_' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps({"command": "python benchmarks/bench_filters.py " + " ".join(sys.argv[1:]),
                                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads",
                                "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
