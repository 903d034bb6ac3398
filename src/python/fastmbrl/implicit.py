"""Implicit differentiation of the solution of an inner problem (OMD's backward pass).

Let ``φ*(θ)`` solve ``F(φ*, θ) = 0`` and ``L(θ) = L_out(φ*(θ))``. By the implicit function theorem

    ∇_θ L = −(∂F/∂θ)ᵀ v,      (∂F/∂φ)ᵀ v = ū = ∇_φ L_out(φ*)

Two kinds of inner problem are covered by the one function :func:`root_vjp`:

* a minimiser ``φ* = argmin_φ L_in(φ, θ)``: ``F = ∇_φ L_in`` and ``∂F/∂φ = ∂²L_in/∂φ²`` (the
  Hessian), so ``∇_θ L = −(∂²L_in/∂θ∂φ) [∂²L_in/∂φ²]⁻¹ ∇_φ L_out`` (:func:`minimizer_vjp`);
* a fixed point ``φ* = T(φ*, θ)`` (OMD's tabular soft-Q fixed point): ``F = φ − T(φ, θ)``
  (:func:`fixed_point_vjp`), so ``v = ū + (∂T/∂φ)ᵀ v`` and ``∇_θ L = (∂T/∂θ)ᵀ v``.

The inverse ``v = (∂F/∂φ)⁻ᵀ ū`` is computed by one of ``INVERSES``:

``exact``     a dense linear solve of ``(∂F/∂φ + damping·I)ᵀ v = ū`` (``n`` VJPs to build the
              matrix, so small problems only);
``cg``        conjugate gradient on ``(∂F/∂φ + damping·I)ᵀ v = ū`` from ``v = 0``, at most
              ``maxiter`` iterations, stopping when ``‖r‖ ≤ max(tol·‖ū‖, atol)`` (JAX's
              ``jax.scipy.sparse.linalg.cg`` rule; OMD's ``--with_inv_jac`` is ``maxiter=100,
              damping=1e-5, tol=1e-5``). Needs a symmetric positive-definite matrix; on an
              indefinite Hessian it stops wherever it is after ``maxiter`` (``info['residual']``);
``neumann``   the fixed-point (Neumann-series) adjoint ``v ← v + step·(ū − (∂F/∂φ)ᵀ v)`` from
              ``v = ū`` until ``max|Δv| < tol_abs + tol·max|v|`` or ``maxiter``. For a fixed
              point with ``step = 1`` this is fax's ``two_phase_solve`` adjoint
              ``v ← ū + (∂T/∂φ)ᵀ v``; for a minimiser ``step`` plays the inner learning rate;
``identity``  ``v = ū`` (OMD's default approximation of the inverse).

Every argument may be a tensor or a pytree (tuple, list, dict) of tensors; the gradient has the
structure of ``theta``. Jacobian products: ``torch.func.vjp`` in :func:`root_vjp` (reverse mode
only, so any op with a backward works); plain double-backward autograd in :func:`minimizer_vjp`
(Hessian-vector products, faster for networks; the ops need a double backward). Loss and root
functions must be pure functions of their two arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import _pytree as pytree

__all__ = ["INVERSES", "root_vjp", "minimizer_vjp", "fixed_point_vjp"]

INVERSES = ("exact", "cg", "neumann", "identity")


def _leaves(tree: Any) -> list[torch.Tensor]:
    return pytree.tree_flatten(tree)[0]


def _dot(a: Any, b: Any) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(_leaves(a), _leaves(b), strict=True))


def _axpy(alpha, x: Any, y: Any) -> Any:
    """``alpha·x + y`` leaf by leaf (alpha a scalar or 0-d tensor)."""
    return pytree.tree_map(lambda a, b: alpha * a + b, x, y)


def _max_abs(tree: Any) -> torch.Tensor:
    return torch.stack([t.abs().max() for t in _leaves(tree) if t.numel()]).max()


def _solve_cg(op: Callable, b: Any, maxiter: int, tol: float, atol: float):
    x = pytree.tree_map(torch.zeros_like, b)
    r = b
    p = r
    rs = _dot(r, r)
    bound = max(tol * float(torch.sqrt(_dot(b, b))), atol)
    it = 0
    while it < maxiter and float(torch.sqrt(rs)) > bound:
        ap = op(p)
        alpha = rs / _dot(p, ap)
        x = _axpy(alpha, p, x)
        r = _axpy(-alpha, ap, r)
        rs_new = _dot(r, r)
        p = _axpy(rs_new / rs, p, r)
        rs = rs_new
        it += 1
    return x, {"iterations": it, "residual": float(torch.sqrt(rs))}


def _solve_exact(op_t: Callable, b: Any):
    flat_b, spec = pytree.tree_flatten(b)
    sizes = [t.numel() for t in flat_b]
    n = sum(sizes)
    vec = torch.cat([t.reshape(-1) for t in flat_b])

    def unflat(v: torch.Tensor):
        parts = torch.split(v, sizes)
        return pytree.tree_unflatten([p.reshape(t.shape) for p, t in zip(parts, flat_b,
                                                                         strict=True)], spec)

    # op_t(e_i) = Mᵀ e_i is column i of Mᵀ; stacked as rows they form M (M = ∂F/∂φ + damping·I)
    m = torch.stack([torch.cat([t.reshape(-1) for t in _leaves(op_t(unflat(e)))])
                     for e in torch.eye(n, dtype=vec.dtype, device=vec.device)])
    v = torch.linalg.solve(m.T, vec)  # Mᵀ v = ū
    return unflat(v), {"iterations": n, "residual": float(torch.linalg.vector_norm(
        m.T @ v - vec))}


def _solve_neumann(op_t: Callable, b: Any, step: float, maxiter: int, tol: float,
                   atol: float):
    v = b
    it = 0
    delta = float("inf")
    while it < maxiter:
        new = _axpy(step, pytree.tree_map(torch.sub, b, op_t(v)), v)
        change = _max_abs(pytree.tree_map(torch.sub, new, v))
        v = new
        it += 1
        delta = float(change)
        if delta < atol + tol * float(_max_abs(v)):
            break
    return v, {"iterations": it, "residual": delta}


def _solve(op_t: Callable, ubar: Any, inverse: str, damping: float, maxiter: int | None,
           tol: float | None, atol: float | None, step: float) -> tuple[Any, dict]:
    """``v`` with ``(∂F/∂φ + damping·I)ᵀ v = ū`` by ``inverse``; ``op_t(x) = (∂F/∂φ)ᵀ x``."""
    info: dict = {"inverse": inverse, "iterations": 0, "residual": 0.0}
    if inverse == "identity":
        return ubar, info

    def op(x):
        out = op_t(x)
        return _axpy(damping, x, out) if damping else out

    if inverse == "cg":
        v, it = _solve_cg(op, ubar, 100 if maxiter is None else maxiter,
                          1e-5 if tol is None else tol, 0.0 if atol is None else atol)
    elif inverse == "exact":
        v, it = _solve_exact(op, ubar)
    else:
        v, it = _solve_neumann(op, ubar, step, 5000 if maxiter is None else maxiter,
                               1e-10 if tol is None else tol, 1e-10 if atol is None else atol)
    info.update(it)
    return v, info


def _check_inverse(inverse: str) -> None:
    if inverse not in INVERSES:
        raise ValueError(f"inverse={inverse!r}: allowed values are {', '.join(INVERSES)}")


def root_vjp(root_fn: Callable[[Any, Any], Any], phi: Any, theta: Any, cotangent: Any,
             inverse: str = "identity", *, damping: float = 0.0, maxiter: int | None = None,
             tol: float | None = None, atol: float | None = None,
             step: float = 1.0) -> tuple[Any, dict]:
    """``∇_θ L_out(φ*(θ))`` for a root ``F(φ*, θ) = 0`` (``root_fn = F``) and
    ``cotangent = ∇_φ L_out(φ*)``. Returns ``(gradient with the structure of theta, info)``,
    info = ``{"inverse", "iterations", "residual"}``. Jacobian products by ``torch.func.vjp``.

    Defaults per inverse: cg ``maxiter=100, tol=1e-5, atol=0``; neumann ``maxiter=5000,
    tol=1e-10, atol=1e-10`` (relative and absolute change of ``v``). ``damping`` adds
    ``damping·I`` to ``∂F/∂φ`` (exact, cg and neumann); identity ignores it.
    """
    _check_inverse(inverse)
    phi = pytree.tree_map(lambda t: t.detach(), phi)
    theta = pytree.tree_map(lambda t: t.detach(), theta)
    ubar = pytree.tree_map(lambda t: t.detach(), cotangent)
    if inverse == "identity":
        v, info = _solve(None, ubar, inverse, damping, maxiter, tol, atol, step)
    else:
        _, vjp_phi = torch.func.vjp(lambda p: root_fn(p, theta), phi)
        v, info = _solve(lambda x: vjp_phi(x)[0], ubar, inverse, damping, maxiter, tol, atol,
                         step)
    _, vjp_theta = torch.func.vjp(lambda t: root_fn(phi, t), theta)
    grad = vjp_theta(v)[0]
    return pytree.tree_map(torch.neg, grad), info


def minimizer_vjp(inner_loss: Callable[[Any, Any], torch.Tensor], phi: Any, theta: Any,
                  cotangent: Any, inverse: str = "identity", *, damping: float = 0.0,
                  maxiter: int | None = None, tol: float | None = None,
                  atol: float | None = None, step: float = 1.0) -> tuple[Any, dict]:
    """:func:`root_vjp` for ``φ* = argmin_φ inner_loss(φ, θ)``: ``F = ∇_φ inner_loss``, so
    ``∇_θ = −(∂²L_in/∂θ∂φ) [∂²L_in/∂φ² + damping·I]⁻¹ cotangent`` (``identity``: without the
    inverse). For ``neumann``, ``step`` is the step size of the series (an inner learning rate
    below 2/λ_max of the Hessian).

    Computed with plain autograd (double backward): ``g = ∇_φ L_in`` once with
    ``create_graph``, each Hessian-vector product ``∂⟨g, v⟩/∂φ`` and the cross term
    ``∂⟨g, v⟩/∂θ`` reuse its graph (no ``torch.func`` transform overhead per call).
    """
    _check_inverse(inverse)
    phi_l = pytree.tree_map(lambda t: t.detach().requires_grad_(True), phi)
    theta_l = pytree.tree_map(lambda t: t.detach().requires_grad_(True), theta)
    ubar = pytree.tree_map(lambda t: t.detach(), cotangent)
    p_leaves, p_spec = pytree.tree_flatten(phi_l)
    t_leaves, t_spec = pytree.tree_flatten(theta_l)
    with torch.enable_grad():
        g = torch.autograd.grad(inner_loss(phi_l, theta_l), p_leaves, create_graph=True)

    def grads_of(v: Any, wrt: list, retain: bool) -> list:
        out = torch.autograd.grad(g, wrt, grad_outputs=_leaves(v), retain_graph=retain,
                                  allow_unused=True)
        return [torch.zeros_like(w) if o is None else o for o, w in zip(out, wrt, strict=True)]

    def op_t(x):  # H x (the Hessian is symmetric)
        return pytree.tree_unflatten(grads_of(x, p_leaves, True), p_spec)

    v, info = _solve(op_t, ubar, inverse, damping, maxiter, tol, atol, step)
    cross = grads_of(v, t_leaves, False)
    return pytree.tree_unflatten([-c.detach() for c in cross], t_spec), info


def fixed_point_vjp(fp_fn: Callable[[Any, Any], Any], phi: Any, theta: Any, cotangent: Any,
                    inverse: str = "neumann", **kwargs) -> tuple[Any, dict]:
    """:func:`root_vjp` for a fixed point ``φ* = T(φ*, θ)`` (``fp_fn = T``): ``F = φ − T``, so
    neumann (``step=1``) is ``v ← ū + (∂T/∂φ)ᵀ v`` and identity is ``∇_θ = (∂T/∂θ)ᵀ ū``."""

    def root_fn(p, t):
        return pytree.tree_map(torch.sub, p, fp_fn(p, t))

    return root_vjp(root_fn, phi, theta, cotangent, inverse, **kwargs)
