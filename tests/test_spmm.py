"""The compiled CSR product (:mod:`whyrec.spmm`): equal to numpy's dense product and to Torch's CSR product on
small graphs with empty rows and on MovieLens-100K's adjacency, at every width and thread count; in place and out
of place; refuses what it cannot do (autograd inputs, an output overlapping ``x``, int64 indices, float64); and the
library falls back to Torch's product when the kernel is switched off or cannot be compiled."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from whyrec import spmm
from whyrec.graph import normalized_adjacency, propagate_final

from conftest import ROOT
from test_training import ml100k_split  # noqa: F401  (fixture)

HAS_CC = any(shutil.which(c) for c in ("cc", "gcc", "clang"))
needs_kernel = pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")


def _csr(dense: np.ndarray) -> torch.Tensor:
    m = sp.csr_matrix(dense.astype(np.float32))
    return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int32)), torch.from_numpy(m.indices.astype(np.int32)),
                                   torch.from_numpy(m.data), size=m.shape, check_invariants=False)


def _random(n, m, density, seed):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n, m)) < density) * rng.standard_normal((n, m))
    dense[::7] = 0.0  # empty rows, among them the first
    return dense.astype(np.float32)


@needs_kernel
def test_kernel_compiles_here():
    assert spmm.available()


@needs_kernel
@pytest.mark.parametrize("d", [1, 7, 16, 32, 64, 100, 128, 130])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_product_equals_dense(d, threads):
    """``alpha Â x`` and ``beta y + alpha Â x`` against float64 numpy, on 1-3 threads, every specialised width and
    odd ones (the generic 16-column blocks and their remainder)."""
    dense = _random(301, 257, 0.05, seed=d)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((257, d)).astype(np.float32)
    y = rng.standard_normal((301, d)).astype(np.float32)
    adj = _csr(dense)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        spmm.MIN_ENTRIES_PER_THREAD, keep = 1, spmm.MIN_ENTRIES_PER_THREAD  # split even this small product
        got = spmm.addmm(adj, torch.from_numpy(x), alpha=-1.5)
        got_y = spmm.addmm(adj, torch.from_numpy(x), torch.from_numpy(y), beta=0.25, alpha=2.0)
    finally:
        spmm.MIN_ENTRIES_PER_THREAD = keep
        torch.set_num_threads(old)
    want = -1.5 * dense.astype(np.float64) @ x
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_y.numpy(), 0.25 * y + 2.0 * dense.astype(np.float64) @ x, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_in_place_accumulation_and_beta_zero_ignores_y():
    """``out=y`` adds into ``y`` itself; with ``beta = 0`` the NaNs of an uninitialised ``y`` do not leak (BLAS's
    rule, which Torch's product keeps too)."""
    dense = _random(50, 40, 0.2, seed=3)
    adj = _csr(dense)
    x = torch.randn(40, 64)
    y = torch.randn(50, 64)
    want = 0.5 * y.numpy() + dense @ x.numpy()
    out = spmm.addmm(adj, x, y, beta=0.5, out=y)
    assert out is y
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-5)
    nan = torch.full((50, 64), float("nan"))
    got = spmm.addmm(adj, x, nan, beta=0.0)
    assert not got.isnan().any()
    np.testing.assert_allclose(got.numpy(), dense @ x.numpy(), rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("d", [64, 7])
def test_row_scaled_term_and_permuted_output(d):
    """``z_scale[:, None] · z`` added and row ``r`` written to ``out_rows[r]``, on 2 threads, against numpy; an
    ``out`` that is ``y`` with ``out_rows``, or overlaps ``z``, is refused (rows would be read after their
    overwrite)."""
    dense = _random(120, 90, 0.1, seed=d)
    adj = _csr(dense)
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.standard_normal((90, d)).astype(np.float32))
    y, z = (torch.from_numpy(rng.standard_normal((120, d)).astype(np.float32)) for _ in range(2))
    zs = torch.from_numpy(rng.standard_normal(120).astype(np.float32))
    perm = torch.from_numpy(rng.permutation(120))
    old, keep = torch.get_num_threads(), spmm.MIN_ENTRIES_PER_THREAD
    torch.set_num_threads(2)
    spmm.MIN_ENTRIES_PER_THREAD = 1
    try:
        got = spmm.addmm(adj, x, y, beta=0.5, alpha=2.0, z=z, z_scale=zs, out_rows=perm)
        plain = spmm.addmm(adj, x, z=z, z_scale=zs)
    finally:
        torch.set_num_threads(old)
        spmm.MIN_ENTRIES_PER_THREAD = keep
    want = 0.5 * y.numpy() + 2.0 * dense.astype(np.float64) @ x.numpy() + zs.numpy()[:, None] * z.numpy()
    out = np.empty_like(want)
    out[perm.numpy()] = want
    np.testing.assert_allclose(got.numpy(), out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(plain.numpy(), dense @ x.numpy() + zs.numpy()[:, None] * z.numpy(), rtol=1e-5,
                               atol=1e-5)
    assert spmm.addmm(adj, x, y, beta=0.5, out=y, out_rows=perm) is None
    assert spmm.addmm(adj, x, z=z, z_scale=zs, out=z) is None
    assert spmm.addmm(adj, x, z=z, z_scale=zs[:5]) is None
    assert spmm.addmm(adj, x, out_rows=perm.int()) is None


@needs_kernel
@pytest.mark.parametrize("d", [64, 7])
def test_bfloat16_rows_in_and_out(d):
    """A bfloat16 ``x`` is gathered as such and summed in float32 (the float64 product of the rounded rows); a
    bfloat16 ``out`` is the float32 result rounded to nearest even, bit for bit as Torch rounds it; NaN stays
    NaN."""
    dense = _random(150, 110, 0.08, seed=d + 1)
    adj = _csr(dense)
    rng = np.random.default_rng(6)
    x = torch.from_numpy(rng.standard_normal((110, d)).astype(np.float32))
    y = torch.from_numpy(rng.standard_normal((150, d)).astype(np.float32))
    xb = x.to(torch.bfloat16)
    got = spmm.addmm(adj, xb, y, beta=0.5, alpha=2.0)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), 2.0 * dense.astype(np.float64) @ xb.double().numpy() + 0.5 * y.numpy(),
                               rtol=1e-5, atol=1e-5)
    full = spmm.addmm(adj, x, y, beta=0.5, alpha=2.0)
    low = spmm.addmm(adj, x, y, beta=0.5, alpha=2.0, out_dtype=torch.bfloat16)
    assert low.dtype == torch.bfloat16 and torch.equal(low, full.to(torch.bfloat16))
    x[3, 0] = float("nan")
    nan_rows = torch.from_numpy(dense[:, 3] != 0)
    low = spmm.addmm(adj, x, out_dtype=torch.bfloat16)
    assert low[nan_rows, 0].isnan().all() and not low[~nan_rows, 0].isnan().any()
    assert spmm.addmm(adj, x, y, beta=0.5, out=y.view(torch.bfloat16).view(-1)[: 150 * d].view(150, d)) is None


