"""fastmbrl.ops.vagram_loss: the fused native kernels against the pure-PyTorch reference."""

from __future__ import annotations

import itertools

import pytest
import torch

from conftest import DEVICES, TOL
from fastmbrl import _native
from fastmbrl.ops import vagram_loss, vagram_loss_reference

pytestmark = pytest.mark.skipif(not _native.HAS_NATIVE, reason="native module not built")

# (E, B, O, K); K=0 below means value_grad given as [E, B, O] (one head).
SHAPES = [
    (1, 1, 1, 0), (1, 1, 2, 1), (2, 7, 17, 2), (3, 7, 18, 4), (5, 256, 17, 4), (8, 256, 18, 0),
    (4, 1000, 1, 2), (7, 1000, 17, 1), (6, 13, 18, 2), (1, 256, 17, 4), (8, 1, 17, 4),
]


def _inputs(shape, dtype, device, shared, gen, requires_grad=True, target_grad=True):
    E, B, O, K = shape

    def r(*s):
        return torch.randn(*s, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)

    pred = r(E, B, O).requires_grad_(requires_grad)
    target = (r(B, O) if shared else r(E, B, O)).requires_grad_(target_grad)
    value_grad = r(E, B, O) if K == 0 else r(K, E, B, O)
    return pred, target, value_grad


def _check(out, ref, pred, target, dtype, gen):
    torch.testing.assert_close(out, ref, **TOL[dtype])
    w = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device, dtype)
    got = torch.autograd.grad(out, (pred, target), w)
    want = torch.autograd.grad(ref, (pred, target), w)
    for g, r in zip(got, want, strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, r, **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "E{}B{}O{}K{}".format(*s))
@pytest.mark.parametrize("shared", [False, True], ids=["per_member", "shared"])
@pytest.mark.parametrize("bounded", [True, False], ids=["bounded", "unbounded"])
@pytest.mark.parametrize("reduction", ["mean", "member"])
def test_forward_backward_match_reference(device, dtype, shape, shared, bounded, reduction, gen):
    pred, target, value_grad = _inputs(shape, dtype, device, shared, gen)
    out = vagram_loss(pred, target, value_grad, bounded, reduction, backend="native")
    ref = vagram_loss_reference(pred, target, value_grad, bounded, reduction)
    assert out.shape == ref.shape == ((shape[0],) if reduction == "member" else ())
    _check(out, ref, pred, target, dtype, gen)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("E", range(1, 9))
@pytest.mark.parametrize("B", [1, 7, 256, 1000])
def test_every_ensemble_size_and_batch(device, E, B, gen):
    """E = 1..8 across the batch sizes, both modes, K in {1, 2, 4}, fp32 (odd sizes included)."""
    for (O, K), bounded in itertools.product([(1, 2), (17, 4), (18, 1)], [True, False]):
        pred, target, value_grad = _inputs((E, B, O, K), torch.float32, device, B % 2 == 1, gen)
        out = vagram_loss(pred, target, value_grad, bounded, "member", backend="native")
        ref = vagram_loss_reference(pred, target, value_grad, bounded, "member")
        _check(out, ref, pred, target, torch.float32, gen)


