"""fastmbrl.ops.ensemble_mlp: native kernels against the pure-PyTorch reference."""

from __future__ import annotations

import ctypes
import importlib

import pytest
import torch
import torch.nn.functional as F

from conftest import DEVICES, TOL
from fastmbrl import _native
from fastmbrl.ops import ensemble_mlp, ensemble_mlp_reference
from fastmbrl.ops.mlp import ACT_CODES

mlp_module = importlib.import_module("fastmbrl.ops.mlp")

pytestmark = pytest.mark.skipif(not _native.HAS_NATIVE, reason="native module not built")

# (E, B, layer widths [in, hidden..., out]): odd sizes, 1-5 layers, hidden 200, in 14/23/113,
# out 18/36/754 (Humanoid-sized Gaussian head, 2 x 377).
SHAPES = [
    (1, 1, [3, 2]),
    (1, 7, [14, 200, 18]),
    (2, 33, [23, 200, 36]),
    (3, 65, [113, 200, 200, 754]),
    (5, 19, [14, 37, 64, 65, 36]),
    (8, 10, [23, 17, 18]),
    (7, 256, [23, 200, 200, 200, 200, 36]),
]


def _model(E, B, sizes, dtype, device, shared, head, gen, requires_grad=True):
    """Inputs with realistic scales; the last layer is scaled up so raw logvars cross both
    soft bounds (every branch of the bound epilogue is exercised)."""

    def r(*s, scale=1.0):
        t = torch.randn(*s, generator=gen, dtype=torch.float64) * scale
        return t.to(device=device, dtype=dtype).requires_grad_(requires_grad)

    x = r(B, sizes[0]) if shared else r(E, B, sizes[0])
    last = len(sizes) - 2
    weights = [r(E, a, b, scale=(3.0 if i == last else 1.0) / a**0.5)
               for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))]
    biases = [r(E, b, scale=0.1) for b in sizes[1:]]
    lo = hi = None
    if head:
        D = sizes[-1] // 2
        lo = (r(D, scale=0.3).detach() - 1.5).requires_grad_(requires_grad)
        hi = (r(D, scale=0.3).detach() + 1.0).requires_grad_(requires_grad)
    return x, weights, biases, lo, hi


def _shape_id(shape):
    E, B, sizes = shape
    return f"E{E}-B{B}-{'x'.join(map(str, sizes))}"