@needs_kernel
@pytest.mark.parametrize("d", [64, 7])
def test_large_results_are_streamed_with_the_same_values(d):
    """A result of 8 MiB or more (``STREAM_BYTES`` in ``spmm.c``: written with non-temporal stores, ``y``/``z``
    prefetched with the non-temporal hint) has the bits of the same rows computed as a result below that size
    (plain stores), plain, fused with ``y`` and in bfloat16; with ``z`` and a permuted output it equals float64
    numpy; on 2 threads; at 7 columns (no whole vectors) the plain stores are taken."""
    n, m = (2 ** 23) // (4 * d) + 100, 4000
    rng = np.random.default_rng(11)
    a = sp.random(n, m, density=12 / m, format="csr", dtype=np.float32, random_state=rng)
    csr = lambda b: torch.sparse_csr_tensor(torch.from_numpy(b.indptr.astype(np.int32)),  # noqa: E731
                                            torch.from_numpy(b.indices.astype(np.int32)), torch.from_numpy(b.data),
                                            size=b.shape, check_invariants=False)
    adj, half = csr(a), csr(a[: n // 2])
    x = torch.from_numpy(rng.standard_normal((m, d)).astype(np.float32))
    y, z = (torch.from_numpy(rng.standard_normal((n, d)).astype(np.float32)) for _ in range(2))
    zs = torch.from_numpy(rng.standard_normal(n).astype(np.float32))
    perm = torch.from_numpy(rng.permutation(n))
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        big = [spmm.addmm(adj, x), spmm.addmm(adj, x, y, beta=0.5, alpha=2.0),
               spmm.addmm(adj, x, y, beta=0.5, alpha=2.0, out_dtype=torch.bfloat16)]
        small = [spmm.addmm(half, x), spmm.addmm(half, x, y[: n // 2], beta=0.5, alpha=2.0),
                 spmm.addmm(half, x, y[: n // 2], beta=0.5, alpha=2.0, out_dtype=torch.bfloat16)]
        fused = spmm.addmm(adj, x, y, beta=0.5, alpha=2.0, z=z, z_scale=zs, out_rows=perm)
    finally:
        torch.set_num_threads(old)
    assert big[0].numel() * 4 >= 2 ** 23 > small[0].numel() * 4
    for b, s_ in zip(big, small):
        assert torch.equal(b[: n // 2], s_)
    assert big[2].dtype == torch.bfloat16 and torch.equal(big[2], big[1].to(torch.bfloat16))
    want = 0.5 * y.numpy() + 2.0 * (a.astype(np.float64) @ x.numpy()) + zs.numpy()[:, None] * z.numpy()
    out = np.empty_like(want)
    out[perm.numpy()] = want
    np.testing.assert_allclose(fused.numpy(), out, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("threads", [1, 3])
def test_gather_in_order_with_its_weighted_norm(threads):
    """``gather_in_order``: the rows of ``cat([users, items])[order]`` bit for bit, ``Σ count ‖row‖²`` against
    float64, the bfloat16 copy as Torch rounds it; tables that need autograd, float64 ones and a wrong
    ``count`` are refused (``None``)."""
    gen = torch.Generator().manual_seed(4)
    users, items = torch.randn(700, 64, generator=gen), torch.randn(1300, 64, generator=gen)
    order = torch.cat([torch.randperm(700, generator=gen), 700 + torch.randperm(1300, generator=gen)])
    count = torch.randint(0, 5, (2000,), generator=gen).float()
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x0, sq, x16 = spmm.gather_in_order(users, items, order, count, bf16=True)
        plain = spmm.gather_in_order(users, items, order, count)
    finally:
        torch.set_num_threads(old)
    want = torch.cat([users, items])[order]
    assert torch.equal(x0, want) and torch.equal(x16, want.to(torch.bfloat16))
    assert plain[2] is None and torch.equal(plain[0], want)
    ref = float((count.double() * want.double().square().sum(1)).sum())
    assert float(sq) == pytest.approx(ref, rel=1e-6)
    assert spmm.gather_in_order(users.requires_grad_(), items, order, count) is None
    assert spmm.gather_in_order(users.detach().double(), items.double(), order, count) is None
    assert spmm.gather_in_order(users.detach(), items, order, count[:5]) is None


@needs_kernel
def test_refuses_what_it_cannot_do():
    """``None`` (the caller then uses Torch) for inputs that need autograd, an ``out`` overlapping ``x``, int64
    indices, float64 values, a non-CSR matrix and mismatched shapes."""
    dense = _random(30, 30, 0.2, seed=4)
    adj = _csr(dense)
    x = torch.randn(30, 8, requires_grad=True)
    assert spmm.addmm(adj, x) is None
    with torch.no_grad():
        assert spmm.addmm(adj, x) is not None
    x = torch.randn(30, 8)
    assert spmm.addmm(adj, x, out=x) is None
    assert spmm.addmm(adj, x, out=torch.empty(30, 8)) is not None
    wide = torch.sparse_csr_tensor(adj.crow_indices().long(), adj.col_indices().long(), adj.values(), size=adj.shape,
                                   check_invariants=False)
    assert spmm.addmm(wide, x) is None
    assert spmm.addmm(adj.to(torch.float64), x.double()) is None
    assert spmm.addmm(adj.to_dense(), x) is None
    assert spmm.addmm(adj, torch.randn(29, 8)) is None
    assert spmm.addmm(adj, x, torch.randn(30, 9), beta=1.0) is None


@needs_kernel
def test_ml100k_products_equal_torchs(ml100k_split):  # noqa: F811
    """MovieLens-100K's normalized adjacency (2 threads): the kernel's product and its fused ``beta y + Â x`` equal
    Torch's (MKL's) CSR product to float rounding, and the whole propagation with its Horner backward equals
    float64's."""
    train, _ = ml100k_split
    adj = normalized_adjacency(train)
    assert adj.crow_indices().dtype == torch.int32
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(adj.shape[0], 64, generator=gen)
    y = torch.randn(adj.shape[0], 64, generator=gen)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.testing.assert_close(spmm.addmm(adj, x), torch.sparse.mm(adj, x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(spmm.addmm(adj, x, y, beta=0.3, alpha=0.7),
                                   torch.addmm(y, adj, x, beta=0.3, alpha=0.7), rtol=1e-5, atol=1e-6)
        x0 = x.clone().requires_grad_()
        out = propagate_final(adj, x0, 3)
        out.backward(y)
    finally:
        torch.set_num_threads(old)
    adj64 = normalized_adjacency(train, dtype=torch.float64)
    x64 = x.double().requires_grad_()
    ref = propagate_final(adj64, x64, 3)
    ref.backward(y.double())
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x0.grad.double(), x64.grad, rtol=1e-5, atol=1e-6)


_PROBE = ("import torch, scipy.sparse as sp, whyrec.spmm as s; from whyrec.graph import normalized_adjacency, "
          "propagate_final; R = sp.random(40, 30, density=0.2, format='csr', random_state=0); R.data[:] = 1; "
          "a = normalized_adjacency(R); x = torch.randn(70, 8); ref = torch.sparse.mm(a, torch.sparse.mm(a, x)); "
          "out = propagate_final(a, x, 2, alphas=[0.0, 0.0, 1.0]); "
          "from whyrec.train.bpr_kernel import supports; "
          "print(s.available(), supports(torch.zeros(2, 2)), float((out - ref).abs().max()))")


@pytest.mark.parametrize("env", [{"WHYREC_NATIVE": "0"}, {"CC": "false"}], ids=["switched-off", "no-compiler"])
def test_falls_back_to_torch(env, tmp_path):
    """Switched off, or with a compiler that fails (and no library cached): no kernels (the product's, the BPR
    pass's), the same products."""
    full = {**os.environ, "WHYREC_CACHE": str(tmp_path), **env}
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=full, cwd=ROOT,
                         check=True)
    ok, bpr, err = out.stdout.split()
    assert ok == bpr == "False" and float(err) < 1e-5, out.stdout + out.stderr
    assert not list(tmp_path.rglob("*.so"))


@needs_kernel
def test_compiles_into_its_cache_once(tmp_path):
    """A fresh cache: the library is compiled there, and a second process loads it without compiling again."""
    env = {**os.environ, "WHYREC_CACHE": str(tmp_path)}
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, cwd=ROOT,
                             check=True)
        ok, bpr, err = out.stdout.split()
        assert ok == bpr == "True" and float(err) < 1e-5
    assert len(list((tmp_path / "kernels").glob("bpr-*.so"))) == 1
    libs = list((tmp_path / "kernels").glob("spmm-*.so"))
    assert len(libs) == 1
    mtime = libs[0].stat().st_mtime_ns
    subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, env=env, cwd=ROOT, check=True)
    assert libs[0].stat().st_mtime_ns == mtime
