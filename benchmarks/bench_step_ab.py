"""The fast preset's LightGCN step, two implementations side by side in one process.

    python benchmarks/bench_step_ab.py --base d925a73                 # Gowalla, 30 rounds
    python benchmarks/bench_step_ab.py --base d925a73 --scale 1M      # a synthetic power-law graph

``--base REV``'s ``whyrec`` package is extracted with ``git archive`` and imported as
``whyrec_base`` next to the working tree's ``whyrec``. Both build LightGCN (dim 64, 3 layers) from
the same layer-0 weights and take the fast preset's step (batch 65,536, Adam lr 3e-2, L2 1e-4,
positives per uniform user: ``benchmarks/gowalla_quality.py --preset fast``) on the same batches,
alternating base, new, base, new ... (the order flips every round), so a shared machine's load
hits both alike; each with fused Adam where its revision's ``fit`` uses it, the timed steps inside
``whyrec.graph.heap_only`` as ``fit``'s epochs are (before 2026-12-03 the script took plain Adam and no
heap_only: its epoch estimates were ~10-20 % above ``fit``'s). Reported: the median seconds per step of
each, their ratio, an epoch estimate
(steps per epoch × median step) and the largest relative difference of the two losses over the
steps (both models train on, so this checks the same training per step). Writes JSON.

``--steps-per-epoch S``: batches of ``ceil(n_train / S)`` instead of 65,536 (``bench_scale.py
--steps-per-epoch``). ``--malloc-ab``: glibc's mmap is switched per step: on (its default,
``M_MMAP_MAX`` 65,536) before each base step, off (``M_MMAP_MAX`` 0, :func:`whyrec.graph.tune_malloc`)
before each new step. Malloc is process-wide and a heap keeps what a step freed, so the base steps
reuse the blocks the new steps left in the heap and the ratio comes out ~1.0 (0.98-1.03 measured):
compare malloc settings with ``bench_malloc_ab.py`` (alternating processes) instead. ``--sample-rounds R``: also time R epochs of negative sampling of each revision
(``UniformNegativeSampler.sample_epoch``, positives per uniform user), interleaved, and check that
both draw the same samples. ``--memory-rounds M``: after the timing, M more steps of each, alternating,
each with glibc's mmap on and the process's peak resident memory reset before it (``malloc_trim``,
``/proc/self/clear_refs``): the step's peak above the memory before it (blocks under glibc's mmap threshold
may be reused from the heap by either side, so this is a lower bound of each). ``--train-npz F``: the training matrix from ``scipy.sparse.save_npz``
instead of drawing it. ``--new-propagation-dtype bfloat16``: the working tree's model with that
``LightGCNConfig.propagation_dtype`` (its losses then differ from the base's by the rounding). ``--fit-rounds R``: also R alternating whole ``fit`` runs of each revision
(``--fit-epochs`` epochs, the fast preset's settings, no evaluation): each epoch as ``fit`` times it
(sampling, ``heap_only``, the steps), the first of every run left out.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")

FAST = {"batch_size": 65536, "lr": 3e-2, "reg": 1e-4}


#: absolute references to the package inside its own code (imports, module names in strings such as
#: ``"whyrec.explain.history"``): renamed in the extracted copy so that it imports its own modules
_ABSOLUTE = re.compile(r"(?<=[\s\"'(])whyrec(?=[.:]\w)|(?<=import )whyrec\b|(?<=from )whyrec\b")


def import_revision(rev: str, into: Path):
    """``rev``'s ``whyrec`` package as the module ``whyrec_base``, next to the working tree's
    ``whyrec``: extracted with ``git archive``, its absolute self-references renamed."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "whyrec"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "whyrec").rename(into / "whyrec_base")
    for py in (into / "whyrec_base").rglob("*.py"):
        py.write_text(_ABSOLUTE.sub("whyrec_base", py.read_text()))
    sys.path.insert(0, str(into))
    return importlib.import_module("whyrec_base")


def load_train(args):
    if args.train_npz:
        import scipy.sparse as sp

        return sp.load_npz(args.train_npz).tocsr()
    if args.scale == "gowalla":
        from bench_lightgcn_epoch import load_gowalla

        return load_gowalla(Path(args.data))
    from bench_scale import SCALES

    from whyrec.data.splits import official_split
    from whyrec.data.synthetic import power_law

    n_users, n_items, n = SCALES[args.scale]
    data = power_law(n_users, n_items, n, exponent=1.0, seed=args.seed)
    return official_split(data).matrices(data)[0]