def _leaves(x, weights, biases, lo, hi):
    return [x, *weights, *biases] + ([lo, hi] if lo is not None else [])


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
@pytest.mark.parametrize("shared", [False, True], ids=["member_x", "shared_x"])
@pytest.mark.parametrize("head", [False, True], ids=["plain", "head"])
@pytest.mark.parametrize("activation", ["silu", "relu", "tanh"])
def test_forward_backward_match_reference(device, dtype, shape, shared, head, activation, gen):
    E, B, sizes = shape
    x, weights, biases, lo, hi = _model(E, B, sizes, dtype, device, shared, head, gen)
    out = _as_tuple(ensemble_mlp(x, weights, biases, activation, lo, hi, backend="native"))
    ref = _as_tuple(ensemble_mlp_reference(x, weights, biases, activation, lo, hi))
    tol = TOL[dtype]
    for o, r in zip(out, ref, strict=True):
        assert o.shape == r.shape
        torch.testing.assert_close(o, r, **tol)
    grads_out = [torch.randn(r.shape, generator=gen, dtype=torch.float64).to(device, dtype)
                 for r in ref]
    leaves = _leaves(x, weights, biases, lo, hi)
    got = torch.autograd.grad(out, leaves, grads_out)
    want = torch.autograd.grad(ref, leaves, grads_out)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == w.shape, i
        assert torch.isfinite(g).all(), i
        # sums over many rows (dW, db, d_min/d_max) lose a little more in float32
        torch.testing.assert_close(g, w, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10,
                                   msg=lambda m, i=i: f"gradient of leaf {i}: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("head", [False, True])
@pytest.mark.parametrize("activation", ["silu", "relu", "tanh"])
def test_gradcheck(device, shared, head, activation, gen):
    x, weights, biases, lo, hi = _model(3, 4, [5, 7, 6], torch.float64, device, shared, head, gen)
    leaves = _leaves(x, weights, biases, lo, hi)
    L = len(weights)

    def fn(*args):
        x, ws, bs = args[0], list(args[1:1 + L]), list(args[1 + L:1 + 2 * L])
        lo, hi = (args[1 + 2 * L], args[2 + 2 * L]) if head else (None, None)
        return ensemble_mlp(x, ws, bs, activation, lo, hi, backend="native")

    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("head", [False, True])
def test_opcheck(device, shared, head, gen):
    x, weights, biases, lo, hi = _model(2, 5, [7, 9, 6], torch.float32, device, shared, head, gen)
    act = ACT_CODES["silu"]
    torch.library.opcheck(torch.ops.fastmbrl.ensemble_mlp_forward.default,
                          (x, weights, biases, act, lo, hi))
    with torch.no_grad():
        out, saved = torch.ops.fastmbrl.ensemble_mlp_forward(x, weights, biases, act, lo, hi)
    grad = torch.randn(out.shape, device=device)
    detach = [t.detach() for t in weights]
    lo_d = lo.detach() if head else None
    hi_d = hi.detach() if head else None
    for need_x in (False, True):
        torch.library.opcheck(torch.ops.fastmbrl.ensemble_mlp_backward.default,
                              (grad, x.detach(), detach, saved, act, lo_d, hi_d, need_x))


def test_single_layer_opcheck(gen):
    """One layer: no hidden activations are saved (an empty saved list)."""
    x, weights, biases, lo, hi = _model(3, 4, [5, 8], torch.float32, "cpu", False, True, gen)
    torch.library.opcheck(torch.ops.fastmbrl.ensemble_mlp_forward.default,
                          (x, weights, biases, 0, lo, hi))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("head", [False, True])
def test_compile_fullgraph_forward_backward(device, head, gen):
    torch._dynamo.reset()
    x, weights, biases, lo, hi = _model(4, 9, [6, 11, 10], torch.float32, device, True, head, gen)

    def loss(fn, x, weights, biases, lo, hi):
        out = _as_tuple(fn(x, weights, biases, "silu", lo, hi))
        return sum((o**2).mean() for o in out)

    native = torch.compile(
        lambda *a: loss(lambda *b: ensemble_mlp(*b, backend="native"), *a),
        fullgraph=True, backend="aot_eager",
    )
    got_loss = native(x, weights, biases, lo, hi)
    want_loss = loss(ensemble_mlp_reference, x, weights, biases, lo, hi)
    torch.testing.assert_close(got_loss, want_loss)
    leaves = _leaves(x, weights, biases, lo, hi)
    got = torch.autograd.grad(got_loss, leaves)
    want = torch.autograd.grad(want_loss, leaves)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


@pytest.mark.slow
def test_compile_inductor(gen):
    """The op stays opaque under inductor and its backward runs the native kernel."""
    torch._dynamo.reset()
    x, weights, biases, lo, hi = _model(3, 8, [5, 16, 6], torch.float32, "cpu", False, True, gen)
    fn = torch.compile(
        lambda *a: sum(o.sum() for o in ensemble_mlp(*a, backend="native")), fullgraph=True
    )
    out = fn(x, weights, biases, "silu", lo, hi)
    out.backward()
    ref = sum(o.sum() for o in ensemble_mlp_reference(
        x.detach(), [w.detach() for w in weights], [b.detach() for b in biases], "silu",
        lo.detach(), hi.detach()))
    torch.testing.assert_close(out.detach(), ref)
    for t in _leaves(x, weights, biases, lo, hi):
        assert t.grad is not None and torch.isfinite(t.grad).all()


@pytest.mark.parametrize("activation", ["silu", "relu", "tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shared_activation_math_matches_torch(activation, dtype, gen):
    """The per-element activation math in ensemble_mlp.h (also used by the CUDA epilogues) is
    exercised here through the CPU entry points that wrap it."""
    z = (torch.randn(1001, generator=gen, dtype=torch.float64) * 4).to(dtype)
    g = torch.randn(1001, generator=gen, dtype=torch.float64).to(dtype)
    h, dz = _native.empty_like(z), _native.empty_like(z)
    C, P, code = _native._C, _native.ptr, _native.dtype_code(z)
    a = ACT_CODES[activation]
    C.mlp_act_forward_cpu(code, a, P(z), P(h), z.numel())
    C.mlp_act_backward_cpu(code, a, P(g), P(z), P(h), P(dz), z.numel())
    zr = z.clone().requires_grad_(True)
    hr = mlp_module._ACT_FNS[activation](zr)
    (dzr,) = torch.autograd.grad(hr, zr, g)
    torch.testing.assert_close(h, hr.detach(), **TOL[dtype])
    torch.testing.assert_close(dz, dzr, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shared_head_math_matches_torch(dtype, gen):
    """bound/bound_grad in ensemble_mlp.h (the CUDA head epilogue and head backward) against
    autograd through bound_logvar, via the CPU entry points that wrap them."""
    rows, D = 37, 5
    y = (torch.randn(rows, 2 * D, generator=gen, dtype=torch.float64) * 8).to(dtype)
    g = torch.randn(rows, 2 * D, generator=gen, dtype=torch.float64).to(dtype)
    lo = (torch.randn(D, generator=gen, dtype=torch.float64) - 3).to(dtype)
    hi = (torch.randn(D, generator=gen, dtype=torch.float64) + 1).to(dtype)
    out, raw = y.clone(), _native.empty((rows, D), y)
    dy, d_lo, d_hi = _native.empty_like(y), _native.empty_like(lo), _native.empty_like(hi)
    C, P, code = _native._C, _native.ptr, _native.dtype_code(y)
    C.mlp_head_forward_cpu(code, P(out), P(lo), P(hi), rows, D, P(raw))
    C.mlp_head_backward_cpu(code, P(g), P(raw), P(lo), P(hi), rows, D, P(dy), P(d_lo), P(d_hi))
    yr, lor, hir = (t.clone().requires_grad_(True) for t in (y, lo, hi))
    want = torch.cat([yr[:, :D], mlp_module.bound_logvar(yr[:, D:], lor, hir)], dim=1)
    grads = torch.autograd.grad(want, (yr, lor, hir), g)
    tol = TOL[dtype]
    torch.testing.assert_close(raw, y[:, D:], rtol=0, atol=0)
    torch.testing.assert_close(out, want.detach(), **tol)
    for got, w in zip((dy, d_lo, d_hi), grads, strict=True):
        torch.testing.assert_close(got, w, **tol)


def test_bounds_saturate_like_mbrl_lib(gen):
    """Raw logvars far outside [min, max] land on the bounds, as with mbrl-lib's softplus."""
    E, B, D = 2, 3, 4
    x = torch.zeros(E, B, 1, dtype=torch.float64)
    w = torch.zeros(E, 1, 2 * D, dtype=torch.float64)
    b = torch.tensor([0.0] * D + [-100.0, 100.0, 0.0, 30.0], dtype=torch.float64).repeat(E, 1)
    lo = torch.full((D,), -10.0, dtype=torch.float64)
    hi = torch.full((D,), 0.5, dtype=torch.float64)
    mean, logvar = ensemble_mlp(x, [w], [b], "silu", lo, hi, backend="native")
    want = lo + F.softplus(hi - F.softplus(hi - b[:, D:]) - lo)
    torch.testing.assert_close(logvar, want.unsqueeze(1).expand(E, B, D))
    assert logvar[..., 0].sub(-10.0).abs().max() < 1e-6
    assert logvar[..., 1].sub(0.5).abs().max() < 1e-4  # + softplus(-10.5) from the lower bound
    assert (mean == 0).all()


def test_non_contiguous_inputs(gen):
    x, weights, biases, lo, hi = _model(3, 6, [5, 8, 4], torch.float64, "cpu", False, True, gen,
                                        requires_grad=False)
    xt = x.transpose(0, 1).contiguous().transpose(0, 1)  # same values, permuted strides
    wt = [w.transpose(1, 2).contiguous().transpose(1, 2) for w in weights]
    assert not xt.is_contiguous() and not wt[0].is_contiguous()
    got = ensemble_mlp(xt, wt, biases, "tanh", lo, hi, backend="native")
    want = ensemble_mlp_reference(x, weights, biases, "tanh", lo, hi)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_only_mean_used_and_frozen_bounds(gen):
    """Gradients flow when only the mean is used, and frozen bounds get no gradient."""
    x, weights, biases, lo, hi = _model(2, 5, [4, 6, 6], torch.float32, "cpu", True, True, gen)
    lo, hi = lo.detach(), hi.detach()
    mean, _ = ensemble_mlp(x, weights, biases, "relu", lo, hi, backend="native")
    mean.sum().backward()
    ref_mean, _ = ensemble_mlp_reference(x.detach().requires_grad_(), weights, biases, "relu",
                                         lo, hi)
    assert x.grad is not None and weights[0].grad is not None
    assert lo.grad is None and hi.grad is None
    torch.testing.assert_close(mean, ref_mean)


def test_backend_reference_does_not_call_the_op(monkeypatch, gen):
    x, weights, biases, _, _ = _model(2, 3, [4, 5], torch.float32, "cpu", False, False, gen)
    calls = []
    real = torch.ops.fastmbrl.ensemble_mlp_forward
    monkeypatch.setattr(torch.ops.fastmbrl, "ensemble_mlp_forward",
                        lambda *a: calls.append(a) or real(*a))
    ensemble_mlp(x, weights, biases, backend="reference")
    assert calls == []
    ensemble_mlp(x, weights, biases, backend="native")
    assert len(calls) == 1


def test_auto_backend_follows_the_cpu_verdict(monkeypatch, gen):
    x, weights, biases, _, _ = _model(2, 3, [4, 5], torch.float32, "cpu", False, False, gen)
    calls = []
    real = torch.ops.fastmbrl.ensemble_mlp_forward
    monkeypatch.setattr(torch.ops.fastmbrl, "ensemble_mlp_forward",
                        lambda *a: calls.append(a) or real(*a))
    for verdict in (False, True):
        monkeypatch.setattr(mlp_module, "PREFER_NATIVE_CPU", verdict)
        calls.clear()
        ensemble_mlp(x, weights, biases, backend="auto")
        assert len(calls) == int(verdict)


def test_auto_backend_keeps_unmeasured_cuda_kernels_off(monkeypatch):
    monkeypatch.setattr(_native, "HAS_CUDA_KERNELS", True)
    cuda = torch.device("cuda")
    monkeypatch.setattr(mlp_module, "PREFER_NATIVE_CUDA", False)
    assert not mlp_module._use_native(cuda, None)
    assert not mlp_module._use_native(cuda, "auto")
    assert mlp_module._use_native(cuda, "native")
    assert not mlp_module._use_native(cuda, "reference")
    monkeypatch.setattr(mlp_module, "PREFER_NATIVE_CUDA", True)
    assert mlp_module._use_native(cuda, "auto")


# ---- bad input: every error names the argument and the expected and actual value ------------
def _ok(gen, head=True):
    return _model(3, 4, [5, 7, 6], torch.float32, "cpu", False, head, gen, requires_grad=False)


def test_bad_rank(gen):
    x, ws, bs, lo, hi = _ok(gen)
    with pytest.raises(ValueError, match=r"`x` must have 2 or 3 dimensions .* got shape \(5,\)"):
        ensemble_mlp(x[0, 0], ws, bs)
    with pytest.raises(ValueError, match=r"`weights\[1\]` must have 3 dimensions"):
        ensemble_mlp(x, [ws[0], ws[1][0]], bs)
    with pytest.raises(ValueError, match=r"`biases\[0\]` must have 2 dimensions"):
        ensemble_mlp(x, ws, [bs[0][0], bs[1]])
    with pytest.raises(ValueError, match=r"`min_logvar` must have 1 dimensions"):
        ensemble_mlp(x, ws, bs, "silu", lo.unsqueeze(0), hi)


def test_mismatched_layer_sizes(gen):
    x, ws, bs, _, _ = _ok(gen, head=False)
    with pytest.raises(ValueError, match=r"`weights\[1\]` must have shape \[E, in_l, out_l\] = "
                                         r"\(3, 7, 6\), got \(3, 8, 6\)"):
        ensemble_mlp(x, [ws[0], torch.zeros(3, 8, 6)], bs)
    with pytest.raises(ValueError, match=r"`biases\[1\]` must have shape \[E, out_l\] = \(3, 6\)"):
        ensemble_mlp(x, ws, [bs[0], torch.zeros(3, 5)])
    with pytest.raises(ValueError, match=r"`x` must have shape \[E, B, in\] = \(3, 4, 5\), got "
                                         r"\(3, 4, 6\)"):
        ensemble_mlp(torch.zeros(3, 4, 6), ws, bs)
    with pytest.raises(ValueError, match=r"`weights\[1\]` must have shape .* = \(3, 7, 6\), got "
                                         r"\(2, 7, 6\)"):
        ensemble_mlp(x, [ws[0], torch.zeros(2, 7, 6)], bs)
    with pytest.raises(ValueError, match=r"one bias per weight"):
        ensemble_mlp(x, ws, bs[:1])
    with pytest.raises(ValueError, match=r"`min_logvar` must have shape \[D\] .* = \(3,\)"):
        ensemble_mlp(x, ws, bs, "silu", torch.zeros(4), torch.zeros(4))


def test_integer_dtype(gen):
    x, ws, bs, _, _ = _ok(gen, head=False)
    with pytest.raises(TypeError, match=r"`x` must be float32 or float64, got torch.int64"):
        ensemble_mlp(x.long(), ws, bs)
    with pytest.raises(TypeError, match=r"`weights\[0\]` must be float32 or float64, got "
                                        r"torch.int32"):
        ensemble_mlp(x, [ws[0].int(), ws[1]], bs)


def test_mixed_dtypes(gen):
    x, ws, bs, _, _ = _ok(gen, head=False)
    with pytest.raises(TypeError, match=r"one dtype; `x` is torch.float32, `weights\[0\]` is "
                                        r"torch.float64"):
        ensemble_mlp(x, [ws[0].double(), ws[1]], bs)


def test_mixed_devices(gen):
    x, ws, bs, lo, hi = _ok(gen)
    with pytest.raises(ValueError, match=r"one device; `x` is on cpu, `biases\[1\]` is on meta"):
        ensemble_mlp(x, ws, [bs[0], bs[1].to("meta")])
    with pytest.raises(ValueError, match=r"one device; `x` is on cpu, `max_logvar` is on meta"):
        ensemble_mlp(x, ws, bs, "silu", lo, hi.to("meta"))


def test_odd_head_width(gen):
    x, ws, bs, _, _ = _model(3, 4, [5, 7], torch.float32, "cpu", False, False, gen, False)
    with pytest.raises(ValueError, match=r"Gaussian head needs an even last-layer width .* got 7"):
        ensemble_mlp(x, ws, bs, "silu", torch.zeros(3), torch.zeros(3))


def test_one_bound_missing(gen):
    x, ws, bs, lo, hi = _ok(gen)
    with pytest.raises(ValueError, match=r"give both `min_logvar` and `max_logvar`, or neither"):
        ensemble_mlp(x, ws, bs, "silu", lo, None)
    with pytest.raises(ValueError, match=r"give both `min_logvar` and `max_logvar`, or neither"):
        ensemble_mlp(x, ws, bs, "silu", None, hi)


def test_bad_activation_and_empty_batch(gen):
    x, ws, bs, _, _ = _ok(gen, head=False)
    with pytest.raises(ValueError, match=r"`activation` must be one of"):
        ensemble_mlp(x, ws, bs, "gelu")
    with pytest.raises(ValueError, match=r"B \(batch\) must be at least 1, got 0"):
        ensemble_mlp(torch.zeros(3, 0, 5), ws, bs)


class _CudaContract:
    """The CUDA entry points' documented contracts (include/fastmbrl/ensemble_mlp.h) in torch,
    reading and writing through the raw pointers, so the Python glue of the CUDA path (argument
    order, sizes, strides, which buffers) runs on CPU tensors without a GPU."""

    def __init__(self, real):
        self.real = real

    def __getattr__(self, name):
        return getattr(self.real, name)

    @staticmethod
    def t(ptr, code, *shape):
        n = 1
        for s in shape:
            n *= s
        ct, dt = (ctypes.c_float, torch.float32) if code == 0 else (ctypes.c_double, torch.float64)
        return torch.frombuffer((ct * n).from_address(ptr), dtype=dt).view(*shape)

    def mlp_layer_forward_cuda(self, code, x, xs, W, b, E, M, K, N, act, z, h, lo, hi, D, raw,
                               stream):
        X = self.t(x, code, M, K) if xs == 0 else self.t(x, code, E, M, K)
        v = torch.matmul(X, self.t(W, code, E, K, N)) + self.t(b, code, E, N).unsqueeze(1)
        out = self.t(h, code, E, M, N)
        if act >= 0:
            if z:
                self.t(z, code, E, M, N).copy_(v)
            out.copy_(mlp_module._torch_act(act, v))
            return
        out.copy_(v)
        if D > 0:
            self.t(raw, code, E, M, D).copy_(v[..., D:])
            out[..., D:] = mlp_module.bound_logvar(v[..., D:], self.t(lo, code, D),
                                                   self.t(hi, code, D))

    def mlp_layer_backward_input_cuda(self, code, dz, W, E, M, K, N, act, zp, hp, dx, stream):
        g = torch.bmm(self.t(dz, code, E, M, K), self.t(W, code, E, N, K).transpose(1, 2))
        if act >= 0:
            g = mlp_module._torch_act_backward(act, g, self.t(zp, code, E, M, N),
                                               self.t(hp, code, E, M, N))
        self.t(dx, code, E, M, N).copy_(g)

    def mlp_layer_backward_params_cuda(self, code, x, xs, dz, E, M, I, O, dW, db, stream):
        X = self.t(x, code, M, I) if xs == 0 else self.t(x, code, E, M, I)
        D = self.t(dz, code, E, M, O)
        self.t(dW, code, E, I, O).copy_(torch.matmul(X.transpose(-1, -2), D))
        self.t(db, code, E, O).copy_(D.sum(1))

    def mlp_sum_members_cuda(self, code, ws, E, n, out, stream):
        self.t(out, code, n).copy_(self.t(ws, code, E, n).sum(0))

    def mlp_head_backward_cuda(self, code, g, raw, lo, hi, rows, D, dy, d_lo, d_hi, stream):
        G = self.t(g, code, rows, 2 * D)
        r = self.t(raw, code, rows, D).clone().requires_grad_(True)
        lo_t = self.t(lo, code, D).clone().requires_grad_(True)
        hi_t = self.t(hi, code, D).clone().requires_grad_(True)
        grads = torch.autograd.grad(mlp_module.bound_logvar(r, lo_t, hi_t), (r, lo_t, hi_t),
                                    G[:, D:])
        out = self.t(dy, code, rows, 2 * D)
        out[:, :D] = G[:, :D]
        out[:, D:] = grads[0]
        self.t(d_lo, code, D).copy_(grads[1])
        self.t(d_hi, code, D).copy_(grads[2])


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("head", [False, True])
@pytest.mark.parametrize("n_layers", [1, 3])
def test_cuda_python_glue_against_the_entry_point_contracts(monkeypatch, shared, head, n_layers,
                                                            gen):
    sizes = [9, 13, 11, 6][: n_layers] + [6]
    x, ws, bs, lo, hi = _model(3, 5, sizes, torch.float64, "cpu", shared, head, gen, False)
    act = ACT_CODES["tanh"]
    want_out, want_saved = mlp_module._forward_cpu(x, ws, bs, act, lo, hi)
    grad = torch.randn(want_out.shape, generator=gen, dtype=torch.float64)
    want = mlp_module._backward_cpu(grad, x, ws, want_saved, act, lo, hi, True)
    monkeypatch.setattr(_native, "_C", _CudaContract(_native._C))
    monkeypatch.setattr(_native, "cuda_stream", lambda device: 0)
    out, saved = mlp_module._forward_cuda(x, ws, bs, act, lo, hi)
    got = mlp_module._backward_cuda(grad, x, ws, saved, act, lo, hi, True)
    torch.testing.assert_close(out, want_out)
    for a, b in zip(saved, want_saved, strict=True):
        torch.testing.assert_close(a, b)
    flat = [(a, b) for a, b in zip(got, want, strict=True) if isinstance(a, torch.Tensor)]
    flat += [(a, b) for la, lb in zip(got[1:3], want[1:3], strict=True)
             for a, b in zip(la, lb, strict=True)]
    for a, b in flat:
        torch.testing.assert_close(a, b)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or not _native.HAS_CUDA_KERNELS,
                    reason="no CUDA device")
def test_cuda_graph_capture(gen):
    x, ws, bs, lo, hi = _model(7, 256, [23, 200, 200, 36], torch.float32, "cuda", False, True,
                               gen, requires_grad=False)
    ensemble_mlp(x, ws, bs, "silu", lo, hi, backend="native")  # warm-up allocations
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        mean, logvar = ensemble_mlp(x, ws, bs, "silu", lo, hi, backend="native")
    x.copy_(torch.randn_like(x))
    g.replay()
    torch.cuda.synchronize()
    want = ensemble_mlp_reference(x, ws, bs, "silu", lo, hi)
    torch.testing.assert_close(mean, want[0])
    torch.testing.assert_close(logvar, want[1])