@pytest.mark.parametrize("device", DEVICES)
def test_reference_formula_by_hand(device):
    """E=1, B=1, O=2, K=1: pred (1, 2), target (0, 0), value gradient (3, 4)."""
    pred = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64, device=device, requires_grad=True)
    target = torch.zeros(1, 1, 2, dtype=torch.float64, device=device)
    g = torch.tensor([[[3.0, 4.0]]], dtype=torch.float64, device=device)
    # bounded: mean_d (g_d Δ_d)² = ((3·1)² + (4·2)²) / 2 = (9 + 64) / 2
    for backend in ("reference", "native"):
        loss = vagram_loss(pred, target, g, True, backend=backend)
        assert loss.item() == pytest.approx(36.5, rel=1e-14)
        (grad,) = torch.autograd.grad(loss, pred)  # 2/2 · g² Δ = (9, 32)
        torch.testing.assert_close(grad, torch.tensor([[[9.0, 32.0]]], dtype=torch.float64,
                                                      device=device))
        # unbounded: (Σ_d g_d Δ_d)² = (3 + 8)² = 121; gradient 2 · 11 · g = (66, 88)
        loss = vagram_loss(pred, target, g, False, backend=backend)
        assert loss.item() == pytest.approx(121.0, rel=1e-14)
        (grad,) = torch.autograd.grad(loss, pred)
        torch.testing.assert_close(grad, torch.tensor([[[66.0, 88.0]]], dtype=torch.float64,
                                                      device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_two_heads_average_by_hand(device):
    """K=2 averages the heads: heads (1, 0) and (0, 2), Δ = (1, 1)."""
    pred = torch.ones(1, 1, 2, dtype=torch.float64, device=device)
    target = torch.zeros(1, 2, dtype=torch.float64, device=device)
    g = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 2.0]]]], dtype=torch.float64, device=device)
    for backend in ("reference", "native"):
        # bounded: (1/K)(1/O) Σ_k Σ_d (g Δ)² = (1 + 4) / 4; unbounded: (1² + 2²) / 2
        assert vagram_loss(pred, target, g, True, backend=backend).item() == 1.25
        assert vagram_loss(pred, target, g, False, backend=backend).item() == 2.5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("bounded", [True, False])
@pytest.mark.parametrize("K", [0, 3])
def test_gradcheck(device, shared, bounded, K, gen):
    pred, target, value_grad = _inputs((3, 4, 5, K), torch.float64, device, shared, gen)
    assert torch.autograd.gradcheck(
        lambda p, t: vagram_loss(p, t, value_grad, bounded, "member", backend="native"),
        (pred, target),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("bounded", [False, True])
def test_opcheck(device, shared, bounded, gen):
    pred, target, value_grad = _inputs((3, 6, 5, 2), torch.float32, device, shared, gen)
    torch.library.opcheck(torch.ops.fastmbrl.vagram_loss.default,
                          (pred, target, value_grad, bounded))
    torch.library.opcheck(torch.ops.fastmbrl.vagram_loss.default,
                          (pred.detach(), target.detach(), value_grad, bounded))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bounded", [True, False])
def test_compile_fullgraph_forward_backward(device, bounded, gen):
    torch._dynamo.reset()
    pred, target, value_grad = _inputs((4, 9, 6, 2), torch.float32, device, True, gen)

    def step(p, t, g):
        return vagram_loss(p, t, g, bounded, backend="native") * 2.0

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    out = compiled(pred, target, value_grad)
    ref = 2.0 * vagram_loss_reference(pred, target, value_grad, bounded)
    torch.testing.assert_close(out, ref)
    got = torch.autograd.grad(out, (pred, target))
    want = torch.autograd.grad(ref, (pred, target))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


@pytest.mark.slow
def test_compile_inductor(gen):
    """The op stays one opaque node under inductor; its backward scales the saved gradient."""
    torch._dynamo.reset()
    pred, target, value_grad = _inputs((2, 8, 3, 2), torch.float32, "cpu", False, gen)
    compiled = torch.compile(lambda p, t, g: vagram_loss(p, t, g, False, backend="native"),
                             fullgraph=True)
    out = compiled(pred, target, value_grad)
    out.backward()
    ref = vagram_loss_reference(pred.detach().requires_grad_(), target, value_grad, False)
    torch.testing.assert_close(out.detach(), ref.detach())
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_value_grad_gets_no_gradient(gen):
    pred, target, value_grad = _inputs((3, 5, 4, 2), torch.float64, "cpu", False, gen)
    value_grad.requires_grad_(True)
    for backend in ("native", "reference"):
        loss = vagram_loss(pred, target, value_grad, True, backend=backend)
        got = torch.autograd.grad(loss, (pred, value_grad), allow_unused=True)
        assert got[0] is not None and got[1] is None


def test_no_grad_inputs_and_target_only(gen):
    """Works when nothing requires grad, and when only the target does."""
    pred, target, value_grad = _inputs((3, 5, 4, 2), torch.float64, "cpu", True, gen,
                                       requires_grad=False, target_grad=False)
    out = vagram_loss(pred, target, value_grad, False, backend="native")
    torch.testing.assert_close(out, vagram_loss_reference(pred, target, value_grad, False))
    target.requires_grad_(True)
    got = torch.autograd.grad(vagram_loss(pred, target, value_grad, backend="native"), target)
    want = torch.autograd.grad(vagram_loss_reference(pred, target, value_grad), target)
    torch.testing.assert_close(got, want, **TOL[torch.float64])


def test_double_backward_is_a_clear_error(gen):
    pred, target, value_grad = _inputs((2, 3, 4, 1), torch.float64, "cpu", False, gen)
    loss = vagram_loss(pred, target, value_grad, backend="native")
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, pred, create_graph=True)


