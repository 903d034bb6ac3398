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

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastmbrl import _native, ops
from fastmbrl.ops import _library, mlp
from fastmbrl.ops.termination import TerminationRule

sys.path.insert(0, str(Path(__file__).resolve().parent / "emu"))
import harness  # noqa: E402

# CI sets FASTMBRL_EMU_REQUIRED=1: there a missing toolchain fails instead of skipping.
pytestmark = pytest.mark.skipif(
    os.environ.get("FASTMBRL_EMU_REQUIRED") != "1"
    and (shutil.which("cmake") is None or shutil.which("g++") is None),
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
NLL_SHAPES = [(1, 1, 1), (3, 7, 5), (2, 33, 31), (1, 4099, 65)]  # last: the full grid (256 blocks)


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


# ---- ensemble_mlp (forward, backward, Gaussian head) --------------------------------------------
MLP_CASES = [  # E, B, widths, shared x, head
    (1, 1, [1, 1, 2], False, True),
    (3, 37, [23, 70, 36], False, True),
    (2, 130, [5, 67, 9], True, False),
    (2, 65, [17, 3, 12], True, True),
]


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", MLP_CASES, ids=lambda c: f"E{c[0]}B{c[1]}")
@pytest.mark.parametrize("act", ["silu", "relu", "tanh"])
def test_ensemble_mlp(emu, dtype, case, act, gen):
    E, B, widths, shared, head = case
    x = harness.padded(_rand(*((B, widths[0]) if shared else (E, B, widths[0])), dtype=dtype,
                             gen=gen)).requires_grad_()
    ws = [harness.padded(_rand(E, i, o, dtype=dtype, gen=gen, scale=0.4)).requires_grad_()
          for i, o in zip(widths[:-1], widths[1:], strict=True)]
    bs = [harness.padded(_rand(E, o, dtype=dtype, gen=gen)).requires_grad_() for o in widths[1:]]
    lo = hi = None
    if head:
        D = widths[-1] // 2
        lo = harness.padded(_rand(D, dtype=dtype, gen=gen) - 3).requires_grad_()
        hi = harness.padded(_rand(D, dtype=dtype, gen=gen) + 1).requires_grad_()
    params = [x, *ws, *bs] + ([lo, hi] if head else [])

    def loss_of(out):
        outs = out if isinstance(out, tuple) else (out,)
        return sum((o * (k + 1.5)).sin().sum() for k, o in enumerate(outs)), outs

    def run():
        loss, outs = loss_of(ops.ensemble_mlp(x, ws, bs, act, lo, hi, backend="native"))
        return [o.detach() for o in outs] + list(torch.autograd.grad(loss, params))

    got = run_all_orders(emu, run, ("gemm_kernel", "bias_grad_kernel"))
    loss, outs = loss_of(ops.ensemble_mlp_reference(x, ws, bs, act, lo, hi))
    want = [o.detach() for o in outs] + list(torch.autograd.grad(loss, params))
    tol = TOL[dtype] if dtype == F64 else dict(rtol=1e-4, atol=1e-4)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **tol)


def test_head_gradient_far_above_max_logvar(emu, gen):
    """bound_grad with u = max_logvar - raw in (17, 20): d max_logvar is s(v) sigmoid(-u) > 0,
    which 1 - sigmoid(u) rounds to exactly 0 in float32."""
    E, B, D = 2, 40, 3
    x = torch.randn(E, B, 4, generator=gen)
    w = torch.zeros(E, 4, 2 * D)
    b = torch.zeros(E, 2 * D)
    b[:, D:] = -17.5 - torch.rand(E, D, generator=gen) * 2  # raw logvar: u in (17.5, 19.5)
    lo, hi = torch.full((D,), -30.0, requires_grad=True), torch.zeros(D, requires_grad=True)
    _, lv = ops.ensemble_mlp(x, [w], [b], "silu", lo, hi, backend="native")
    (d_hi,) = torch.autograd.grad(lv.sum(), (hi,))
    assert emu.launches()
    x64, w64, b64 = x.double(), w.double(), b.double()
    lo64, hi64 = lo.detach().double().requires_grad_(), hi.detach().double().requires_grad_()
    _, lv64 = ops.ensemble_mlp_reference(x64, [w64], [b64], "silu", lo64, hi64)
    (want,) = torch.autograd.grad(lv64.sum(), (hi64,))
    assert (want > 0).all()
    torch.testing.assert_close(d_hi.double(), want, rtol=1e-4, atol=0)


