"""fastmbrl.ops.value_aware_loss / itervaml_loss: native kernels against the pure-PyTorch
reference."""

from __future__ import annotations

import pytest
import torch

from conftest import DEVICES, TOL
from fastmbrl import _native
from fastmbrl.ops import itervaml_loss, value_aware_loss, value_aware_loss_reference

pytestmark = pytest.mark.skipif(not _native.HAS_NATIVE, reason="native module not built")

# q_model shapes: 1-D, [E, B], [E, B, 1], odd sizes, a large one (several SIMD tails)
SHAPES = [(1,), (5,), (1, 1), (3, 7), (7, 256), (7, 33, 1), (2, 5, 3), (8, 1001), (1, 4099)]
NORMS = ["l1", "l2"]
REDUCTIONS = ["sum", "mean", "none"]


def _inputs(shape, dtype, device, shared, gen, requires_grad=True, ties=True):
    def r(*s):
        return torch.randn(s, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)

    q_model = r(*shape)
    q_true = r(*shape[1:]) if shared else r(*shape)
    if ties:  # exact equality somewhere: l1's gradient is 0 there, in the reference too
        flat_t, flat_m = q_true.reshape(-1), q_model.reshape(-1)
        flat_t[::3] = flat_m[: flat_t.numel()][::3]
    return q_true.requires_grad_(requires_grad), q_model.requires_grad_(requires_grad)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_forward_backward_match_reference(device, dtype, shape, shared, norm, reduction, gen):
    q_true, q_model = _inputs(shape, dtype, device, shared, gen)
    out = value_aware_loss(q_true, q_model, norm, reduction, backend="native")
    ref = value_aware_loss_reference(q_true, q_model, norm, reduction)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, **TOL[dtype])
    grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(device, dtype)
    got = torch.autograd.grad(out, (q_true, q_model), grad_out)
    want = torch.autograd.grad(ref, (q_true, q_model), grad_out)
    for g, w in zip(got, want, strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l1_gradient_is_zero_at_equality(device, dtype):
    q_model = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.5, -0.25]], dtype=dtype, device=device,
                           requires_grad=True)
    q_true = torch.tensor([1.0, 0.0, 3.0], dtype=dtype, device=device, requires_grad=True)
    out = value_aware_loss(q_true, q_model, "l1", backend="native")
    d_true, d_model = torch.autograd.grad(out, (q_true, q_model))
    # d = q_true - q_model: [[0, 2, 0], [0.5, -0.5, 3.25]] -> dL/dq_model = -sign(d)
    assert d_model.tolist() == [[0.0, -1.0, 0.0], [-1.0, 1.0, -1.0]]
    assert d_true.tolist() == [1.0, 0.0, 1.0]
    ref_true, ref_model = torch.autograd.grad(value_aware_loss_reference(q_true, q_model, "l1"),
                                              (q_true, q_model))
    assert torch.equal(d_model, ref_model) and torch.equal(d_true, ref_true)


