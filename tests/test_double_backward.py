"""Second derivatives through every op (issue 10): each either differentiates twice exactly
(compared with the pure-PyTorch reference, and gradgradcheck in float64) or raises the clear
"double backward" error; never silently zero or wrong. Also the ops' smaller input checks."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import DEVICES
from fastmbrl import _native
from fastmbrl.ops import (
    ensemble_mlp,
    ensemble_rollout_step,
    gaussian_nll,
    itervaml_loss,
    vagram_loss,
    value_aware_loss,
    value_gradients,
)

native_only = pytest.mark.skipif(not _native.HAS_NATIVE, reason="native module not built")
F64 = dict(dtype=torch.float64)


def second_derivatives(fn, inputs, gen):
    """``d/d inputs <grad fn(inputs), v>`` for a fixed random ``v``: exercises double backward."""
    out = fn(*inputs)
    grads = torch.autograd.grad(out.sum(), inputs, create_graph=True)
    vs = [torch.randn(g.shape, generator=gen, **F64).to(g) for g in grads]
    total = sum((g * v).sum() for g, v in zip(grads, vs, strict=True))
    return torch.autograd.grad(total, inputs, allow_unused=True)


def leaves(*ts):
    return [t.detach().clone().requires_grad_(True) for t in ts]


# --------------------------------------------------------------------------- gaussian_nll
@native_only
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["sum", "mean", "member", "none"])
@pytest.mark.parametrize("shared", [False, True])
def test_gaussian_nll_native_double_backward_equals_reference(device, reduction, shared, gen):
    E, B, D = 3, 5, 4
    mean = torch.randn(E, B, D, generator=gen, **F64).to(device)
    logvar = 0.5 * torch.randn(E, B, D, generator=gen, **F64).to(device)
    target = torch.randn(*((B, D) if shared else (E, B, D)), generator=gen, **F64).to(device)
    got = second_derivatives(lambda m, lv, t: gaussian_nll(m, lv, t, reduction, "native"),
                             leaves(mean, logvar, target), torch.Generator().manual_seed(1))
    want = second_derivatives(lambda m, lv, t: gaussian_nll(m, lv, t, reduction, "reference"),
                              leaves(mean, logvar, target), torch.Generator().manual_seed(1))
    for g, w in zip(got, want, strict=True):
        assert w.abs().sum() > 0
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)
    torch.autograd.gradgradcheck(lambda m, lv, t: gaussian_nll(m, lv, t, reduction, "native"),
                                 leaves(mean, logvar, target))


@native_only
def test_gaussian_nll_auto_backend_at_native_size_has_second_derivatives():
    """From CPU_NATIVE_MIN_ELEMENTS on, ``auto`` runs the native kernel on CPU: the Hessian
    diagonal d²L/dmean² = 2 exp(-logvar) / N per member must come back, not zeros."""
    from fastmbrl.ops.nll import CPU_NATIVE_MIN_ELEMENTS

    E, D = 2, 8
    B = CPU_NATIVE_MIN_ELEMENTS // (E * D) + 1
    mean = torch.zeros(E, B, D, requires_grad=True)
    logvar = torch.full((E, B, D), math.log(0.5))
    target = torch.ones(E, B, D)
    (g,) = torch.autograd.grad(gaussian_nll(mean, logvar, target), mean, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), mean)
    torch.testing.assert_close(h, torch.full_like(h, 2 * 2.0 / (B * D)))


# --------------------------------------------------------------------------- ensemble_mlp
def _mlp_inputs(gen, gaussian=True):
    E, B, sizes = 2, 4, [3, 5, 2 * 2 if gaussian else 2]
    x = torch.randn(E, B, sizes[0], generator=gen, **F64)
    ws = [torch.randn(E, i, o, generator=gen, **F64) / math.sqrt(i)
          for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [0.1 * torch.randn(E, o, generator=gen, **F64) for o in sizes[1:]]
    lo = -2.0 * torch.ones(2, **F64) if gaussian else None
    hi = 0.5 * torch.ones(2, **F64) if gaussian else None
    return x, ws, bs, lo, hi


@native_only
@pytest.mark.parametrize("gaussian", [False, True])
def test_ensemble_mlp_native_refuses_double_backward(gaussian, gen):
    x, ws, bs, lo, hi = _mlp_inputs(gen, gaussian)
    x, *ws = leaves(x, *ws)
    out = ensemble_mlp(x, ws, bs, "silu", lo, hi, backend="native")
    loss = sum(o.square().sum() for o in out) if gaussian else out.square().sum()
    with pytest.raises(RuntimeError, match="ensemble_mlp: double backward .* not supported"):
        torch.autograd.grad(loss, [x, *ws], create_graph=True)
    # first derivatives are unaffected
    out = ensemble_mlp(x, ws, bs, "silu", lo, hi, backend="native")
    loss = sum(o.square().sum() for o in out) if gaussian else out.square().sum()
    assert all(g.abs().sum() > 0 for g in torch.autograd.grad(loss, [x, *ws]))


def test_ensemble_mlp_reference_double_backward(gen):
    x, ws, bs, lo, hi = _mlp_inputs(gen)
    torch.autograd.gradgradcheck(
        lambda x, w0, w1: ensemble_mlp(x, [w0, w1], bs, "silu", lo, hi, backend="reference"),
        leaves(x, *ws))


# --------------------------------------------------------------------------- ensemble_rollout_step
def _rollout_inputs(gen):
    N, O, A, E = 6, 3, 2, 3
    D = O + 1
    sizes = [O + A, 7, 2 * D]
    ws = [torch.randn(E, i, o, generator=gen, **F64) / math.sqrt(i)
          for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [0.1 * torch.randn(E, o, generator=gen, **F64) for o in sizes[1:]]
    state = torch.randn(N, O, generator=gen, **F64)
    action = torch.randn(N, A, generator=gen, **F64)
    members = torch.randint(0, E, (N,), generator=gen)
    extra = dict(min_logvar=-3.0 * torch.ones(D, **F64), max_logvar=0.5 * torch.ones(D, **F64))
    return state, action, ws, bs, members, extra


@pytest.mark.parametrize("backend", ["native", "auto", "reference"])
def test_ensemble_rollout_step_differentiates_when_inputs_require_grad(backend, gen):
    state, action, ws, bs, members, extra = _rollout_inputs(gen)

    def step(s, a, w0, backend=backend):
        ns, r, _ = ensemble_rollout_step(s, a, [w0, ws[1]], bs, members, seed=7, offset=3,
                                         backend=backend, **extra)
        return ns.sum(-1) + r

    s, a, w0 = leaves(state, action, ws[0])
    out = step(s, a, w0)  # the native path used to fail here (addmm with out=)
    with torch.no_grad():  # the same values as the forward-only native step
        torch.testing.assert_close(out, step(state, action, ws[0], "reference"))
    torch.autograd.gradcheck(step, (s, a, w0))
    torch.autograd.gradgradcheck(step, (s, a, w0))


# --------------------------------------------------------------------------- losses
@native_only
def test_vagram_loss_native_refuses_double_backward_reference_is_exact(gen):
    E, B, O, K = 2, 5, 3, 2
    pred, target = leaves(torch.randn(E, B, O, generator=gen, **F64),
                          torch.randn(E, B, O, generator=gen, **F64))
    g = torch.randn(K, E, B, O, generator=gen, **F64)
    for bounded in (True, False):
        with pytest.raises(RuntimeError, match="vagram_loss: double backward"):
            torch.autograd.grad(vagram_loss(pred, target, g, bounded, backend="native"), pred,
                                create_graph=True)
        torch.autograd.gradgradcheck(
            lambda p, t, b=bounded: vagram_loss(p, t, g, b, backend="reference"), (pred, target))


@native_only
@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_value_aware_loss_native_refuses_double_backward_reference_is_exact(norm, gen):
    q_true, q_model = leaves(torch.randn(3, 7, generator=gen, **F64),
                             torch.randn(3, 7, generator=gen, **F64))
    with pytest.raises(RuntimeError, match="value_aware_loss: double backward"):
        torch.autograd.grad(value_aware_loss(q_true, q_model, norm, backend="native"), q_model,
                            create_graph=True)
    if norm == "l2":  # l1's second derivative is zero almost everywhere; gradgradcheck l2
        torch.autograd.gradgradcheck(
            lambda t, m: value_aware_loss(t, m, norm, backend="reference"), (q_true, q_model))


@native_only
def test_itervaml_loss_double_backward(gen):
    v_model, v_true = leaves(torch.randn(4, 6, generator=gen, **F64),
                             torch.randn(4, 6, generator=gen, **F64))
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(itervaml_loss(v_model, v_true, backend="native"), v_model,
                            create_graph=True)
    (g,) = torch.autograd.grad(itervaml_loss(v_model, v_true, backend="reference"), v_model,
                               create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), v_model)
    torch.testing.assert_close(h, torch.full_like(h, 2.0 / v_model.numel()))  # d²/dv² mean()²


def test_itervaml_loss_errors_name_its_own_arguments():
    with pytest.raises(TypeError, match="itervaml_loss: `v_model` must be float32 or float64"):
        itervaml_loss(torch.zeros(3, dtype=torch.int64), torch.zeros(3))
    with pytest.raises(ValueError, match="`v_true`.*like `v_model`"):
        itervaml_loss(torch.zeros(2, 3), torch.zeros(5))
    with pytest.raises(ValueError, match="`v_model` must have at least one dimension"):
        itervaml_loss(torch.tensor(1.0), torch.tensor(1.0))


# --------------------------------------------------------------------------- value_gradients
def _value_fn(x):  # V_k(s) = (k + 1) Σ s², head k reading x[k]
    k = torch.arange(1, x.shape[0] + 1, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 2)))
    return k * x.square().sum(-1)


def test_value_gradients_is_a_detached_first_derivative(gen):
    """VaGraM weighs errors by g as a constant: the result carries no graph, so no (wrong)
    second derivative can flow through it; g is exact."""
    s = torch.randn(5, 3, generator=gen, **F64).requires_grad_(True)
    g = value_gradients(_value_fn, s, 2, clip_quantile=None)
    assert not g.requires_grad and g.grad_fn is None
    torch.testing.assert_close(g, torch.stack([2 * s.detach(), 4 * s.detach()]))


@pytest.mark.parametrize("args, error, match", [
    ((torch.zeros(4, 3, dtype=torch.int64), 2), ValueError, "states must be floating point"),
    ((torch.tensor(1.0), 2), ValueError, "at least one dimension"),
    ((torch.zeros(4, 3), 2.5), ValueError, "num_heads must be an integer >= 1, got 2.5"),
    ((torch.zeros(4, 3), True), ValueError, "num_heads must be an integer >= 1, got True"),
    ((torch.zeros(4, 3), 0), ValueError, "num_heads must be an integer >= 1, got 0"),
    (([[1.0, 2.0]], 2), TypeError, "states must be a tensor"),
])
def test_value_gradients_bad_input_is_named(args, error, match):
    with pytest.raises(error, match=match):
        value_gradients(_value_fn, *args)


def test_value_gradients_no_rows_with_clipping_gives_no_rows():
    g = value_gradients(_value_fn, torch.zeros(0, 3, **F64), 2, clip_quantile=0.95)
    assert g.shape == (2, 0, 3)


@pytest.mark.parametrize("rows", [20, 40])
def test_value_gradients_zero_rows_stay_zero_under_clipping(rows):
    """All rows but one with a zero gradient: with 40 rows the 0.95 quantile q is 0, where
    VaGraM's ICLR rule (g·q/‖g‖ for ‖g‖ >= q) divides the zero rows by their zero norm (NaN);
    fastmbrl keeps zero rows zero and scales the other rows to norm q."""
    s = torch.zeros(rows, 3, **F64)
    s[0] = torch.tensor([3.0, 4.0, 0.0], **F64)  # head 0's gradient 2s: norm 10
    g = value_gradients(_value_fn, s, 1, clip_quantile=0.95)
    assert torch.isfinite(g).all()
    assert (g[0, 1:] == 0).all()
    q = torch.quantile(torch.tensor([10.0] + [0.0] * (rows - 1), **F64), 0.95)
    assert (q == 0) == (rows == 40)
    torch.testing.assert_close(torch.linalg.vector_norm(g[0, 0]), q)