def test_ensemble_mlp_limits(emu):
    w, b = [torch.zeros(65536, 1, 1)], [torch.zeros(65536, 1)]
    with pytest.raises(ValueError, match="E \\(ensemble size\\) = 65536 is above 65,535"):
        ops.ensemble_mlp(torch.zeros(1, 1), w, b, backend="native")
    with pytest.raises(ValueError, match="B \\(batch rows\\) = 4194241 is above 4,194,240"):
        mlp._check_cuda_limits(torch.zeros(4194241, 0), [torch.zeros(1, 0, 1)])


# ---- ensemble_rollout_step, every mode -----------------------------------------------------------
def _rollout_model(E, O, A, hidden, gaussian, dtype, gen):
    D = O + 1
    widths = [O + A, *hidden, 2 * D if gaussian else D]
    ws = [_rand(E, i, o, dtype=dtype, gen=gen, scale=0.3) for i, o in zip(widths[:-1], widths[1:],
                                                                          strict=True)]
    bs = [_rand(E, o, dtype=dtype, gen=gen, scale=0.1) for o in widths[1:]]
    extra = {}
    if gaussian:
        extra["min_logvar"] = _rand(D, dtype=dtype, gen=gen) - 4
        extra["max_logvar"] = _rand(D, dtype=dtype, gen=gen) * 0.1
    return ws, bs, extra


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", ["random_model", "fixed_model", "expectation"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (5, 131, 6, 3), (3, 70, 13, 2)],
                         ids=lambda s: "E{}N{}O{}A{}".format(*s))
@pytest.mark.parametrize("kind", ["sample", "mean", "deterministic"])
def test_rollout(emu, dtype, mode, shape, kind, gen):
    E, N, O, A = shape
    ws, bs, extra = _rollout_model(E, O, A, [33, 70], kind != "deterministic", dtype, gen)
    state = harness.padded(_rand(N, O, dtype=dtype, gen=gen))
    action = harness.padded(_rand(N, A, dtype=dtype, gen=gen))
    elites = torch.arange(E)[: max(1, E - 1)]
    members = ops.member_indices(mode, N, elites, gen,
                                 fixed=torch.randint(E, (N,), generator=gen))
    kw = dict(members=members, elites=elites if mode == "expectation" else None,
              input_mean=_rand(O + A, dtype=dtype, gen=gen) * 0.1,
              input_std=_rand(O + A, dtype=dtype, gen=gen).abs() + 0.5,
              delta_mask=torch.arange(O) % 3 != 1,
              termination=TerminationRule(lower=(-1.5,) * min(O, 2),
                                          upper=(1.5,) * min(O, 2), check_finite=True),
              sample=kind == "sample", seed=11, offset=3, **extra)

    got = run_all_orders(
        emu, lambda: ops.ensemble_rollout_step(state, action, ws, bs, **kw, backend="native"),
        ("grouped_layer_kernel", "epilogue_kernel"))
    want = ops.ensemble_rollout_step_reference(state, action, ws, bs, **{
        k: v for k, v in kw.items() if k != "termination"}, termination=kw["termination"])
    tol = TOL[dtype] if dtype == F64 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[0], want[0], **tol)
    torch.testing.assert_close(got[1], want[1], **tol)
    assert torch.equal(got[2], want[2])


def test_rollout_elites_out_of_range_checked_without_sync(monkeypatch):
    """On a non-CPU device the range check is an asynchronous device-side assert: no .item()."""
    from fastmbrl.ops import rollout

    seen = []
    monkeypatch.setattr(torch, "_assert_async", lambda cond, msg: seen.append((cond, msg)))
    t = torch.tensor([0, 9], device="meta")
    rollout._check_range("elites", t, 3)
    assert len(seen) == 1 and "`elites` must index members in [0, 3)" in seen[0][1]
    monkeypatch.undo()
    # the same assert, evaluated on the CPU, fails for out-of-range and passes in range
    with pytest.raises(RuntimeError, match="must index members"):
        torch._assert_async(((torch.tensor([0, 9]) >= 0) & (torch.tensor([0, 9]) < 3)).all(),
                            "elites must index members")
    with pytest.raises(ValueError, match="`elites` must index members in \\[0, 3\\)"):
        rollout._check_range("elites", torch.tensor([0, 3]), 3)


