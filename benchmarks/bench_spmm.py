"""Torch's CSR product (MKL) against whyrec's compiled kernel (``whyrec.spmm``), interleaved in one process.

    python benchmarks/bench_spmm.py                          # Gowalla in its locality order, 20 rounds, 2 threads
    python benchmarks/bench_spmm.py --scale 4M --rounds 7    # a synthetic power-law graph (bench_scale.py's)
    python benchmarks/bench_spmm.py --base a4fb1f9           # also that revision's kernel, interleaved

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
* ``kernel_tail``: ``0.25 Y + Â X + s ⊙ Z`` written to permuted rows (``z``, ``z_scale``, ``out_rows``: the last
  product of a LightGCN step's backward, which adds the L2 gradient and writes the parameters' order);
* with ``--base REV``: ``base_product``, ``base_fused``, ``base_tail``, ``base_propagation``, the same with
  ``REV``'s ``whyrec.spmm`` (its package extracted as ``bench_step_ab.py`` does, its C compiled into the same
  cache), and the largest difference of its results from the working tree's;
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
    ap.add_argument("--base", default=None, help="also time this git revision's kernel")
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/spmm_<scale>.json")
    args = ap.parse_args()
    if not spmm.available():
        raise SystemExit("error: whyrec.spmm's kernel did not compile here (no C compiler, or WHYREC_NATIVE=0)")
    torch.set_num_threads(args.threads)
    from _out import write
    from bench_step_ab import import_revision, load_train

    args.train_npz, args.steps_per_epoch = None, None
    train = load_train(args)
    adj = normalized_adjacency(train)
    adj = permute_adjacency(adj, locality_order(adj, n_users=train.shape[0]))
    n = adj.shape[0]
    gen = torch.Generator().manual_seed(args.seed)
    x, y, g = (torch.randn(n, 64, generator=gen) for _ in range(3))
    zs, perm = torch.rand(n, generator=gen), torch.randperm(n, generator=gen)
    buf = torch.empty(n, 64)
    x0 = x.clone().requires_grad_()
    native = graph.native_addmm

    def torch_product():
        out = torch.empty(n, 64)
        torch.addmm(out, adj, x, beta=0.0, out=out)

    def propagation(use_kernel, addmm=native):
        graph.native_addmm = addmm if use_kernel else (lambda *a, **k: None)
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
        "kernel_tail": lambda: spmm.addmm(adj, x, y, beta=0.25, z=g, z_scale=zs, out_rows=perm),
        "copy": lambda: buf.copy_(x),
    }
    base_diff = {}
    if args.base:
        import importlib
        import tempfile

        tmp = tempfile.TemporaryDirectory()
        base = importlib.import_module(import_revision(args.base, Path(tmp.name)).__name__ + ".spmm")
        cases.update({
            "base_product": lambda: base.addmm(adj, x),
            "base_fused": lambda: base.addmm(adj, x, y, beta=0.25),
            "base_tail": lambda: base.addmm(adj, x, y, beta=0.25, z=g, z_scale=zs, out_rows=perm),
            "base_propagation": lambda: propagation(True, base.addmm),
        })
        for name in ("product", "fused", "tail"):
            base_diff[name] = float((cases[f"base_{name}"]() - cases[f"kernel_{name}"]()).abs().max())
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
        "base": args.base, "kernel_over_base": {k: med[f"kernel_{k}"] / med[f"base_{k}"] for k in
                                                ("product", "fused", "tail", "propagation")} if args.base else None,
        "max_abs_diff_from_base": base_diff,
        "load_average_start": list(load_start), "load_average_end": list(os.getloadavg()),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "torch": torch.__version__,
    }
    for k, v in med.items():
        print(f"{k:20s} {v * 1e3:8.2f} ms")
    print("kernel / torch:", {k: round(v, 3) for k, v in result["kernel_over_torch"].items()}, "max |diff|:",
          result["max_abs_diff"])
    if args.base:
        print(f"kernel / {args.base}:", {k: round(v, 3) for k, v in result["kernel_over_base"].items()},
              "max |diff|:", base_diff)
    write(args.out or ROOT / "benchmarks" / "results" / f"spmm_{args.scale}.json", result)


if __name__ == "__main__":
    main()
