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
structure of ``theta``. Jacobian products are ``torch.func.vjp`` (reverse mode only, so any op
with a backward works). ``root_fn`` must be a pure function of its two arguments.
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


def root_vjp(root_fn: Callable[[Any, Any], Any], phi: Any, theta: Any, cotangent: Any,
             inverse: str = "identity", *, damping: float = 0.0, maxiter: int | None = None,
             tol: float | None = None, atol: float | None = None,
             step: float = 1.0) -> tuple[Any, dict]:
    """``∇_θ L_out(φ*(θ))`` for a root ``F(φ*, θ) = 0`` (``root_fn = F``) and
    ``cotangent = ∇_φ L_out(φ*)``. Returns ``(gradient with the structure of theta, info)``,
    info = ``{"inverse", "iterations", "residual"}``.

    Defaults per inverse: cg ``maxiter=100, tol=1e-5, atol=0``; neumann ``maxiter=5000,
    tol=1e-10, atol=1e-10`` (relative and absolute change of ``v``). ``damping`` adds
    ``damping·I`` to ``∂F/∂φ`` (exact, cg and neumann); identity ignores it.
    """
    if inverse not in INVERSES:
        raise ValueError(f"inverse={inverse!r}: allowed values are {', '.join(INVERSES)}")
    phi = pytree.tree_map(lambda t: t.detach(), phi)
    theta = pytree.tree_map(lambda t: t.detach(), theta)
    ubar = pytree.tree_map(lambda t: t.detach(), cotangent)
    info: dict = {"inverse": inverse, "iterations": 0, "residual": 0.0}
    if inverse == "identity":
        v = ubar
    else:
        _, vjp_phi = torch.func.vjp(lambda p: root_fn(p, theta), phi)

        def op_t(x):  # (∂F/∂φ + damping·I)ᵀ x
            out = vjp_phi(x)[0]
            return _axpy(damping, x, out) if damping else out

        if inverse == "cg":
            v, it = _solve_cg(op_t, ubar, 100 if maxiter is None else maxiter,
                              1e-5 if tol is None else tol, 0.0 if atol is None else atol)
        elif inverse == "exact":
            v, it = _solve_exact(op_t, ubar)
        else:
            v, it = _solve_neumann(op_t, ubar, step, 5000 if maxiter is None else maxiter,
                                   1e-10 if tol is None else tol,
                                   1e-10 if atol is None else atol)
        info.update(it)
    _, vjp_theta = torch.func.vjp(lambda t: root_fn(phi, t), theta)
    grad = vjp_theta(v)[0]
    return pytree.tree_map(torch.neg, grad), info


def minimizer_vjp(inner_loss: Callable[[Any, Any], torch.Tensor], phi: Any, theta: Any,
                  cotangent: Any, inverse: str = "identity", **kwargs) -> tuple[Any, dict]:
    """:func:`root_vjp` for ``φ* = argmin_φ inner_loss(φ, θ)``: ``F = ∇_φ inner_loss``, so
    ``∇_θ = −(∂²L_in/∂θ∂φ) [∂²L_in/∂φ² + damping·I]⁻¹ cotangent`` (``identity``: without the
    inverse). For ``neumann``, ``step`` is the step size of the series (an inner learning rate
    below 2/λ_max of the Hessian)."""
    return root_vjp(torch.func.grad(inner_loss), phi, theta, cotangent, inverse, **kwargs)


def fixed_point_vjp(fp_fn: Callable[[Any, Any], Any], phi: Any, theta: Any, cotangent: Any,
                    inverse: str = "neumann", **kwargs) -> tuple[Any, dict]:
    """:func:`root_vjp` for a fixed point ``φ* = T(φ*, θ)`` (``fp_fn = T``): ``F = φ − T``, so
    neumann (``step=1``) is ``v ← ū + (∂T/∂φ)ᵀ v`` and identity is ``∇_θ = (∂T/∂θ)ᵀ ū``."""

    def root_fn(p, t):
        return pytree.tree_map(torch.sub, p, fp_fn(p, t))

    return root_vjp(root_fn, phi, theta, cotangent, inverse, **kwargs)
