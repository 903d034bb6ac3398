"""fastmbrl.ops.gaussian_nll: native kernels against the pure-PyTorch reference."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import fastmbrl
from conftest import DEVICES, TOL
from fastmbrl import _native
from fastmbrl.ops import gaussian_nll, gaussian_nll_reference

pytestmark = pytest.mark.skipif(not _native.HAS_NATIVE, reason="native module not built")

SHAPES = [(1, 1, 1), (1, 7, 3), (2, 5, 17), (5, 33, 18), (7, 256, 18), (8, 13, 200), (3, 1000, 7)]


def _inputs(shape, dtype, device, shared, gen, requires_grad=False):
    E, B, D = shape

    def r(*s):
        x = torch.randn(*s, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
        return x.requires_grad_(requires_grad)

    mean, logvar = r(E, B, D), r(E, B, D)
    target = r(B, D) if shared else r(E, B, D)
    return mean, logvar, target


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("reduction", ["sum", "mean", "member", "none"])
def test_forward_backward_match_reference(device, dtype, shape, shared, reduction, gen):
    mean, logvar, target = _inputs(shape, dtype, device, shared, gen, requires_grad=True)
    out = gaussian_nll(mean, logvar, target, reduction, backend="native")
    ref = gaussian_nll_reference(mean, logvar, target, reduction)
    torch.testing.assert_close(out, ref, **TOL[dtype])
    grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(device, dtype)
    got = torch.autograd.grad(out, (mean, logvar, target), grad_out)
    want = torch.autograd.grad(ref, (mean, logvar, target), grad_out)
    for g, w in zip(got, want, strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
def test_reference_matches_mbrl_lib_formula(device, gen):
    """mbrl-lib: sum over members of mean over (B, D) of (μ−y)² e^{−lv} + lv; no ½, no log 2π."""
    mean, logvar, target = _inputs((3, 4, 2), torch.float64, device, False, gen)
    by_hand = 0.0
    for e in range(3):
        by_hand += float(((mean[e] - target[e]) ** 2 / logvar[e].exp() + logvar[e]).mean())
    assert gaussian_nll(mean, logvar, target).item() == pytest.approx(by_hand, rel=1e-12)
    # a distribution-based check: NLL = 2·(−log N(y; μ, σ²)) − log 2π per element
    dist = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    nll2 = (-2 * dist.log_prob(target) - torch.log(torch.tensor(2 * torch.pi))).mean((1, 2)).sum()
    torch.testing.assert_close(gaussian_nll(mean, logvar, target), nll2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_gradcheck(device, shared, reduction, gen):
    inputs = _inputs((3, 4, 5), torch.float64, device, shared, gen, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda m, lv, t: gaussian_nll(m, lv, t, reduction, backend="native"), inputs
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("elementwise", [False, True])
def test_opcheck(device, shared, elementwise, gen):
    mean, logvar, target = _inputs((3, 6, 5), torch.float32, device, shared, gen, True)
    torch.library.opcheck(torch.ops.fastmbrl.gaussian_nll.default,
                          (mean, logvar, target, elementwise))
    grad = torch.randn((3, 6, 5) if elementwise else (3,), device=device)
    torch.library.opcheck(torch.ops.fastmbrl.gaussian_nll_backward.default,
                          (grad, mean.detach(), logvar.detach(), target.detach(), elementwise))


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_forward_backward(device, gen):
    torch._dynamo.reset()
    mean, logvar, target = _inputs((4, 9, 6), torch.float32, device, True, gen, True)

    def step(m, lv, t):
        return gaussian_nll(m, lv, t, backend="native") * 2.0

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    out = compiled(mean, logvar, target)
    ref = 2.0 * gaussian_nll_reference(mean, logvar, target)
    torch.testing.assert_close(out, ref)
    got = torch.autograd.grad(out, (mean, logvar, target))
    want = torch.autograd.grad(ref, (mean, logvar, target))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


@pytest.mark.slow
def test_compile_inductor(gen):
    """The op stays one opaque node under inductor and its backward runs the native kernel."""
    torch._dynamo.reset()
    mean, logvar, target = _inputs((2, 8, 3), torch.float32, "cpu", False, gen, True)
    compiled = torch.compile(lambda m, lv, t: gaussian_nll(m, lv, t, backend="native"),
                             fullgraph=True)
    out = compiled(mean, logvar, target)
    out.backward()
    ref = gaussian_nll_reference(mean.detach(), logvar.detach(), target.detach())
    torch.testing.assert_close(out.detach(), ref)
    assert mean.grad is not None and torch.isfinite(mean.grad).all()


def test_non_contiguous_inputs(gen):
    base = torch.randn(6, 10, 8, generator=gen, dtype=torch.float64)
    mean = base[::2, :, ::2]  # strided
    logvar = torch.randn(4, 10, 3, generator=gen, dtype=torch.float64).transpose(0, 2)
    target = torch.randn(4, 10, generator=gen, dtype=torch.float64).t()
    assert not mean.is_contiguous() and not logvar.is_contiguous()
    out = gaussian_nll(mean, logvar, target, "member", backend="native")
    torch.testing.assert_close(out, gaussian_nll_reference(mean, logvar, target, "member"))


def test_backend_reference_is_used(monkeypatch, gen):
    mean, logvar, target = _inputs((2, 3, 4), torch.float32, "cpu", False, gen)
    calls = []
    monkeypatch.setattr(torch.ops.fastmbrl, "gaussian_nll",
                        lambda *a: calls.append(a) or torch.zeros(2))
    gaussian_nll(mean, logvar, target, backend="reference")
    assert calls == []
    gaussian_nll(mean, logvar, target, backend="native")
    assert len(calls) == 1


def test_env_var_forces_reference():
    code = ("import fastmbrl, torch; from fastmbrl import _native;"
            "print(fastmbrl.get_backend(), _native.use_native(torch.device('cpu'), None))")
    env = dict(os.environ, FASTMBRL_BACKEND="reference")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["reference", "False"]
    env["FASTMBRL_BACKEND"] = "bogus"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode != 0 and "FASTMBRL_BACKEND must be one of" in res.stderr


def test_set_backend_round_trip():
    old = fastmbrl.get_backend()
    try:
        fastmbrl.set_backend("reference")
        assert not _native.use_native(torch.device("cpu"), None)
        with pytest.raises(ValueError, match="backend must be one of"):
            fastmbrl.set_backend("fast")
    finally:
        fastmbrl.set_backend(old)


def test_native_on_uncompiled_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_native, "HAS_CUDA_KERNELS", False)
    with pytest.raises(RuntimeError, match="no native kernel is compiled"):
        _native.use_native(torch.device("cuda"), "native")


# ---- bad input: every error names the argument and the expected and actual value ------------
def _ok(gen):
    return _inputs((3, 4, 5), torch.float32, "cpu", False, gen)


def test_bad_rank(gen):
    mean, logvar, target = _ok(gen)
    with pytest.raises(ValueError, match=r"`mean` must have 3 dimensions \[E, B, D\], got shape "
                                         r"\(4, 5\)"):
        gaussian_nll(mean[0], logvar, target)
    with pytest.raises(ValueError, match=r"`target` must have 2 or 3 dimensions"):
        gaussian_nll(mean, logvar, target[0, 0])


def test_mismatched_shapes(gen):
    mean, logvar, target = _ok(gen)
    with pytest.raises(ValueError, match=r"`logvar` must have shape .* = \(3, 4, 5\), got "
                                         r"\(3, 4, 6\)"):
        gaussian_nll(mean, torch.zeros(3, 4, 6), target)
    with pytest.raises(ValueError, match=r"`target` must have shape \[B, D\] .* = \(4, 5\), got "
                                         r"\(4, 6\)"):
        gaussian_nll(mean, logvar, torch.zeros(4, 6))
    with pytest.raises(ValueError, match=r"`target` must have shape \[E, B, D\]"):
        gaussian_nll(mean, logvar, torch.zeros(2, 4, 5))


def test_integer_dtype(gen):
    mean, logvar, target = _ok(gen)
    with pytest.raises(TypeError, match=r"`target` must be float32 or float64, got torch.int64"):
        gaussian_nll(mean, logvar, target.long())


def test_mixed_dtypes(gen):
    mean, logvar, target = _ok(gen)
    with pytest.raises(TypeError, match=r"one dtype; `mean` is torch.float32, `logvar` is "
                                        r"torch.float64"):
        gaussian_nll(mean, logvar.double(), target)


def test_different_devices(gen):
    mean, logvar, target = _ok(gen)
    with pytest.raises(ValueError, match=r"one device; `mean` is on cpu, `target` is on meta"):
        gaussian_nll(mean, logvar, target.to("meta"))


def test_empty_batch():
    z = torch.zeros(3, 0, 5)
    with pytest.raises(ValueError, match=r"B \(batch\) must be at least 1, got 0"):
        gaussian_nll(z, z, z)


def test_bad_reduction(gen):
    with pytest.raises(ValueError, match=r"`reduction` must be one of"):
        gaussian_nll(*_ok(gen), reduction="avg")


def test_not_a_tensor(gen):
    mean, logvar, _ = _ok(gen)
    with pytest.raises(TypeError, match=r"`target` must be a torch.Tensor"):
        gaussian_nll(mean, logvar, [[1.0]])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or not _native.HAS_CUDA_KERNELS,
                    reason="no CUDA device")
def test_cuda_graph_capture(gen):
    mean, logvar, target = _inputs((7, 256, 18), torch.float32, "cuda", True, gen)
    static_out = gaussian_nll(mean, logvar, target)  # warm-up allocations
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        static_out = gaussian_nll(mean, logvar, target, backend="native")
    mean.copy_(torch.randn_like(mean))
    g.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(static_out, gaussian_nll_reference(mean, logvar, target))


def test_float32_exp_over_its_whole_range():
    """The CPU kernel's vectorised expf: relative error ~1e-7, inf on overflow, 0 on underflow."""
    x = torch.linspace(-120, 120, 100_001)
    ones = torch.ones(1, 1, x.numel())
    logvar = (-x).view(1, 1, -1)
    zeros = torch.zeros(1, x.numel())
    got = gaussian_nll(ones, logvar, zeros, "none", backend="native")[0, 0].double()
    got = got - logvar[0, 0].double()  # loss = exp(x) + logvar
    want = torch.exp(x.double())
    exact = (want > 1e4 * x.abs().double()) & (want < 3e38)  # where the subtraction is exact
    rel = ((got - want).abs() / want)[exact]
    assert rel.max() < 5e-7
    assert torch.equal(torch.isinf(got), torch.isinf(torch.exp(x)))
    nan = gaussian_nll(ones[..., :1], torch.full((1, 1, 1), float("nan")), zeros[:, :1], "none",
                       backend="native")
    assert torch.isnan(nan).all()


def test_auto_dispatch_on_cpu_follows_the_measured_threshold(monkeypatch, gen):
    import fastmbrl.ops.nll as nll_module

    calls = []
    real = torch.ops.fastmbrl.gaussian_nll
    monkeypatch.setattr(torch.ops.fastmbrl, "gaussian_nll", lambda *a: calls.append(1) or real(*a))
    small = _inputs((2, 3, 4), torch.float32, "cpu", False, gen)
    gaussian_nll(*small, backend="auto")
    assert calls == []  # below the threshold: the reference
    monkeypatch.setattr(nll_module, "CPU_NATIVE_MIN_ELEMENTS", 24)
    gaussian_nll(*small, backend="auto")
    assert calls == [1]