# ---- vagram, value_aware, itervaml ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
# the last shape reaches the full grid (256 blocks per member) in both modes
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 37, 5, 2), (2, 300, 17, 1), (1, 65537, 5, 1)],
                         ids=lambda s: "E{}B{}O{}K{}".format(*s))
@pytest.mark.parametrize("bounded", [True, False], ids=["bounded", "unbounded"])
@pytest.mark.parametrize("shared", [False, True], ids=["own", "shared"])
def test_vagram(emu, dtype, shape, bounded, shared, gen):
    E, B, O, K = shape
    pred = harness.padded(_rand(E, B, O, dtype=dtype, gen=gen)).requires_grad_()
    target = harness.padded(_rand(*((B, O) if shared else (E, B, O)), dtype=dtype, gen=gen))
    target.requires_grad_()
    vg = harness.padded(_rand(K, E, B, O, dtype=dtype, gen=gen))

    def run():
        out = ops.vagram_loss(pred, target, vg, bounded, "member", backend="native")
        return [out.detach(), *torch.autograd.grad((out * 1.7).sum(), (pred, target))]

    got = run_all_orders(emu, run, ("vagram_",))
    want = ops.vagram_loss_reference(pred, target, vg, bounded, "member")
    gw = torch.autograd.grad((want * 1.7).sum(), (pred, target))
    for a, b in zip(got, [want.detach(), *gw], strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype])


def test_vagram_members_above_grid_limit(emu):
    x = torch.zeros(65536, 1, 1)
    with pytest.raises(ValueError, match="E \\(ensemble size\\) = 65536 is above 65,535"):
        ops.vagram_loss(x, x, x, backend="native")


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(1,), (3, 7), (2, 501), (1, 1 << 20)], ids=str)
@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_value_aware(emu, dtype, shape, norm, reduction, gen):
    if reduction == "none" and shape[-1] > 1000:
        pytest.skip("the elementwise kernel is covered at the smaller shapes")
    q_model = harness.padded(_rand(*shape, dtype=dtype, gen=gen)).requires_grad_()
    q_true = harness.padded(_rand(*shape[1:], dtype=dtype, gen=gen) if len(shape) > 1
                            else _rand(*shape, dtype=dtype, gen=gen)).requires_grad_()

    def run():
        out = ops.value_aware_loss(q_true, q_model, norm, reduction, backend="native")
        return [out.detach(), *torch.autograd.grad((out * 1.3).sum(), (q_true, q_model))]

    got = run_all_orders(emu, run, ("va_",))
    want = ops.value_aware_loss_reference(q_true, q_model, norm, reduction)
    gw = torch.autograd.grad((want * 1.3).sum(), (q_true, q_model))
    tol = TOL[dtype] if dtype == F64 else dict(rtol=1e-5, atol=1e-3)
    for a, b in zip(got, [want.detach(), *gw], strict=True):
        torch.testing.assert_close(a, b, **tol)
    if reduction != "none":
        itv = ops.itervaml_loss(q_model, q_true, reduction, backend="native")
        assert emu.launches()
        ref = ops.value_aware_loss_reference(q_true, q_model, "l2", reduction)
        torch.testing.assert_close(itv.detach(), ref.detach(), **tol)
        emu.check_canaries()


# ---- device guard and FASTMBRL_CUDA_SYNC (mocked devices) ------------------------------------
class _OnDevice:
    def __init__(self, device):
        self.device = torch.device(device)


def test_cuda_impls_run_on_the_tensors_device(monkeypatch):
    """A tensor on cuda:1 while cuda:0 is current: the kernel runs under torch.cuda.device(1)."""
    entered, current = [], [0]

    class FakeDevice:
        def __init__(self, device):
            self.index = torch.device(device).index

        def __enter__(self):
            entered.append(self.index)
            current.insert(0, self.index)

        def __exit__(self, *exc):
            current.pop(0)

    monkeypatch.setattr(torch.cuda, "device", FakeDevice)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    ran_on = []
    fn = _library.guard_cuda("toy", lambda t, ts: ran_on.append(current[0]))
    fn(_OnDevice("cuda:1"), [])
    fn([_OnDevice("cuda:0")], None)  # the current device: no switch
    assert entered == [1] and ran_on == [1, 0]
    assert set(_library.CUDA_IMPLS) >= {"gaussian_nll", "gaussian_nll_backward", "vagram_loss",
                                         "value_aware_loss", "ensemble_mlp_forward",
                                         "ensemble_mlp_backward", "ensemble_rollout_step"}


