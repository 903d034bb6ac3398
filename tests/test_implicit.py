"""fastmbrl.implicit: implicit gradients against finite differences of the solved inner problem
(float64) for every inverse, and against autograd through the unrolled inner solver."""

from __future__ import annotations

import pytest
import torch

from fastmbrl.implicit import INVERSES, fixed_point_vjp, minimizer_vjp, root_vjp

DT = torch.float64


def _problem(seed: int = 0):
    """A strictly convex, non-quadratic inner loss in φ ∈ R^4 whose Hessian is not I, a
    parameter pytree θ = (a [4], b [2]) and a smooth outer loss."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(4, 4, generator=g, dtype=DT)
    m = q @ q.T / 4 + 0.5 * torch.eye(4, dtype=DT)
    c = torch.randn(4, 2, generator=g, dtype=DT)
    target = torch.randn(4, generator=g, dtype=DT)

    def inner(phi, theta):
        a, b = theta
        return (0.5 * phi @ m @ phi - (a + c @ b) @ phi
                + 0.3 * torch.log(torch.cosh(phi * b.sum())).sum())

    def outer(phi):
        return torch.sin(phi).sum() + ((phi - target) ** 2).sum()

    theta = (torch.randn(4, generator=g, dtype=DT), 0.5 * torch.randn(2, generator=g, dtype=DT))
    return inner, outer, theta


def _argmin(inner, theta, iters: int = 30):
    """φ*(θ) by Newton's method to machine precision (the 'solved' inner problem)."""
    phi = torch.zeros(4, dtype=DT)
    for _ in range(iters):
        g = torch.func.grad(inner)(phi, theta)
        if float(g.abs().max()) < 1e-15:
            break
        h = torch.func.hessian(inner)(phi, theta)
        phi = phi - torch.linalg.solve(h, g)
    return phi


def _fd_grad(inner, outer, theta, eps: float = 1e-6):
    """Central finite differences of θ ↦ L_out(φ*(θ)), leaf by leaf."""
    out = []
    for k, leaf in enumerate(theta):
        g = torch.zeros_like(leaf)
        for i in range(leaf.numel()):
            vals = []
            for sgn in (1.0, -1.0):
                th = [t.clone() for t in theta]
                th[k].view(-1)[i] += sgn * eps
                vals.append(outer(_argmin(inner, tuple(th))))
            g.view(-1)[i] = (vals[0] - vals[1]) / (2 * eps)
        out.append(g)
    return out


def _implicit(inner, outer, theta, inverse, **kw):
    phi = _argmin(inner, theta)
    ubar = torch.func.grad(outer)(phi)
    return minimizer_vjp(inner, phi, theta, ubar, inverse, **kw)


