"""Benchmark full-ranking evaluation (whyrec.evaluate) on Gowalla.

Random 64-d user/item embeddings, score = dot product (a callable scorer, as
a model's ``score_users`` would be), all 29,858 users ranked against all
40,981 items with training items masked.

Every measurement runs in a fresh child process so that its peak RSS
(``resource.getrusage(...).ru_maxrss``) belongs to that measurement only;
"extra" memory is peak RSS minus the RSS after data + embeddings are loaded.
torch allocations bypass Python's allocator, so tracemalloc would not see them.

The naive reference scores a subset of users as one dense matrix, masks it,
ranks with ``numpy.argsort`` per user and counts hits in a Python loop; its
time is extrapolated linearly to all users (a full dense matrix would be
29,858 x 40,981 x 4 B = 4.9 GB).

Usage::

    python benchmarks/bench_evaluate.py [--data-dir DIR] [--batch-sizes 256 1024 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "gowalla"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "evaluate.json"
sys.path.insert(0, str(REPO / "benchmarks"))

from procmem import peak_rss_mb, rss_mb  # noqa: E402


def load_split(path: Path):
    import numpy as np

    rows, cols = [], []
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if len(parts) < 2:
                continue
            items = np.array(parts[1:], dtype=np.int64)
            rows.append(np.full(len(items), int(parts[0]), dtype=np.int64))
            cols.append(items)
    return np.concatenate(rows), np.concatenate(cols)


def worker(spec: dict) -> dict:
    """One measurement, in its own process."""
    import numpy as np
    import scipy.sparse as sp
    import torch

    sys.path.insert(0, str(REPO))
    from whyrec.evaluate import evaluate_ranking

    data = Path(spec["data_dir"])
    tr, te = load_split(data / "train.txt"), load_split(data / "test.txt")
    n_users = int(max(tr[0].max(), te[0].max())) + 1
    n_items = int(max(tr[1].max(), te[1].max())) + 1
    train = sp.csr_matrix((np.ones(len(tr[0]), np.float32), tr), shape=(n_users, n_items))
    test = sp.csr_matrix((np.ones(len(te[0]), np.float32), te), shape=(n_users, n_items))
    g = torch.Generator().manual_seed(0)
    emb_u = torch.randn(n_users, 64, generator=g)
    emb_i = torch.randn(n_items, 64, generator=g)

    def score_users(u: torch.Tensor) -> torch.Tensor:
        return emb_u[u] @ emb_i.T

    ks = tuple(spec["ks"])
    bs = spec["batch_size"]
    base = rss_mb()
    out = {"kind": spec["kind"], "ks": list(ks), "batch_size": bs, "n_users_total": n_users,
           "n_items": n_items, "threads": torch.get_num_threads()}
    repeat = spec.get("repeat", 1)
    if spec["kind"] == "whyrec":
        evaluate_ranking(score_users, train, test, ks, batch_size=bs, users=np.arange(bs))  # warm-up
        times, cpu = [], []
        for _ in range(repeat):
            c0, t0 = time.process_time(), time.perf_counter()
            res = evaluate_ranking(score_users, train, test, ks, batch_size=bs)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        out["seconds"], out["all_seconds"], out["cpu_seconds"] = min(times), times, min(cpu)
        out["n_users"] = res["n_users"]
        out["metrics"] = res
    elif spec["kind"] == "scoring_only":
        # lower bound: the scorer's matmuls alone, same batches, no masking/top-k
        users = np.flatnonzero(np.diff(test.indptr) > 0)
        times, cpu = [], []
        for _ in range(repeat):
            c0, t0 = time.process_time(), time.perf_counter()
            with torch.no_grad():
                for s in range(0, len(users), bs):
                    score_users(torch.from_numpy(users[s:s + bs]))
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        out["seconds"], out["all_seconds"], out["cpu_seconds"] = min(times), times, min(cpu)
        out["n_users"] = len(users)
    elif spec["kind"] == "naive":
        # dense scores for a subset + np.argsort per user + Python hit counting
        users = np.flatnonzero(np.diff(test.indptr) > 0)[: spec["naive_users"]]
        t0 = time.perf_counter()
        with torch.no_grad():
            scores = (emb_u[torch.from_numpy(users)] @ emb_i.T).numpy()
        recalls = {k: [] for k in ks}
        ndcgs = {k: [] for k in ks}
        for row, u in enumerate(users):
            s = scores[row]
            s[train[u].indices] = -np.inf
            order = np.argsort(-s)
            t = set(test[u].indices.tolist())
            for k in ks:
                rel = np.array([i in t for i in order[:k]], dtype=np.float64)
                recalls[k].append(rel.sum() / len(t))
                disc = 1 / np.log2(np.arange(2, k + 2))
                ndcgs[k].append((rel * disc).sum() / disc[: min(k, len(t))].sum())
        sub_seconds = time.perf_counter() - t0
        n_eval = int((np.diff(test.indptr) > 0).sum())
        out["n_users"] = len(users)
        out["subset_seconds"] = sub_seconds
        out["seconds"] = sub_seconds * n_eval / len(users)  # extrapolated
        out["extrapolated"] = True
        # the same subset through whyrec, to check both agree
        res = evaluate_ranking(score_users, train, test, ks, users=users)
        out["agreement_max_abs_diff"] = max(
            max(abs(float(np.mean(recalls[k])) - res[f"recall@{k}"]),
                abs(float(np.mean(ndcgs[k])) - res[f"ndcg@{k}"])) for k in ks)
    out["load_average_1min"] = os.getloadavg()[0]
    out["base_rss_mb"] = base
    out["peak_rss_mb"] = peak_rss_mb()
    out["peak_extra_mb"] = out["peak_rss_mb"] - base
    return out


def run_child(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed for {spec}:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    p.add_argument("--naive-users", type=int, default=1000,
                   help="users scored by the naive reference (time extrapolated)")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed repetitions per configuration (the minimum is reported)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if not (args.data_dir / "train.txt").exists():
        p.error(f"no train.txt in {args.data_dir}")

    common = {"data_dir": str(args.data_dir), "repeat": args.repeat}
    rows = []
    print(f"batch-size sweep, ks=(20,), {args.data_dir}")
    for bs in args.batch_sizes:
        r = run_child({**common, "kind": "whyrec", "ks": [20], "batch_size": bs})
        rows.append(r)
        print(f"  batch_size={bs:5d}  {r['seconds']:6.2f} s (cpu {r['cpu_seconds']:6.2f} s)  "
              f"peak extra {r['peak_extra_mb']:7.1f} MB  load {r['load_average_1min']:.1f}")
    best = min(rows, key=lambda r: r["seconds"])["batch_size"]
    rows.append(run_child({**common, "kind": "whyrec", "ks": [10, 20, 50], "batch_size": best}))
    rows.append(run_child({**common, "kind": "scoring_only", "ks": [20], "batch_size": best}))
    for ks in ([20], [10, 20, 50]):
        rows.append(run_child({**common, "kind": "naive", "ks": ks, "batch_size": 0,
                               "naive_users": args.naive_users}))

    def find(kind, ks, bs=None):
        return next(r for r in rows if r["kind"] == kind and r["ks"] == ks
                    and (bs is None or r["batch_size"] == bs))

    print()
    print(f"{'method':<34}{'ks':<14}{'batch':>6}{'seconds':>10}{'cpu s':>8}{'peak RSS MB':>13}"
          f"{'extra MB':>10}{'load':>6}")
    table = [("whyrec.evaluate_ranking", r) for r in rows if r["kind"] == "whyrec"]
    table += [("scoring only (matmul lower bound)", find("scoring_only", [20]))]
    table += [(f"naive argsort (extrap. {args.naive_users})", r) for r in rows if r["kind"] == "naive"]
    for name, r in table:
        cpu = f"{r['cpu_seconds']:>8.2f}" if "cpu_seconds" in r else f"{'-':>8}"
        print(f"{name:<34}{str(tuple(r['ks'])):<14}{r['batch_size']:>6}{r['seconds']:>10.2f}{cpu}"
              f"{r['peak_rss_mb']:>13.0f}{r['peak_extra_mb']:>10.0f}{r['load_average_1min']:>6.1f}")
    summary = {}
    for ks in ([20], [10, 20, 50]):
        fast, naive = find("whyrec", ks, best), find("naive", ks)
        key = "ks=" + ",".join(map(str, ks))
        summary[key] = {"whyrec_seconds": fast["seconds"], "naive_seconds_extrapolated": naive["seconds"],
                        "speedup": naive["seconds"] / fast["seconds"],
                        "naive_agreement_max_abs_diff": naive["agreement_max_abs_diff"],
                        "whyrec_peak_extra_mb": fast["peak_extra_mb"]}
        print(f"{key}: whyrec {fast['seconds']:.2f} s vs naive {naive['seconds']:.1f} s "
              f"(x{summary[key]['speedup']:.1f}); subset metrics agree to "
              f"{naive['agreement_max_abs_diff']:.1e}")
    m = find("whyrec", [10, 20, 50], best)["metrics"]
    print("random-embedding metrics:", {k: round(v, 6) for k, v in m.items()})

    result = {
        "benchmark": "whyrec.evaluate full ranking, Gowalla (LightGCN split), random 64-d embeddings",
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "torch_threads": rows[0]["threads"]},
        "best_batch_size": best,
        "repeat": args.repeat,
        "load_average_after": os.getloadavg(),
        "contended": max(r["load_average_1min"] for r in rows) > (os.cpu_count() or 1),
        "target_seconds": 10.0,
        "meets_target": find("whyrec", [10, 20, 50], best)["seconds"] < 10.0,
        "summary": summary,
        "runs": rows,
        "notes": ("peak_extra_mb = peak RSS (ru_maxrss) minus RSS after loading data and embeddings, "
                  "each run in a fresh process; seconds = best of `repeat` runs (the 2-core machine is shared, "
                  "so timings are noisy: see load_average_1min per run; cpu_seconds = process CPU time); naive seconds extrapolated linearly from a subset; "
                  "a full dense score matrix would need "
                  f"{rows[0]['n_users_total'] * rows[0]['n_items'] * 4 / 1e9:.1f} GB"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