def test_non_contiguous_inputs(gen):
    pred = torch.randn(6, 10, 8, generator=gen, dtype=torch.float64)[::2, :, ::2]
    target = torch.randn(4, 10, generator=gen, dtype=torch.float64).t()
    value_grad = torch.randn(4, 10, 3, 2, generator=gen, dtype=torch.float64).permute(3, 2, 1, 0)
    assert not pred.is_contiguous() and not target.is_contiguous()
    assert not value_grad.is_contiguous()
    for bounded in (True, False):
        out = vagram_loss(pred, target, value_grad, bounded, "member", backend="native")
        ref = vagram_loss_reference(pred, target, value_grad, bounded, "member")
        torch.testing.assert_close(out, ref, **TOL[torch.float64])


def test_backend_reference_is_used(monkeypatch, gen):
    pred, target, value_grad = _inputs((2, 3, 4, 1), torch.float32, "cpu", False, gen)
    calls = []
    monkeypatch.setattr(torch.ops.fastmbrl, "vagram_loss",
                        lambda *a: calls.append(a) or (torch.zeros(2), torch.zeros(2, 3, 4)))
    vagram_loss(pred, target, value_grad, backend="reference")
    assert calls == []
    vagram_loss(pred, target, value_grad, backend="native")
    assert len(calls) == 1


def test_auto_dispatch_on_cpu_follows_the_measured_verdict(monkeypatch, gen):
    import fastmbrl.ops.vagram as vagram_module

    calls = []
    real = torch.ops.fastmbrl.vagram_loss
    monkeypatch.setattr(torch.ops.fastmbrl, "vagram_loss", lambda *a: calls.append(1) or real(*a))
    args = _inputs((2, 3, 4, 1), torch.float32, "cpu", False, gen)
    monkeypatch.setattr(vagram_module, "CPU_NATIVE_MIN_ELEMENTS", 25)
    vagram_loss(*args, backend="auto")
    assert calls == []  # 24 elements of pred: below the threshold, the reference
    monkeypatch.setattr(vagram_module, "CPU_NATIVE_MIN_ELEMENTS", 24)
    vagram_loss(*args, backend="auto")
    assert calls == [1]


# ---- bad input: every error names the argument and the expected and actual value ------------
def _ok(gen):
    return _inputs((3, 4, 5, 2), torch.float32, "cpu", False, gen)


def test_bad_rank(gen):
    pred, target, value_grad = _ok(gen)
    with pytest.raises(ValueError, match=r"`pred` must have 3 dimensions \[E, B, O\], got shape "
                                         r"\(4, 5\)"):
        vagram_loss(pred[0], target, value_grad)
    with pytest.raises(ValueError, match=r"`target` must have 2 or 3 dimensions"):
        vagram_loss(pred, target[0, 0], value_grad)
    with pytest.raises(ValueError, match=r"`value_grad` must have 3 or 4 dimensions"):
        vagram_loss(pred, target, value_grad[0, 0])


