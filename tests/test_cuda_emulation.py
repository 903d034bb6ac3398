"""Every CUDA kernel, executed without a GPU: the SIMT emulation (tests/emu, docs/ops.md).

The unchanged sources of src/cuda/ are compiled as host C++ against tests/emu/simt.h into a
variant of the native module; within ``harness.emulated`` the ops' CUDA code paths (their glue,
workspace sizes, argument order and stream) run on CPU tensors and are compared with the
pure-PyTorch references, in float32 and float64, on odd shapes up to a reduction's full grid,
with NaN-poisoned, canary-padded outputs, and under forward, reverse and shuffled block/thread
orders that must give bit-identical results. Also: the layer's self-test (deliberately broken
toy kernels it must catch), a quick subset under ASan+UBSan, the launch limits and the stream
check with the real kernels, and the audit fixes (device guard, elites range, sync switch).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastmbrl import _native, ops

sys.path.insert(0, str(Path(__file__).resolve().parent / "emu"))
import harness  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("g++") is None,
                                reason="the SIMT emulation needs cmake and g++")
F32, F64 = torch.float32, torch.float64
TOL = {F64: dict(rtol=1e-10, atol=1e-10), F32: dict(rtol=2e-5, atol=2e-5)}
ORDERS = ((0, 0), (1, 0), (2, 7))  # forward, reverse, shuffled (seed 7)


@pytest.fixture(scope="session")
def emu_module():
    return harness.load(harness.build(targets=("fastmbrl_emu",)))


@pytest.fixture
def emu(emu_module):
    with harness.emulated(emu_module) as e:
        yield e


def _bits(t):
    if isinstance(t, (list, tuple)):
        return [_bits(x) for x in t]
    t = t.detach()
    return t.view(torch.int64) if t.dtype == F64 else (t.view(torch.int32) if t.dtype == F32
                                                       else t)


def _flat(x):
    if isinstance(x, torch.Tensor):
        return [x]
    return [t for item in x for t in _flat(item)]


def run_all_orders(emu, fn, expect_kernels=()):
    """fn() under each order: results bit-identical, free of unwritten (NaN) elements, no
    kernel writes outside an output. Returns the first result."""
    first = None
    for order, seed in ORDERS:
        emu.set_order(order, seed)
        out = fn()
        launched = emu.launches()
        assert launched, "no kernel was launched: the CUDA path did not run"
        for k in expect_kernels:
            assert any(name.startswith(k) for name in launched), (k, launched)
        emu.check_canaries()
        flat = _flat(out)
        for t in flat:
            if t.is_floating_point():
                assert not torch.isnan(t).any(), "an output element was never written"
        if first is None:
            first = flat
        else:
            for a, b in zip(first, flat, strict=True):
                assert torch.equal(_bits(a), _bits(b)), f"order {order} changed the result"
    emu.set_order(0, 0)
    return first


def _rand(*shape, dtype, gen, scale=1.0):
    return (torch.randn(*shape, generator=gen, dtype=F64) * scale).to(dtype)


# ---- the layer itself ---------------------------------------------------------------------------
def test_layer_catches_injected_faults():
    """Missing __syncthreads, missing bounds check, partial-warp masks, an order-dependent race,
    a barrier after an early exit, launch limits, __launch_bounds__, the stream check: the
    layer's self-test (tests/emu/selftest.cu) must tell each broken toy kernel from its fix."""
    out = harness.build(targets=("simt_selftest",))
    run = subprocess.run([str(out / "simt_selftest")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    for caught in ("reverse without __syncthreads: caught", "scale without bounds check: caught",
                   "lanes outside the mask call: caught", "reaching outside the mask: caught",
                   "every thread writes one shared word: caught",
                   "barrier after an early exit: caught"):
        assert caught in run.stdout
    assert "0 failures" in run.stdout


@pytest.mark.slow
def test_sanitizer_subset():
    """ASan+UBSan build: a quick subset of the real kernels against the CPU kernels on
    exact-size buffers, the self-test, and an out-of-bounds toy kernel ASan must report."""
    out = harness.build(sanitize=True, targets=("simt_sanitize", "simt_selftest"))
    env = {"ASAN_OPTIONS": "detect_leaks=0", "PATH": "/usr/bin:/bin"}
    for exe in ("simt_sanitize", "simt_selftest"):
        run = subprocess.run([str(out / exe)], capture_output=True, text=True, timeout=600,
                             env=env)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "0 failures" in run.stdout
    run = subprocess.run([str(out / "simt_selftest"), "oob"], capture_output=True, text=True,
                         timeout=300, env=env)
    assert run.returncode != 0 and "heap-buffer-overflow" in run.stderr, run.stderr[-2000:]


def test_launch_limit_and_stream_checked_with_a_real_kernel(emu_module):
    m = emu_module
    s = m.emu_caller_stream()
    # 65536 column tiles of 64 on grid.y: the launch is refused before any memory is touched
    with pytest.raises(RuntimeError, match="invalid configuration.*grid.y"):
        m.rollout_layer_cuda(1, 8, 8, 8, 1, 1, 0, 0, 8, 8, 8, 1, 65536 * 64, 8, 8, 8, 8, 1, 1, 0,
                             8, s)
    x = torch.randn(4, 8, dtype=F64)
    out = torch.empty(4, dtype=F64)
    ws = torch.empty(64, dtype=F64)
    args = (1, x.data_ptr(), x.data_ptr(), x.data_ptr(), False, 4, 8, False, out.data_ptr(),
            ws.data_ptr())
    with pytest.raises(RuntimeError, match="stream"):
        m.gaussian_nll_forward_cuda(*args, 0)  # the default stream, not the caller's
    m.gaussian_nll_forward_cuda(*args, s)
    want = ops.gaussian_nll_reference(x.view(4, 1, 8), x.view(4, 1, 8), x.view(4, 1, 8), "member")
    torch.testing.assert_close(out, want)


def test_routing_is_test_only(emu_module):
    """Outside the ``emulated`` block CPU tensors take the CPU kernels again."""
    x = torch.randn(2, 3, 4, dtype=F64)
    with harness.emulated(emu_module) as emu:
        ops.gaussian_nll(x, x, x, "member", backend="native")
        assert emu.launches()
    ops.gaussian_nll(x, x, x, "member", backend="native")
    assert emu_module.emu_take_launch_log() == ""
    assert _native._C is not emu_module


# ---- gaussian_nll -------------------------------------------------------------------------------
NLL_SHAPES = [(1, 1, 1), (3, 7, 5), (2, 33, 31), (1, 4099, 65)]  # last: the full reduction grid


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", NLL_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("shared", [False, True], ids=["own", "shared"])
def test_gaussian_nll(emu, dtype, shape, shared, gen):
    E, B, D = shape
    mean = harness.padded(_rand(E, B, D, dtype=dtype, gen=gen)).requires_grad_()
    logvar = harness.padded(_rand(E, B, D, dtype=dtype, gen=gen, scale=0.5)).requires_grad_()
    target = harness.padded(_rand(*((B, D) if shared else (E, B, D)), dtype=dtype, gen=gen))
    target.requires_grad_()
    reductions = ("member", "none") if B * D < 10000 else ("member",)
    for reduction in reductions:
        def run(reduction=reduction):
            out = ops.gaussian_nll(mean, logvar, target, reduction, backend="native")
            g = torch.autograd.grad(out.sum(), (mean, logvar, target))
            return [out.detach(), *g]

        got = run_all_orders(emu, run, ("nll_",))
        want = ops.gaussian_nll_reference(mean, logvar, target, reduction)
        gw = torch.autograd.grad(want.sum(), (mean, logvar, target))
        for a, b in zip(got, [want.detach(), *gw], strict=True):
            torch.testing.assert_close(a, b, **TOL[dtype])


def test_gaussian_nll_members_above_grid_limit(emu):
    x = torch.zeros(65536, 1, 1)
    with pytest.raises(ValueError, match="E \\(ensemble size\\) = 65536 is above 65,535"):
        ops.gaussian_nll(x, x, x, "member", backend="native")
    ops.gaussian_nll(x, x, x, "none", backend="native")  # elementwise: a 1-D grid, no limit