def test_cuda_sync_switch_names_the_op(monkeypatch):
    def failing_sync(device=None):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch.cuda, "synchronize", failing_sync)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    fn = _library.guard_cuda("gaussian_nll", lambda t: "done")
    monkeypatch.setattr(_native, "CUDA_SYNC", False)
    assert fn(_OnDevice("cuda:0")) == "done"  # off: no synchronisation
    monkeypatch.setattr(_native, "CUDA_SYNC", True)
    with pytest.raises(RuntimeError, match="fastmbrl.gaussian_nll: a CUDA kernel of this op "
                                           "failed \\(FASTMBRL_CUDA_SYNC=1.*illegal memory"):
        fn(_OnDevice("cuda:0"))


def test_cuda_sync_switch_in_the_emulation(emu, monkeypatch):
    monkeypatch.setattr(_native, "CUDA_SYNC", True)
    x = torch.randn(2, 3, 4)
    ops.gaussian_nll(x, x, x, "member", backend="native")  # synchronises, no error
    assert emu.launches()


# ---- double accumulation of the per-thread partial sums ------------------------------------------
# Each thread first adds 32 terms of 2^20 and then 32 terms of 1.375: accumulated in float32 the
# small terms are lost (|acc| = 2^25, ulp 4), a relative error of about 1e-6 in the sum; in
# double every partial is exact and the result is off by the final float32 rounding only.
def test_reduction_partials_accumulate_in_double(emu):
    G, T = 256, 256  # the reduction's full grid for one member: 65536 threads, 64 terms each
    n = 64 * G * T
    j = torch.arange(n) // (G * T)  # the term's index within its thread's grid-stride loop
    d = torch.where(j < 32, 1024.0, 1.375).float()
    mean, logvar, target = d.view(1, n, 1), torch.zeros(1, n, 1), torch.zeros(1, n, 1)
    got = ops.gaussian_nll(mean, logvar, target, "member", backend="native")
    assert "nll_partial_kernel<T>" in emu.launches()
    want = (d.double() ** 2).mean()
    torch.testing.assert_close(got.double(), want.view(1), rtol=3e-7, atol=0)


def test_bias_gradient_accumulates_in_double(emu):
    E, B, O = 1, 512, 5  # 8 row-slices per column: 64 rows per thread, rows j = m // 8
    x = torch.randn(E, B, 3)
    w, b = torch.zeros(E, 3, O, requires_grad=True), torch.zeros(E, O, requires_grad=True)
    m = torch.arange(B).view(1, B, 1)
    g = torch.where(m // 8 < 32, 2.0 ** 20, 1.375).expand(E, B, O).float()
    out = ops.ensemble_mlp(x, [w], [b], "silu", backend="native")
    (db,) = torch.autograd.grad((out * g).sum(), (b,))
    assert "bias_grad_kernel<T>" in emu.launches()
    torch.testing.assert_close(db.double(), g.double().sum(1), rtol=3e-7, atol=0)


# ---- ensemble_disagreement ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
# one warp per row, 8 rows a block: N=1 (a partial block), N=9 (two blocks, the second one
# mostly idle), O=37 and O=1 (lanes with no column), E up to 8
@pytest.mark.parametrize("shape", [(2, 1, 1), (2, 9, 37), (5, 17, 3), (8, 33, 70), (3, 1, 1)],
                         ids=lambda s: "E{}N{}O{}".format(*s))
def test_disagreement(emu, dtype, shape, gen):
    pred = harness.padded(_rand(*shape, dtype=dtype, gen=gen))
    got = run_all_orders(emu, lambda: ops.ensemble_disagreement(pred, backend="native"),
                         ("disagreement",))
    torch.testing.assert_close(got[0], ops.ensemble_disagreement_reference(pred), **TOL[dtype])