@pytest.mark.parametrize("norm", NORMS)
def test_hand_computed(norm):
    q_model = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64, requires_grad=True)
    q_true = torch.tensor([[0.5, 2.0], [5.0, 1.0]], dtype=torch.float64)
    # d = [[-0.5, 0], [2, 2]]
    if norm == "l1":
        want_sum, want_grad = 4.5, [[1.0, 0.0], [-1.0, -1.0]]
    else:
        want_sum, want_grad = 8.25, [[1.0, 0.0], [-4.0, -4.0]]
    out = value_aware_loss(q_true, q_model, norm, "sum", backend="native")
    assert out.item() == want_sum
    (g,) = torch.autograd.grad(out, q_model)
    assert g.tolist() == want_grad
    mean = value_aware_loss(q_true, q_model, norm, "mean", backend="native")
    assert mean.item() == want_sum / 4
    (g,) = torch.autograd.grad(mean, q_model)
    assert g.tolist() == [[x / 4 for x in row] for row in want_grad]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck(device, shared, norm, reduction, gen):
    # no ties: |x| is not differentiable at 0, so finite differences would disagree there
    inputs = _inputs((3, 4, 2), torch.float64, device, shared, gen, ties=False)
    assert torch.autograd.gradcheck(
        lambda t, m: value_aware_loss(t, m, norm, reduction, backend="native"), inputs
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("elementwise", [False, True])
def test_opcheck(device, shared, norm, elementwise, gen):
    q_true, q_model = _inputs((3, 6, 5), torch.float32, device, shared, gen, ties=False)
    torch.library.opcheck(torch.ops.fastmbrl.value_aware_loss.default,
                          (q_true, q_model, norm, elementwise))


def test_double_backward_is_a_clear_error(gen):
    q_true, q_model = _inputs((3, 5), torch.float64, "cpu", False, gen)
    loss = value_aware_loss(q_true, q_model, "l2", backend="native")
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, q_model, create_graph=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_compile_fullgraph_forward_backward(device, reduction, gen):
    torch._dynamo.reset()
    q_true, q_model = _inputs((4, 9), torch.float32, device, True, gen)

    def step(t, m):
        return value_aware_loss(t, m, "l1", reduction, backend="native") * 2.0

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    out = compiled(q_true, q_model)
    ref = 2.0 * value_aware_loss_reference(q_true, q_model, "l1", reduction)
    torch.testing.assert_close(out, ref)
    grad_out = torch.ones_like(out)
    got = torch.autograd.grad(out, (q_true, q_model), grad_out)
    want = torch.autograd.grad(ref, (q_true, q_model), grad_out)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_non_contiguous_inputs(gen):
    q_model = torch.randn(6, 10, generator=gen, dtype=torch.float64)[::2, ::3]
    q_true = torch.randn(4, 3, generator=gen, dtype=torch.float64).t()
    assert not q_model.is_contiguous() and not q_true.is_contiguous()
    for norm in NORMS:
        out = value_aware_loss(q_true, q_model, norm, "none", backend="native")
        torch.testing.assert_close(out, value_aware_loss_reference(q_true, q_model, norm, "none"))


def test_gradient_to_q_true_only_when_needed(gen):
    q_true, q_model = _inputs((3, 5), torch.float64, "cpu", False, gen)
    q_true = q_true.detach()
    out = value_aware_loss(q_true, q_model, "l2", backend="native")
    out.backward()
    assert q_true.grad is None
    torch.testing.assert_close(q_model.grad, -2 * (q_true - q_model.detach()))


def test_nan_propagates(gen):
    q_model = torch.tensor([[float("nan"), 1.0]], requires_grad=True)
    q_true = torch.tensor([[0.0, 0.0]])
    for norm in NORMS:
        out = value_aware_loss(q_true, q_model, norm, "none", backend="native")
        assert torch.isnan(out[0, 0]) and out[0, 1].item() == 1.0
        (g,) = torch.autograd.grad(out.sum(), q_model)
        assert torch.isnan(g[0, 0]) and torch.isfinite(g[0, 1])


def test_backend_reference_and_auto_dispatch(monkeypatch, gen):
    import fastmbrl.ops.value_aware as va

    calls = []
    real = torch.ops.fastmbrl.value_aware_loss
    monkeypatch.setattr(torch.ops.fastmbrl, "value_aware_loss",
                        lambda *a: calls.append(1) or real(*a))
    q_true, q_model = _inputs((2, 3), torch.float32, "cpu", False, gen)
    value_aware_loss(q_true, q_model, backend="reference")
    assert calls == []
    value_aware_loss(q_true, q_model, backend="native")
    assert calls == [1]
    monkeypatch.setattr(va, "CPU_NATIVE_MIN_ELEMENTS", 7)
    value_aware_loss(q_true, q_model, backend="auto")  # 6 elements: below
    assert calls == [1]
    monkeypatch.setattr(va, "CPU_NATIVE_MIN_ELEMENTS", 6)
    value_aware_loss(q_true, q_model, backend="auto")
    assert calls == [1, 1]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or not _native.HAS_CUDA_KERNELS,
                    reason="no CUDA device")