def test_mismatched_shapes(gen):
    pred, target, value_grad = _ok(gen)
    with pytest.raises(ValueError, match=r"`target` must have shape \[B, O\] .* = \(4, 5\), got "
                                         r"\(4, 6\)"):
        vagram_loss(pred, torch.zeros(4, 6), value_grad)
    with pytest.raises(ValueError, match=r"`target` must have shape \[E, B, O\]"):
        vagram_loss(pred, torch.zeros(2, 4, 5), value_grad)
    with pytest.raises(ValueError, match=r"`value_grad` must have shape \[K, E, B, O\] .* = "
                                         r"\(2, 3, 4, 5\), got \(2, 3, 4, 6\)"):
        vagram_loss(pred, target, torch.zeros(2, 3, 4, 6))
    with pytest.raises(ValueError, match=r"`value_grad` must have shape \[E, B, O\] like `pred` "
                                         r"= \(3, 4, 5\), got \(3, 1, 5\)"):
        vagram_loss(pred, target, torch.zeros(3, 1, 5))


def test_zero_heads(gen):
    pred, target, _ = _ok(gen)
    with pytest.raises(ValueError, match=r"K \(value heads\) must be at least 1, got 0"):
        vagram_loss(pred, target, torch.zeros(0, 3, 4, 5))


def test_empty_batch():
    z = torch.zeros(3, 0, 5)
    with pytest.raises(ValueError, match=r"B \(batch\) must be at least 1, got 0"):
        vagram_loss(z, z, z)


def test_mixed_dtypes(gen):
    pred, target, value_grad = _ok(gen)
    with pytest.raises(TypeError, match=r"one dtype; `pred` is torch.float32, `value_grad` is "
                                        r"torch.float64"):
        vagram_loss(pred, target, value_grad.double())


def test_integer_dtype(gen):
    pred, target, value_grad = _ok(gen)
    with pytest.raises(TypeError, match=r"`target` must be float32 or float64, got torch.int64"):
        vagram_loss(pred, target.long(), value_grad)


def test_different_devices(gen):
    pred, target, value_grad = _ok(gen)
    with pytest.raises(ValueError, match=r"one device; `pred` is on cpu, `value_grad` is on meta"):
        vagram_loss(pred, target, value_grad.to("meta"))


def test_bad_reduction(gen):
    with pytest.raises(ValueError, match=r"`reduction` must be one of \('mean', 'member'\), got "
                                         r"'sum'"):
        vagram_loss(*_ok(gen), reduction="sum")


def test_not_a_tensor(gen):
    pred, target, _ = _ok(gen)
    with pytest.raises(TypeError, match=r"`value_grad` must be a torch.Tensor"):
        vagram_loss(pred, target, [[1.0]])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or not _native.HAS_CUDA_KERNELS,
                    reason="no CUDA device")
@pytest.mark.parametrize("bounded", [True, False])
def test_cuda_graph_capture(bounded, gen):
    pred, target, value_grad = _inputs((7, 256, 17, 4), torch.float32, "cuda", True, gen,
                                       requires_grad=False, target_grad=False)
    static_out = vagram_loss(pred, target, value_grad, bounded, backend="native")  # warm-up
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        static_out = vagram_loss(pred, target, value_grad, bounded, backend="native")
    pred.copy_(torch.randn_like(pred))
    g.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(static_out,
                               vagram_loss_reference(pred, target, value_grad, bounded))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or not _native.HAS_CUDA_KERNELS,
                    reason="no CUDA device")
def test_cuda_deterministic(gen):
    pred, target, value_grad = _inputs((7, 4096, 17, 4), torch.float32, "cuda", False, gen,
                                       requires_grad=False, target_grad=False)
    a = vagram_loss(pred, target, value_grad, True, "member", backend="native")
    b = vagram_loss(pred, target, value_grad, True, "member", backend="native")
    assert torch.equal(a, b)
