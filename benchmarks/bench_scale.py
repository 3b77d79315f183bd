"""How training and evaluation grow with the data: LightGCN's fast-preset step on synthetic power-law graphs.

    python benchmarks/bench_scale.py                       # 1M and 4M interactions -> benchmarks/results/scale.json
    python benchmarks/bench_scale.py --scales 1M 4M 16M --max-epoch-s 300
    python benchmarks/bench_scale.py --scales 1M 4M 16M --steps-per-epoch 13   # a constant number of steps

For each scale (interactions, users × items as in issue 17's table: 1M = 25k × 12.5k, 4M = 100k × 50k,
16M = 400k × 200k) a child process (so that its peak RSS is its own)

* draws the graph with :func:`whyrec.data.synthetic.power_law` (Zipf exponent ``--exponent``, seeded;
  per-user 80/20 holdout) and builds LightGCN (dim 64, 3 layers) on the training part;
* times ``--steps`` optimizer steps of the fast preset (batch 65,536, Adam lr 3e-2, L2 1e-4, positives
  per uniform user — ``benchmarks/gowalla_quality.py --preset fast``) after one warm-up step, exactly
  as :func:`whyrec.train.loop.fit` takes them (``batch_embeddings``, BPR + L2, backward, Adam, inside
  :func:`whyrec.graph.heap_only`);
  an epoch is ``ceil(n_train / 65,536)`` such steps (with ``--steps-per-epoch S``: S steps of
  ``ceil(n_train / S)`` examples, so that the full propagations per epoch do not grow with the data
  and an epoch costs time linear in the interactions): measured whole with :func:`fit` (one epoch, no
  evaluation) when the step estimate says it takes at most ``--max-epoch-s``, otherwise reported as
  steps × seconds per step and marked ``extrapolated``;
* times the full evaluation (every test user ranked against every item, training items masked,
  :func:`whyrec.evaluate.evaluate_ranking`), on all test users, or on the first ``--max-eval-users``
  and scaled up (marked ``extrapolated``);
* reports the peak RSS of the child (``getrusage``), the load average before and after, and the command.

Then it fits ``seconds ∝ interactions^b`` between consecutive scales and over all of them (least squares,
log-log). ``--fit FILE ...`` prints the rows of earlier result files as one table with that growth::

    python benchmarks/bench_scale.py --fit benchmarks/results/scale_steps13_all.json benchmarks/results/scale_steps13_50M.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCALES = {"100k": (2_500, 1_250, 100_000), "1M": (25_000, 12_500, 1_000_000), "4M": (100_000, 50_000, 4_000_000),
          "10M": (250_000, 125_000, 10_000_000), "16M": (400_000, 200_000, 16_000_000),
          "50M": (1_250_000, 625_000, 50_000_000)}
FAST = {"batch_size": 65536, "lr": 3e-2, "reg": 1e-4, "positives": "users"}



def fast_step(model, opt, users, pos, neg, bs: int):
    """The fast preset's training step as ``fit`` takes it: ``step(b)`` trains on the ``b``-th batch of ``bs``
    triples (wrapping around the epoch's ``users, pos, neg``) and returns the loss."""
    from whyrec.train.losses import batch_l2, bpr_loss

    def step(b: int) -> float:
        sl = slice((b * bs) % len(users), (b * bs) % len(users) + bs)
        be = model.batch_embeddings(users[sl], pos[sl], neg[sl])
        loss = bpr_loss((be.users * be.pos).sum(-1), (be.users * be.neg).sum(-1)) + batch_l2(FAST["reg"], be)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step

def one(args) -> dict:
    import numpy as np
    import torch

    from whyrec.data.synthetic import power_law
    from whyrec.data.splits import official_split
    from whyrec.evaluate import evaluate_ranking
    from whyrec.graph import heap_only
    from whyrec.models import LightGCN, LightGCNConfig
    from whyrec.train.loop import TrainConfig, fit
    from whyrec.train.sampling import UniformNegativeSampler

    if args.threads:
        torch.set_num_threads(args.threads)
    n_users, n_items, n = SCALES[args.one]
    out = {"scale": args.one, "n_users": n_users, "n_items": n_items, "interactions": n,
           "exponent": args.exponent, "threads": torch.get_num_threads(), "load_average_start": os.getloadavg()}
    t = time.perf_counter()
    data = power_law(n_users, n_items, n, exponent=args.exponent, seed=args.seed)
    split = official_split(data)
    train, _, test = split.matrices(data)
    out["generate_s"] = round(time.perf_counter() - t, 1)
    deg = np.sort(np.bincount(data.items, minlength=n_items))[::-1]
    out["top1pct_items_share"] = round(float(deg[: max(1, n_items // 100)].sum() / n), 3)
    out["n_train"] = int(train.nnz)
    del data
    torch.manual_seed(args.seed)
    t = time.perf_counter()
    model = LightGCN(n_users, n_items, LightGCNConfig(dim=64, n_layers=3), graph=train)
    out["graph_build_s"] = round(time.perf_counter() - t, 2)
    sampler = UniformNegativeSampler(train, seed=args.seed, positives=FAST["positives"])
    opt = torch.optim.Adam(model.parameters(), lr=FAST["lr"])
    users, pos, neg = (torch.from_numpy(a) for a in sampler.sample_epoch(1))
    bs = math.ceil(len(users) / args.steps_per_epoch) if args.steps_per_epoch else FAST["batch_size"]
    steps_per_epoch = math.ceil(len(users) / bs)
    out["batch_size"] = bs
    model.train()

    step = fast_step(model, opt, users, pos, neg, bs)

    times = []
    with heap_only():  # as fit runs an epoch
        step(0)  # warm-up
        for b in range(1, args.steps + 1):
            t = time.perf_counter()
            step(b)
            times.append(time.perf_counter() - t)
    s_step = float(np.median(times))
    out.update(steps_timed=args.steps, s_per_step=round(s_step, 3), steps_per_epoch=steps_per_epoch,
               epoch_s_from_steps=round(s_step * steps_per_epoch, 1))
    if s_step * steps_per_epoch <= args.max_epoch_s:
        config = TrainConfig(epochs=1, eval_every=10**6, seed=args.seed, lr_schedule="constant",
                             num_threads=args.threads, **{**FAST, "batch_size": bs})
        t = time.perf_counter()
        hist = fit(model, train, None, config, progress=False)
        out["epoch_s"] = round(time.perf_counter() - t, 1)
        out["epoch_s_in_fit"] = round(float(hist.epochs[0]["seconds"]), 1) if hist.epochs else None
        out["epoch"] = "measured (fit, 1 epoch, no evaluation)"
    else:
        out["epoch_s"] = out["epoch_s_from_steps"]
        out["epoch"] = f"extrapolated: {steps_per_epoch} steps x median of {args.steps} timed steps"
    model.eval()
    test_users = np.flatnonzero(np.diff(test.indptr))
    t = time.perf_counter()
    if len(test_users) <= args.max_eval_users:
        evaluate_ranking(model.score_users, train, test, ks=(20,))
        out["full_eval_s"] = round(time.perf_counter() - t, 1)
        out["full_eval"] = f"measured, {len(test_users):,} test users"
    else:
        import scipy.sparse as sp

        keep = test_users[: args.max_eval_users]
        mask = sp.diags(np.isin(np.arange(n_users), keep).astype(np.float32))
        part = sp.csr_matrix(mask @ test)
        evaluate_ranking(model.score_users, train, part, ks=(20,))
        dt = time.perf_counter() - t
        out["full_eval_s"] = round(dt * len(test_users) / len(keep), 1)
        out["full_eval"] = f"extrapolated from {len(keep):,} of {len(test_users):,} test users ({dt:.1f} s)"
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out["load_average_end"] = os.getloadavg()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", nargs="+", default=["1M", "4M"], choices=sorted(SCALES))
    ap.add_argument("--exponent", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--max-epoch-s", type=float, default=240.0)
    ap.add_argument("--max-eval-users", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps-per-epoch", type=int, default=None,
                    help="a constant number of steps per epoch (batch = ceil(n_train / S)) instead of batch 65,536")
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per scale")
    ap.add_argument("--one", choices=sorted(SCALES), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale.json"))
    ap.add_argument("--fit", nargs="+", metavar="FILE",
                    help="print the rows of these result files and their growth (nothing is run)")
    args = ap.parse_args()
    if args.fit:
        fit_files(args.fit)
        return
    if args.one:
        print(json.dumps(one(args)), flush=True)
        return
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "cpus": os.cpu_count(),
              "platform": platform.platform(), "preset": {**FAST, "dim": 64, "n_layers": 3},
              "steps_per_epoch": args.steps_per_epoch, "scales": []}
    for scale in args.scales:
        cmd = [sys.executable, __file__, "--one", scale, "--exponent", str(args.exponent), "--steps", str(args.steps),
               "--max-epoch-s", str(args.max_epoch_s), "--max-eval-users", str(args.max_eval_users),
               "--threads", str(args.threads), "--seed", str(args.seed)]
        if args.steps_per_epoch:
            cmd += ["--steps-per-epoch", str(args.steps_per_epoch)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            result["scales"].append({"scale": scale, "error": f"did not finish in {args.timeout:.0f} s"})
            print(scale, "timed out", flush=True)
            continue
        if proc.returncode != 0:
            result["scales"].append({"scale": scale, "error": proc.stderr.strip().splitlines()[-1:]})
            print(scale, "failed:", proc.stderr[-2000:], flush=True)
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        result["scales"].append(row)
        print(json.dumps(row), flush=True)
    result["growth"], result["growth_fit"] = growth([r for r in result["scales"] if "error" not in r])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"growth": result["growth"], "growth_fit": result["growth_fit"]}))
    print(f"wrote {args.out}")


GROWN = ("s_per_step", "epoch_s", "full_eval_s", "peak_rss_mb")


def growth(rows: list) -> tuple[list, dict]:
    """The exponent ``b`` of ``cost ∝ interactions^b`` between consecutive rows (sorted by interactions), and
    fitted over all of them (least squares in log-log, with the number of rows it rests on)."""
    import numpy as np

    rows = sorted(rows, key=lambda r: r["interactions"])
    steps = []
    for a, b in zip(rows, rows[1:]):
        ratio = math.log(b["interactions"] / a["interactions"])
        steps.append({"from": a["scale"], "to": b["scale"],
                      **{f"{key}_exponent": round(math.log(b[key] / a[key]) / ratio, 2)
                         for key in GROWN if a.get(key) and b.get(key)}})
    fit = {}
    for key in GROWN:
        pts = [(math.log(r["interactions"]), math.log(r[key])) for r in rows if r.get(key)]
        if len(pts) >= 3:
            x, y = np.array(pts).T
            fit[f"{key}_exponent"] = {"b": round(float(np.polyfit(x, y, 1)[0]), 2), "points": len(pts)}
    return steps, fit


def fit_files(paths: list) -> None:
    """``--fit``: the rows of several result files (e.g. one run of 1M-16M and a separate 50M run) in one table
    with their growth, printed as Markdown."""
    rows = [dict(r, file=Path(p).name) for p in paths for r in json.loads(Path(p).read_text())["scales"]
            if "error" not in r]
    rows.sort(key=lambda r: r["interactions"])
    print("| interactions | users × items | steps × batch | s per step | s per epoch | full eval | peak RSS | "
          "load avg (start → end) | file |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['interactions']:,} | {r['n_users']:,} × {r['n_items']:,} | {r['steps_per_epoch']} × "
              f"{r['batch_size']:,} | {r['s_per_step']} | {r['epoch_s']} ({r['epoch'].split(' ')[0]}) | "
              f"{r['full_eval_s']} s ({r['full_eval'].split(' ')[0]}) | {r['peak_rss_mb']:,} MB | "
              f"{r['load_average_start'][0]:.1f} → {r['load_average_end'][0]:.1f} | `{r['file']}` |")
    steps, fit = growth(rows)
    print()
    print("growth between rows:", json.dumps(steps))
    print("fitted over all rows:", json.dumps(fit))


if __name__ == "__main__":
    main()