def test_cuda_reduction_is_deterministic(gen):
    q_true, q_model = _inputs((7, 100_003), torch.float32, "cuda", False, gen, ties=False)
    a = value_aware_loss(q_true, q_model, "l1", backend="native")
    b = value_aware_loss(q_true, q_model, "l1", backend="native")
    assert torch.equal(a, b)


# ---- IterVAML --------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_itervaml_is_mean_squared_value_difference(backend, reduction, gen):
    v_model = torch.randn(4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    v_true = torch.randn(6, generator=gen, dtype=torch.float64)
    out = itervaml_loss(v_model, v_true, reduction, backend=backend)
    sq = (v_model - v_true) ** 2
    torch.testing.assert_close(out, sq.mean() if reduction == "mean" else sq.sum())


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_itervaml_gradient_reaches_the_state_through_v(backend, gen):
    """V(s) = s·W s: ∇_ŝ mean_b (V(ŝ_b) − V(s_b))² = 2/B (V(ŝ) − V(s)) (W + Wᵀ) ŝ per row."""
    B, O = 5, 3
    W = torch.randn(O, O, generator=gen, dtype=torch.float64)
    s_hat = torch.randn(B, O, generator=gen, dtype=torch.float64, requires_grad=True)
    s_true = torch.randn(B, O, generator=gen, dtype=torch.float64)

    def V(s):
        return torch.einsum("bi,ij,bj->b", s, W, s)

    loss = itervaml_loss(V(s_hat), V(s_true).detach(), backend=backend)
    (g,) = torch.autograd.grad(loss, s_hat)
    with torch.no_grad():
        diff = V(s_hat) - V(s_true)
        want = 2.0 / B * diff[:, None] * (s_hat @ (W + W.T))
    torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-12)


# ---- bad input: every error names the argument -----------------------------------------------
def _ok(gen):
    return _inputs((3, 4), torch.float32, "cpu", False, gen, requires_grad=False)


def test_bad_norm_and_reduction(gen):
    q_true, q_model = _ok(gen)
    with pytest.raises(ValueError, match=r"value_aware_loss: `norm` must be one of"):
        value_aware_loss(q_true, q_model, "l3")
    with pytest.raises(ValueError, match=r"`reduction` must be one of"):
        value_aware_loss(q_true, q_model, reduction="avg")
    with pytest.raises(ValueError, match=r"itervaml_loss: `reduction` must be one of"):
        itervaml_loss(q_model, q_true, reduction="none!")


def test_bad_shapes(gen):
    q_true, q_model = _ok(gen)
    with pytest.raises(ValueError, match=r"`q_true` must have shape .*\(3, 4\).* got \(3, 5\)"):
        value_aware_loss(torch.zeros(3, 5), q_model)
    with pytest.raises(ValueError, match=r"`q_true` must have shape .* = \(4,\), got \(3,\)"):
        value_aware_loss(torch.zeros(3), q_model)
    with pytest.raises(ValueError, match=r"`q_model` must have at least one dimension"):
        value_aware_loss(torch.tensor(1.0), torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"q_model.numel\(\) must be at least 1"):
        value_aware_loss(torch.zeros(0), torch.zeros(3, 0))


def test_bad_dtypes_and_devices(gen):
    q_true, q_model = _ok(gen)
    with pytest.raises(TypeError, match=r"`q_true` must be float32 or float64, got torch.int64"):
        value_aware_loss(q_true.long(), q_model)
    with pytest.raises(TypeError, match=r"one dtype; `q_true` is torch.float32, `q_model` is "
                                        r"torch.float64"):
        value_aware_loss(q_true, q_model.double())
    with pytest.raises(ValueError, match=r"one device; `q_true` is on cpu, `q_model` is on meta"):
        value_aware_loss(q_true, q_model.to("meta"))
    with pytest.raises(TypeError, match=r"`q_model` must be a torch.Tensor, got list"):
        value_aware_loss(q_true, [[1.0]])
