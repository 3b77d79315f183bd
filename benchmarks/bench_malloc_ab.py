"""glibc's mmap on or off for the LightGCN step: processes alternated, same data, same step.

    python benchmarks/bench_malloc_ab.py --train-npz /tmp/train_16M.npz --steps-per-epoch 13 --pairs 3
    python benchmarks/bench_malloc_ab.py --scale gowalla --pairs 4 --steps 10

malloc's settings are process-wide and a heap keeps what a step freed, so two settings cannot be
compared inside one process (after one step with mmap off, the freed blocks sit in the heap and the
steps with mmap on reuse them too: ``bench_step_ab.py --malloc-ab`` measures ~1.0 for that reason).
Here each measurement is its own child process, and the children alternate: base, new, new, base,
base, new, ... (the order flips every pair), so a shared machine's load hits both alike.

* ``base``: the previous commit's malloc: :func:`whyrec.graph.tune_malloc` only (blocks of 32 MiB
  and more get their own ``mmap``);
* ``new``: the steps inside :func:`whyrec.graph.heap_only` (``M_MMAP_MAX`` 0: no ``mmap``'d
  blocks), as :class:`whyrec.train.Trainer` runs an epoch.

Each child builds LightGCN (dim 64, 3 layers) on the same training matrix with the same seed, takes
one warm-up step and times ``--steps`` steps of the fast preset (Adam lr 3e-2, L2 1e-4, positives
per uniform user; batch 65,536 or ``ceil(n_train / S)``) on the same batches, and reports the median
step, the minor page faults per step (``getrusage``), its peak RSS and its losses. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")

FAST = {"batch_size": 65536, "lr": 3e-2, "reg": 1e-4}


def child(args) -> dict:
    import ctypes
    import resource

    import torch

    import contextlib

    import whyrec.graph  # applies tune_malloc

    ctypes.CDLL("libc.so.6").mallopt(-4, 65536)  # M_MMAP_MAX: glibc's default (whatever the environment)
    from bench_scale import fast_step
    from bench_step_ab import load_train

    from whyrec.models import LightGCN, LightGCNConfig
    from whyrec.train.sampling import UniformNegativeSampler

    torch.set_num_threads(args.threads)
    train = load_train(args)
    torch.manual_seed(args.seed)
    model = LightGCN(*train.shape, LightGCNConfig(dim=64, n_layers=3), graph=train)
    users, pos, neg = (torch.from_numpy(a) for a in UniformNegativeSampler(train, seed=args.seed, positives="users")
                       .sample_epoch(1))
    bs = math.ceil(len(users) / args.steps_per_epoch) if args.steps_per_epoch else FAST["batch_size"]
    opt = torch.optim.Adam(model.parameters(), lr=FAST["lr"])
    model.train()

    step = fast_step(model, opt, users, pos, neg, bs)

    with whyrec.graph.heap_only() if args.child == "new" else contextlib.nullcontext():
        losses = [step(0)]
        times = []
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for b in range(1, args.steps + 1):
            t = time.perf_counter()
            losses.append(step(b))
            times.append(time.perf_counter() - t)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    return {"setting": args.child, "batch_size": bs, "n_train": int(train.nnz), "s_per_step": times,
            "median": statistics.median(times), "minor_faults_per_step": faults / args.steps,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "losses": losses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", default="gowalla", help="gowalla, or a bench_scale.py scale (100k, 1M, 4M, 16M)")
    ap.add_argument("--data", default=os.environ.get("WHYREC_GOWALLA", str(ROOT.parent / "shared" / "datasets" / "gowalla")))
    ap.add_argument("--train-npz", default=None, help="training matrix saved with scipy.sparse.save_npz")
    ap.add_argument("--steps-per-epoch", type=int, default=None, help="batch ceil(n_train / S) instead of 65,536")
    ap.add_argument("--pairs", type=int, default=3, help="pairs of child processes (one of each setting)")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per child")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--child", choices=("base", "new"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "malloc_ab.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "WHYREC_MALLOC_TUNING"}
    runs = []
    load_start = os.getloadavg()
    for p in range(args.pairs):
        for name in (("base", "new") if p % 2 == 0 else ("new", "base")):
            cmd = [sys.executable, __file__, "--child", name, "--scale", args.scale, "--data", args.data,
                   "--steps", str(args.steps), "--threads", str(args.threads), "--seed", str(args.seed)]
            if args.train_npz:
                cmd += ["--train-npz", args.train_npz]
            if args.steps_per_epoch:
                cmd += ["--steps-per-epoch", str(args.steps_per_epoch)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["load_average_end"] = os.getloadavg()
            runs.append(row)
            print(json.dumps({k: row[k] for k in ("setting", "median", "minor_faults_per_step", "peak_rss_mb",
                                                  "load_average_end")}), flush=True)
    med = {name: statistics.median([t for r in runs if r["setting"] == name for t in r["s_per_step"]])
           for name in ("base", "new")}
    losses = {name: [r["losses"] for r in runs if r["setting"] == name] for name in ("base", "new")}
    out = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "scale": args.scale,
        "train_npz": args.train_npz, "batch_size": runs[0]["batch_size"], "n_train": runs[0]["n_train"],
        "threads": args.threads, "pairs": args.pairs, "steps_per_child": args.steps,
        "s_per_step_median": med, "new_over_base": med["new"] / med["base"],
        "minor_faults_per_step_median": {n: statistics.median([r["minor_faults_per_step"] for r in runs
                                                               if r["setting"] == n]) for n in med},
        "peak_rss_mb": {n: max(r["peak_rss_mb"] for r in runs if r["setting"] == n) for n in med},
        "same_losses": all(a == losses["base"][0] for a in losses["base"] + losses["new"]),
        "runs": runs, "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    print(json.dumps({k: out[k] for k in ("s_per_step_median", "new_over_base", "minor_faults_per_step_median",
                                          "peak_rss_mb", "same_losses", "load_average_start", "load_average_end")}))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
