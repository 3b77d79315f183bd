"""The BPR loss of a final table and its gradient: the compiled pass against the chunked Torch pass and
autograd through gathered rows, on real Gowalla batches, one process, interleaved.

    python benchmarks/bench_bpr_pass.py                      # batches of 65,536 and 202,532, 20 rounds
    python benchmarks/bench_bpr_pass.py --batch 810128 --rounds 10
    python benchmarks/bench_bpr_pass.py --base 55d4ef9          # also that revision's kernel, interleaved

The table is Gowalla's ``(111,820, 64)`` float32 final table (users and items) in the locality order (random values: the cost
does not depend on them), the triples the epoch-0 samples of the fast preset's sampler (positives per uniform
user), mapped into that order as a training step does. Three ways to the same loss and ``∂L/∂table``:

* ``kernel``: :func:`whyrec.train.bpr_kernel.bpr_table_loss_grad` (what a CPU step uses);
* ``torch``: ``bpr_loss_table(..., kernel=False)``, 65,536 triples at a time with ``index_select`` /
  ``index_add_``;
* ``autograd``: the three gathered ``(b, d)`` blocks, ``bpr_loss`` and ``backward`` (the gathered-rows path);
* ``base`` (with ``--base REV``): ``REV``'s ``bpr_table_loss_grad``, its package extracted as
  ``bench_step_ab.py`` does.

Also timed, as a floor: one ``index_select`` of as many rows as the pass reads (``3b``) — the gathers alone,
without the margins and without adding the gradient rows (which the pass does too: it moves ~3x those bytes).
Timed inside :func:`whyrec.graph.heap_only`, as ``fit``'s epochs are (before 2026-12-04 outside it: every
``(N, d)`` result then paid its page faults). Reported: medians, ratios to the kernel, the largest differences of loss and gradient from the kernel's, the
load average. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from whyrec.data import load_dataset  # noqa: E402
from whyrec.data.splits import official_split  # noqa: E402
from whyrec.graph import heap_only, locality_order, normalized_adjacency  # noqa: E402
from whyrec.train import UniformNegativeSampler, bpr_loss  # noqa: E402
from whyrec.train.bpr_kernel import bpr_table_loss_grad  # noqa: E402
from whyrec.train.losses import bpr_loss_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("WHYREC_GOWALLA", str(ROOT.parent / "shared" / "datasets" / "gowalla")))
    ap.add_argument("--batch", type=int, nargs="+", default=[65_536, 202_532])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base", default=None, help="also time this git revision's compiled pass")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bpr_pass.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if args.base:
        import importlib
        import tempfile

        from bench_step_ab import import_revision

        tmp = tempfile.TemporaryDirectory()
        base_kernel = importlib.import_module(import_revision(args.base, Path(tmp.name)).__name__
                                              + ".train.bpr_kernel").bpr_table_loss_grad
    data = load_dataset("gowalla", args.data)
    train, _, _ = official_split(data).matrices(data)
    n_users = train.shape[0]
    n = n_users + train.shape[1]
    order = locality_order(normalized_adjacency(train)).numpy()
    rank = np.empty_like(order)
    rank[order] = np.arange(n)
    u, i, j = UniformNegativeSampler(train, seed=0, positives="users").sample_epoch(0)
    table = (0.1 * torch.randn(n, 64, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    load_start = os.getloadavg()
    results = []
    for b in args.batch:
        if b > len(u):
            ap.error(f"--batch {b} is more than the epoch's {len(u)} triples")
        U, I, J = (torch.from_numpy(rank[a[:b] + off]) for a, off in ((u, 0), (i, n_users), (j, n_users)))

        def kernel():
            return bpr_table_loss_grad(table, U, I, J)

        def chunked():
            loss = bpr_loss_table(table, U, I, J, kernel=False)
            return loss.detach(), torch.autograd.grad(loss, table)[0]

        def gathered():
            eu, ei, ej = table[U], table[I], table[J]
            loss = bpr_loss((eu * ei).sum(1), (eu * ej).sum(1))
            return loss.detach(), torch.autograd.grad(loss, table)[0]

        rows = torch.cat([U, I, J])
        detached = table.detach()

        def gathers_only():
            return detached.index_select(0, rows), None

        fns = {"kernel": kernel, "torch": chunked, "autograd": gathered, "gathers_only": gathers_only}
        if args.base:
            fns["base"] = lambda: base_kernel(table, U, I, J)
        ref_loss, ref_grad = kernel()
        diffs = {}
        for name in ("torch", "autograd", *(["base"] if args.base else [])):
            loss, grad = fns[name]()
            diffs[name] = {"loss_rel": abs(float(loss) - float(ref_loss)) / abs(float(ref_loss)),
                           "grad_max_abs": float((grad - ref_grad).abs().max()),
                           "grad_max": float(ref_grad.abs().max())}
        for f in fns.values():  # warm-up (the kernel is compiled, or loaded from numba's cache, above)
            f()
        times = {k: [] for k in fns}
        with heap_only():  # as fit's epochs run: freed tables stay in the heap, no page faults on reuse
            for r in range(args.rounds):
                for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                    t0 = time.perf_counter()
                    fns[k]()
                    times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"batch": b, "median_ms": {k: round(1e3 * v, 2) for k, v in med.items()},
               "over_kernel": {k: round(v / med["kernel"], 3) for k, v in med.items()},
               "ns_per_triple_kernel": round(1e9 * med["kernel"] / b, 1), "differences_from_kernel": diffs}
        print(json.dumps(row), flush=True)
        results.append(row)
    out = {"command": "python " + " ".join(sys.argv), "base": args.base, "n_nodes": n, "dim": 64, "threads": args.threads,
           "rounds": args.rounds, "results": results, "load_average_start": load_start,
           "load_average_end": os.getloadavg(),
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