@pytest.mark.parametrize("inverse,kw", [
    ("exact", {}),
    ("cg", dict(tol=1e-13, maxiter=100)),
    ("neumann", dict(step=0.2, tol=1e-14, atol=1e-15, maxiter=20000)),
])
def test_minimizer_gradient_matches_finite_differences(inverse, kw):
    inner, outer, theta = _problem()
    fd = _fd_grad(inner, outer, theta)
    grad, info = _implicit(inner, outer, theta, inverse, **kw)
    assert isinstance(grad, tuple) and len(grad) == 2
    for a, b in zip(grad, fd, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert info["inverse"] == inverse and info["iterations"] > 0


def test_identity_is_exact_when_the_hessian_is_identity_and_only_then():
    # L_in = ½‖φ − f(θ)‖²: ∂²L_in/∂φ² = I, so the identity "approximation" is exact
    def inner(phi, theta):
        return 0.5 * ((phi - torch.tanh(theta) * 2.0) ** 2).sum()

    def outer(phi):
        return (torch.sin(phi) * torch.arange(1.0, 4.0, dtype=DT)).sum()

    theta = torch.tensor([0.3, -0.7, 1.1], dtype=DT)
    phi = torch.tanh(theta) * 2.0
    grad, _ = minimizer_vjp(inner, phi, theta, torch.func.grad(outer)(phi), "identity")
    eps = 1e-6
    fd = torch.stack([(outer(torch.tanh(theta + eps * e) * 2) - outer(torch.tanh(theta - eps * e)
                                                                      * 2)) / (2 * eps)
                      for e in torch.eye(3, dtype=DT)])
    torch.testing.assert_close(grad, fd, rtol=1e-7, atol=1e-9)

    # on the general problem (Hessian ≠ I) it is an approximation: visibly different
    inner2, outer2, theta2 = _problem()
    approx, _ = _implicit(inner2, outer2, theta2, "identity")
    exact, _ = _implicit(inner2, outer2, theta2, "exact")
    assert max(float((a - b).abs().max()) for a, b in zip(approx, exact, strict=True)) > 1e-2


def test_minimizer_gradient_matches_autograd_through_the_unrolled_solver():
    inner, outer, theta = _problem(1)
    theta = tuple(t.clone().requires_grad_(True) for t in theta)
    phi = torch.zeros(4, dtype=DT, requires_grad=True)
    lr = 0.2
    for _ in range(400):  # gradient descent, differentiated through every step
        phi = phi - lr * torch.autograd.grad(inner(phi, theta), phi, create_graph=True)[0]
    unrolled = torch.autograd.grad(outer(phi), theta)
    fixed = tuple(t.detach() for t in theta)
    for inverse, kw in (("exact", {}), ("cg", dict(tol=1e-13)),
                        ("neumann", dict(step=lr, tol=1e-14, atol=1e-15, maxiter=20000))):
        grad, _ = _implicit(inner, outer, fixed, inverse, **kw)
        for a, b in zip(grad, unrolled, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def _contraction(seed: int = 0):
    """T(φ, θ) = 0.6·tanh(Wφ) + Uθ, a contraction in φ ∈ R^3 (‖W‖ ≤ 1)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=DT))[0]
    u = torch.randn(3, 2, generator=g, dtype=DT)

    def fp(phi, theta):
        return 0.6 * torch.tanh(w @ phi) + u @ theta + 0.1 * theta.prod()

    def outer(phi):
        return (phi ** 3).sum() + phi[0] * phi[2]

    return fp, outer, torch.tensor([0.4, -0.2], dtype=DT)


def _iterate(fp, theta, iters: int = 300):
    phi = torch.zeros(3, dtype=DT)
    for _ in range(iters):
        phi = fp(phi, theta)
    return phi


@pytest.mark.parametrize("inverse", ["neumann", "exact"])
def test_fixed_point_gradient_matches_finite_differences_and_unrolled(inverse):
    fp, outer, theta = _contraction()
    phi = _iterate(fp, theta)
    grad, info = fixed_point_vjp(fp, phi, theta, torch.func.grad(outer)(phi), inverse)
    eps = 1e-6
    fd = torch.stack([(outer(_iterate(fp, theta + eps * e)) - outer(_iterate(fp, theta - eps * e)))
                      / (2 * eps) for e in torch.eye(2, dtype=DT)])
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-8)
    th = theta.clone().requires_grad_(True)
    unrolled = torch.autograd.grad(outer(_iterate(fp, th, 200)), th)[0]
    torch.testing.assert_close(grad, unrolled, rtol=1e-8, atol=1e-10)
    if inverse == "neumann":  # the adjoint iteration stops on its tolerance, not at maxiter
        assert 10 < info["iterations"] < 5000


def test_fixed_point_identity_is_dT_dtheta_times_cotangent():
    fp, outer, theta = _contraction()
    phi = _iterate(fp, theta)
    ubar = torch.func.grad(outer)(phi)
    grad, _ = fixed_point_vjp(fp, phi, theta, ubar, "identity")
    jac = torch.func.jacrev(fp, argnums=1)(phi, theta)  # [3, 2]
    torch.testing.assert_close(grad, jac.T @ ubar)


def test_damping_cg_equals_exact_damped_solve_and_dicts_work():
    inner, outer, (a, b) = _problem(2)
    theta = {"a": a, "b": b}

    def inner_d(phi, th):
        return inner(phi, (th["a"], th["b"]))

    phi = _argmin(inner, (a, b))
    ubar = torch.func.grad(outer)(phi)
    g_cg, info = minimizer_vjp(inner_d, phi, theta, ubar, "cg", damping=0.3, tol=1e-13)
    g_ex, _ = minimizer_vjp(inner_d, phi, theta, ubar, "exact", damping=0.3)
    assert set(g_cg) == {"a", "b"}
    for k in theta:
        torch.testing.assert_close(g_cg[k], g_ex[k], rtol=1e-9, atol=1e-11)
    g_nodamp, _ = minimizer_vjp(inner_d, phi, theta, ubar, "exact")
    assert float((g_nodamp["a"] - g_ex["a"]).abs().max()) > 1e-3  # damping changes the solve
    assert info["iterations"] <= 4 + 1  # CG on a 4x4 SPD system: at most n (+ round-off) steps


def test_cg_stops_at_maxiter():
    inner, outer, theta = _problem()
    _, info = _implicit(inner, outer, theta, "cg", maxiter=2, tol=1e-15)
    assert info["iterations"] == 2 and info["residual"] > 1e-8


def test_unknown_inverse_is_named():
    with pytest.raises(ValueError, match=r"inverse='lu'.*exact, cg, neumann, identity"):
        root_vjp(lambda p, t: p - t, torch.zeros(2), torch.zeros(2), torch.ones(2), "lu")
    assert INVERSES == ("exact", "cg", "neumann", "identity")


@pytest.mark.parametrize("inverse", INVERSES)
def test_minimizer_autograd_path_equals_the_torch_func_root_path(inverse):
    inner, outer, theta = _problem(3)
    phi = _argmin(inner, theta)
    ubar = torch.func.grad(outer)(phi)
    kw = dict(step=0.2, maxiter=50) if inverse == "neumann" else {}
    a, ia = minimizer_vjp(inner, phi, theta, ubar, inverse, damping=0.1, **kw)
    b, ib = root_vjp(torch.func.grad(inner), phi, theta, ubar, inverse, damping=0.1, **kw)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)
    assert ia["iterations"] == ib["iterations"]
