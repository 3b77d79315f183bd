"""Torch's CSR product (MKL) against whyrec's compiled kernel (``whyrec.spmm``), interleaved in one process.

    python benchmarks/bench_spmm.py                          # Gowalla in its locality order, 20 rounds, 2 threads
    python benchmarks/bench_spmm.py --scale 4M --rounds 7    # a synthetic power-law graph (bench_scale.py's)

The training graph's normalized adjacency ``Â`` in the order a LightGCN step uses (``locality_order(adj,
n_users=U)``), a random ``(N, 64)`` float32 ``X`` and ``Y``. Timed, alternating within every round (the order
rotates each round, so the machine's load hits all alike):

* ``torch_product``: ``Â X`` as ``graph._spmm`` did before the kernel: ``torch.addmm`` with ``beta = 0`` into an
  uninitialised output (MKL);
* ``kernel_product``: ``whyrec.spmm.addmm(Â, X)``;
* ``torch_fused``: ``0.25 Y + Â X`` out of place, ``torch.addmm(Y, Â, X, beta=0.25)`` (a copy of ``Y`` into the
  result, then MKL with ``beta``: Horner's step before);
* ``kernel_fused``: ``whyrec.spmm.addmm(Â, X, Y, beta=0.25)`` (``Y`` read row by row, no copy);
* ``torch_propagation`` / ``kernel_propagation``: the 3-layer ``propagate_final`` forward and its Horner backward
  (what a step propagates), Torch's products against the kernel's;
* ``copy``: ``out.copy_(X)`` -- one read and one write of an ``(N, 64)`` table, the least any product of it moves
  besides ``Â`` itself: a memory-bandwidth reference, not an attainable time.

Reported: medians, the kernel/Torch ratios, and the largest difference of the two products (0 where both sum each
row in storage order). Writes JSON (default ``benchmarks/results/spmm_<scale>.json``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import whyrec.graph as graph  # noqa: E402
from whyrec import spmm  # noqa: E402
from whyrec.graph import heap_only, locality_order, normalized_adjacency, permute_adjacency, propagate_final  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", default="gowalla", help="gowalla, or a bench_scale.py scale (100k, 1M, 4M, 16M)")
    ap.add_argument("--data", default=os.environ.get("WHYREC_GOWALLA", str(ROOT.parent / "shared" / "datasets" / "gowalla")))
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5, help="calls per timing (their mean is one sample)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/spmm_<scale>.json")
    args = ap.parse_args()
    if not spmm.available():
        raise SystemExit("error: whyrec.spmm's kernel did not compile here (no C compiler, or WHYREC_NATIVE=0)")
    torch.set_num_threads(args.threads)
    from _out import write
    from bench_step_ab import load_train

    args.train_npz, args.steps_per_epoch = None, None
    train = load_train(args)
    adj = normalized_adjacency(train)
    adj = permute_adjacency(adj, locality_order(adj, n_users=train.shape[0]))
    n = adj.shape[0]
    gen = torch.Generator().manual_seed(args.seed)
    x, y, g = (torch.randn(n, 64, generator=gen) for _ in range(3))
    buf = torch.empty(n, 64)
    x0 = x.clone().requires_grad_()
    native = graph.native_addmm

    def torch_product():
        out = torch.empty(n, 64)
        torch.addmm(out, adj, x, beta=0.0, out=out)

    def propagation(use_kernel: bool):
        graph.native_addmm = native if use_kernel else (lambda *a, **k: None)
        try:
            x0.grad = None
            propagate_final(adj, x0, 3).backward(g)
        finally:
            graph.native_addmm = native

    cases = {
        "torch_product": torch_product,
        "kernel_product": lambda: spmm.addmm(adj, x),
        "torch_fused": lambda: torch.addmm(y, adj, x, beta=0.25),
        "kernel_fused": lambda: spmm.addmm(adj, x, y, beta=0.25),
        "torch_propagation": lambda: propagation(False),
        "kernel_propagation": lambda: propagation(True),
        "copy": lambda: buf.copy_(x),
    }
    ref = torch.empty(n, 64)
    torch.addmm(ref, adj, x, beta=0.0, out=ref)
    diff = float((spmm.addmm(adj, x) - ref).abs().max())
    diff_fused = float((spmm.addmm(adj, x, y, beta=0.25) - torch.addmm(y, adj, x, beta=0.25)).abs().max())
    times = {k: [] for k in cases}
    load_start = os.getloadavg()
    names = list(cases)
    with heap_only():  # as fit runs its steps
        for f in cases.values():
            f()
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                t = time.perf_counter()
                for _ in range(args.repeat):
                    cases[name]()
                times[name].append((time.perf_counter() - t) / args.repeat)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "scale": args.scale, "n_nodes": n,
        "nnz": int(adj.values().numel()), "dim": 64, "threads": args.threads, "rounds": args.rounds,
        "repeat": args.repeat, "s_median": med, "s_all": times,
        "kernel_over_torch": {"product": med["kernel_product"] / med["torch_product"],
                              "fused": med["kernel_fused"] / med["torch_fused"],
                              "propagation": med["kernel_propagation"] / med["torch_propagation"]},
        "kernel_product_over_copy": med["kernel_product"] / med["copy"],
        "max_abs_diff": {"product": diff, "fused": diff_fused},
        "load_average_start": list(load_start), "load_average_end": list(os.getloadavg()),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "torch": torch.__version__,
    }
    for k, v in med.items():
        print(f"{k:20s} {v * 1e3:8.2f} ms")
    print("kernel / torch:", {k: round(v, 3) for k, v in result["kernel_over_torch"].items()}, "max |diff|:",
          result["max_abs_diff"])
    write(args.out or ROOT / "benchmarks" / "results" / f"spmm_{args.scale}.json", result)


if __name__ == "__main__":
    main()