def set_mmap(on: bool) -> None:
    """glibc's ``M_MMAP_MAX``: its default (65,536) or 0 (no mmap'd blocks)."""
    import ctypes

    ctypes.CDLL("libc.so.6").mallopt(-4, 65536 if on else 0)


def make_step(pkg, train, weights, users, pos, neg, reg, bs, **config):
    import torch

    models = importlib.import_module(pkg.__name__ + ".models")
    loop = importlib.import_module(pkg.__name__ + ".train.loop")
    model = models.LightGCN(*train.shape, models.LightGCNConfig(dim=64, n_layers=3, **config), graph=train)
    model.load_state_dict(weights)
    model.train()
    # the optimizer as fit has it (fused Adam), where the revision does
    opt = loop._adam(model.parameters(), FAST["lr"]) if hasattr(loop, "_adam") else \
        torch.optim.Adam(model.parameters(), lr=FAST["lr"])
    objective = loop.BPR()  # its terms() only read config.reg: the loss as fit computes it, revision by revision
    objective.config = loop.TrainConfig(reg=reg)

    def step(b: int) -> float:
        sl = slice((b * bs) % len(users), (b * bs) % len(users) + bs)
        loss = objective.terms(model.batch_embeddings(users[sl], pos[sl], neg[sl]))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def fit_epochs(pkg, train, weights, bs: int, args, **config) -> list:
    """Seconds of each epoch but the first (its node order, compilation) of ``pkg``'s ``fit`` with the fast
    preset's settings (cosine over ``--fit-epochs``, positives per uniform user, no evaluation)."""
    models = importlib.import_module(pkg.__name__ + ".models")
    loop = importlib.import_module(pkg.__name__ + ".train.loop")
    model = models.LightGCN(*train.shape, models.LightGCNConfig(dim=64, n_layers=3, **config), graph=train)
    model.load_state_dict(weights)
    cfg = loop.TrainConfig(epochs=args.fit_epochs, lr=FAST["lr"], reg=FAST["reg"], batch_size=bs, seed=args.seed,
                           num_threads=args.threads, lr_schedule="cosine", lr_min=0.0, positives="users",
                           eval_every=10**9, patience=None)
    return [row["seconds"] for row in loop.fit(model, train, None, cfg, progress=False).epochs[1:]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="HEAD~1", help="git revision to compare the working tree with")
    ap.add_argument("--scale", default="gowalla", help="gowalla, or a bench_scale.py scale (100k, 1M, 4M, 16M)")
    ap.add_argument("--data", default=os.environ.get("WHYREC_GOWALLA", str(ROOT.parent / "shared" / "datasets" / "gowalla")))
    ap.add_argument("--rounds", type=int, default=30, help="timed steps of each implementation")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--steps-per-epoch", type=int, default=None, help="batch ceil(n_train / S) instead of 65,536")
    ap.add_argument("--malloc-ab", action="store_true", help="mmap on for the base steps, off for the new ones")
    ap.add_argument("--sample-rounds", type=int, default=0, help="also time this many epochs of sampling of each")
    ap.add_argument("--memory-rounds", type=int, default=0,
                    help="after the timing, this many more steps of each with the step's peak memory above the "
                         "resident memory before it (mmap on, so freed big blocks leave; Linux /proc)")
    ap.add_argument("--fit-rounds", type=int, default=0,
                    help="also this many alternating whole fits of each (--fit-epochs epochs, fit's own loop)")
    ap.add_argument("--fit-epochs", type=int, default=6, help="epochs of each --fit-rounds fit (the first not counted)")
    ap.add_argument("--new-propagation-dtype", choices=["float32", "bfloat16"], default=None,
                    help="LightGCNConfig.propagation_dtype of the working tree's side only (the base keeps its default)")
    ap.add_argument("--train-npz", default=None, help="training matrix saved with scipy.sparse.save_npz")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "step_ab.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from procmem import peak_since_mb, rss_mb

    import torch

    import whyrec
    from whyrec.train.sampling import UniformNegativeSampler

    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    base = import_revision(args.base, Path(tmp.name))
    train = load_train(args)
    torch.manual_seed(args.seed)
    from whyrec.models import LightGCN, LightGCNConfig

    weights = LightGCN(*train.shape, LightGCNConfig(dim=64, n_layers=3)).state_dict()
    load_start = os.getloadavg()
    sample_times = {"base": [], "new": []}
    if args.sample_rounds:
        base_sampling = importlib.import_module(base.__name__ + ".train.sampling")
        samplers = {"base": base_sampling.UniformNegativeSampler(train, seed=args.seed, positives="users"),
                    "new": UniformNegativeSampler(train, seed=args.seed, positives="users")}
        drawn = {}
        for r in range(args.sample_rounds):
            for name in (("base", "new") if r % 2 else ("new", "base")):
                t = time.perf_counter()
                drawn[name] = samplers[name].sample_epoch(r + 1)
                sample_times[name].append(time.perf_counter() - t)
            same_samples = all((a == b).all() for a, b in zip(drawn["base"], drawn["new"]))
            if not same_samples:
                raise SystemExit(f"the two samplers drew different samples in epoch {r + 1}")
        del drawn, samplers
    users, pos, neg = (torch.from_numpy(a) for a in UniformNegativeSampler(train, seed=args.seed, positives="users")
                       .sample_epoch(1))
    bs = math.ceil(len(users) / args.steps_per_epoch) if args.steps_per_epoch else FAST["batch_size"]
    new_config = {"propagation_dtype": args.new_propagation_dtype} if args.new_propagation_dtype else {}
    configs = {"base": {}, "new": new_config}
    steps = {name: make_step(pkg, train, weights, users, pos, neg, FAST["reg"], bs, **configs[name]) for name, pkg in
             (("base", base), ("new", whyrec))}
    times = {name: [] for name in steps}
    loss = {name: [] for name in steps}
    from whyrec.graph import heap_only  # the timed steps inside it, as fit runs an epoch (malloc is process-wide)

    with (contextlib.nullcontext() if args.malloc_ab else heap_only()):
        for b in range(args.rounds + 1):  # step 0: warm-up, not timed
            for name in (("base", "new") if b % 2 else ("new", "base")):
                if args.malloc_ab:
                    set_mmap(name == "base")
                t = time.perf_counter()
                loss[name].append(steps[name](b))
                if b:
                    times[name].append(time.perf_counter() - t)
    step_peak = {name: [] for name in steps}
    for r in range(args.memory_rounds):  # after the timing: mmap on, every block of 32 MiB or more freed at once
        for name in (("base", "new") if r % 2 else ("new", "base")):
            set_mmap(True)
            before = rss_mb(trim=True)
            steps[name](args.rounds + 1 + r)
            step_peak[name].append(peak_since_mb() - before)
    fit_epoch_s = {name: [] for name in steps}
    for r in range(args.fit_rounds):  # whole epochs as fit runs them: sampling, heap_only, the steps, the lr schedule
        for name, pkg in ((("base", base), ("new", whyrec)) if r % 2 else (("new", whyrec), ("base", base))):
            fit_epoch_s[name] += fit_epochs(pkg, train, weights, bs, args, **configs[name])
    med = {name: statistics.median(v) for name, v in times.items()}
    steps_per_epoch = math.ceil(train.nnz / bs)
    out = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "base": args.base,
        "base_commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", args.base], capture_output=True,
                                      text=True).stdout.strip(),
        "new": "working tree", "scale": args.scale, "n_users": train.shape[0], "n_items": train.shape[1],
        "n_train": int(train.nnz), "preset": {**FAST, "batch_size": bs}, "threads": args.threads,
        "rounds": args.rounds, "malloc_ab": args.malloc_ab, "new_config": new_config,
        "sample_s_all": sample_times, "sample_s_median": {k: statistics.median(v) for k, v in sample_times.items() if v},
        "s_per_step_median": med, "s_per_step_all": times, "new_over_base": med["new"] / med["base"],
        "steps_per_epoch": steps_per_epoch, "epoch_s_estimate": {k: v * steps_per_epoch for k, v in med.items()},
        "step_peak_extra_mb_median": {k: statistics.median(v) for k, v in step_peak.items() if v},
        "fit_epoch_s_median": {k: statistics.median(v) for k, v in fit_epoch_s.items() if v},
        "fit_new_over_base": (statistics.median(fit_epoch_s["new"]) / statistics.median(fit_epoch_s["base"])
                              if fit_epoch_s["new"] else None),
        "fit_epoch_s_all": fit_epoch_s,
        "step_peak_extra_mb_all": step_peak,
        "loss_max_rel_diff": max(abs(a - b) / abs(a) for a, b in zip(loss["base"], loss["new"])),
        "loss_first_last": {k: [v[0], v[-1]] for k, v in loss.items()},
        "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
    }
    print(json.dumps({k: out[k] for k in ("s_per_step_median", "new_over_base", "epoch_s_estimate", "sample_s_median",
                                          "step_peak_extra_mb_median", "fit_epoch_s_median", "fit_new_over_base",
                                          "loss_max_rel_diff", "load_average_start", "load_average_end")}))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
