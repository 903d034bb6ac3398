"""Ensemble Gaussian negative log-likelihood, as mbrl-lib defines it.

Formula (no 1/2 factor, no log 2π; mbrl-lib ``util/math.py::gaussian_nll``)::

    loss[e, b, d] = (mean[e, b, d] - target[e, b, d])**2 * exp(-logvar[e, b, d]) + logvar[e, b, d]

Shapes::

    mean, logvar   [E, B, D]   E ensemble members, B batch rows, D output dimensions
    target         [E, B, D]   one target per member (bootstrap batches), or
                   [B, D]      shared by every member

Reductions::

    "sum"     (default, mbrl-lib)  Σ_e mean_{b,d} loss       -> scalar
    "mean"                         mean_{e,b,d} loss         -> scalar
    "member"                       mean_{b,d} loss, per e    -> [E]
    "none"                         loss                      -> [E, B, D]

Gradients (N = B·D, g the gradient of one member's mean)::

    dL/dmean   =  g/N · 2 (mean - target) exp(-logvar)
    dL/dlogvar =  g/N · (1 - (mean - target)^2 exp(-logvar))
    dL/dtarget = -dL/dmean (summed over members when the target is shared)

Double backward (``create_graph=True``): the native backward kernel's results cannot be
differentiated again, so then the backward runs these formulas as torch ops instead, and
second derivatives are exact on every backend.

Dispatch: CUDA tensors run the CUDA kernel when compiled. CPU tensors run the native CPU kernel
(one vectorised pass, double accumulation) from ``CPU_NATIVE_MIN_ELEMENTS`` elements of ``mean``
on, where it measured faster than the reference (benchmarks/results/2026-11-21-cpu-1thread-
gaussian_nll.txt: 1.64x at E=7 B=256 D=377, 1.71x at B=16384 D=18, but 0.78x at the 32k-element
MBPO batch, where the reference's fixed costs are lower); below that, the reference.
``backend="reference"`` or ``FASTMBRL_BACKEND=reference`` forces the reference, and
``backend="native"`` the kernel.
"""

from __future__ import annotations

import torch

from .. import _native
from ._library import LIB, impl_cuda
from ._validate import check_nonempty, check_same, check_shape, check_tensor

OP = "gaussian_nll"
CPU_NATIVE_MIN_ELEMENTS = 1 << 17
REDUCTIONS = ("sum", "mean", "member", "none")


# ---------------------------------------------------------------------------------------------
# Reference: the definition of the op.
# ---------------------------------------------------------------------------------------------
def gaussian_nll_reference(
    mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor, reduction: str = "sum"
) -> torch.Tensor:
    """Pure-PyTorch ensemble Gaussian NLL; see the module docstring for formula and shapes."""
    if target.dim() == 2:
        target = target.unsqueeze(0)  # [1, B, D] broadcasts over members
    loss = (mean - target) ** 2 * torch.exp(-logvar) + logvar  # [E, B, D]
    if reduction == "none":
        return loss
    member = loss.mean(dim=(1, 2))  # [E]
    if reduction == "member":
        return member
    if reduction == "sum":
        return member.sum()
    return member.mean()


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def _validate(mean, logvar, target, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{OP}: `reduction` must be one of {REDUCTIONS}, got {reduction!r}")
    check_tensor(OP, "mean", mean, 3, "[E, B, D]")
    check_tensor(OP, "logvar", logvar, 3, "[E, B, D]")
    check_tensor(OP, "target", target, (2, 3), "[E, B, D] or [B, D]")
    check_same(OP, {"mean": mean, "logvar": logvar, "target": target})
    E, B, D = mean.shape
    check_nonempty(OP, {"E (ensemble size)": E, "B (batch)": B, "D (output dimension)": D})
    check_shape(OP, "logvar", logvar, (E, B, D), "[E, B, D] like `mean`")
    if target.dim() == 3:
        check_shape(OP, "target", target, (E, B, D), "[E, B, D] like `mean`")
    else:
        check_shape(OP, "target", target, (B, D), "[B, D] (shared by all members)")


# ---------------------------------------------------------------------------------------------
# torch.library registration: fastmbrl::gaussian_nll and its backward
# ---------------------------------------------------------------------------------------------
LIB.define("gaussian_nll(Tensor mean, Tensor logvar, Tensor target, bool elementwise) -> Tensor")
LIB.define(
    "gaussian_nll_backward(Tensor grad, Tensor mean, Tensor logvar, Tensor target, "
    "bool elementwise) -> (Tensor, Tensor, Tensor)"
)


def _forward_prep(mean, logvar, target, elementwise: bool):
    mean, logvar, target = mean.contiguous(), logvar.contiguous(), target.contiguous()
    E = mean.shape[0]
    N = mean.numel() // E
    out = _native.empty(mean.shape if elementwise else (E,), mean)
    args = (_native.dtype_code(mean), _native.ptr(mean), _native.ptr(logvar),
            _native.ptr(target), target.dim() == 2, E, N, elementwise)
    return out, args, (mean, logvar, target)  # keep the contiguous inputs alive


def _forward_cpu(mean, logvar, target, elementwise: bool) -> torch.Tensor:
    out, args, _alive = _forward_prep(mean, logvar, target, elementwise)
    _native._C.gaussian_nll_forward_cpu(*args, _native.ptr(out))
    return out


def _forward_cuda(mean, logvar, target, elementwise: bool) -> torch.Tensor:
    E = mean.shape[0]
    if not elementwise:  # the reduction puts the members on grid.y
        _native.check_cuda_limit(OP, "E (ensemble size)", E, _native.CUDA_MAX_GRID_YZ,
                                 "members on grid.y of the reduction")
    out, args, _alive = _forward_prep(mean, logvar, target, elementwise)
    C, P = _native._C, _native.ptr
    ws = _native.empty((C.gaussian_nll_cuda_workspace(E, args[6], elementwise),), mean)
    C.gaussian_nll_forward_cuda(*args, P(out), P(ws), _native.cuda_stream(mean.device))
    return out


def _backward_prep(grad, mean, logvar, target, elementwise: bool):
    grad, mean = grad.contiguous(), mean.contiguous()
    logvar, target = logvar.contiguous(), target.contiguous()
    E = mean.shape[0]
    N = mean.numel() // E
    d_mean, d_logvar = _native.empty_like(mean), _native.empty_like(logvar)
    d_target = _native.empty_like(target)
    P = _native.ptr
    args = (_native.dtype_code(mean), P(grad), P(mean), P(logvar), P(target), target.dim() == 2,
            E, N, elementwise, P(d_mean), P(d_logvar), P(d_target))
    return (d_mean, d_logvar, d_target), args, (grad, mean, logvar, target)


def _backward_cpu(grad, mean, logvar, target, elementwise: bool):
    outs, args, _alive = _backward_prep(grad, mean, logvar, target, elementwise)
    _native._C.gaussian_nll_backward_cpu(*args)
    return outs


def _backward_cuda(grad, mean, logvar, target, elementwise: bool):
    outs, args, _alive = _backward_prep(grad, mean, logvar, target, elementwise)
    _native._C.gaussian_nll_backward_cuda(*args, _native.cuda_stream(mean.device))
    return outs


def _forward_fake(mean, logvar, target, elementwise: bool) -> torch.Tensor:
    return mean.new_empty(mean.shape if elementwise else (mean.shape[0],))


def _backward_fake(grad, mean, logvar, target, elementwise: bool):
    return torch.empty_like(mean), torch.empty_like(logvar), torch.empty_like(target)


if _native.HAS_NATIVE:
    LIB.impl("gaussian_nll", _forward_cpu, "CPU")
    LIB.impl("gaussian_nll_backward", _backward_cpu, "CPU")
impl_cuda("gaussian_nll", _forward_cuda)
impl_cuda("gaussian_nll_backward", _backward_cuda)
torch.library.register_fake("fastmbrl::gaussian_nll", _forward_fake, lib=LIB)
torch.library.register_fake("fastmbrl::gaussian_nll_backward", _backward_fake, lib=LIB)


def _setup_context(ctx, inputs, output):
    mean, logvar, target, elementwise = inputs
    ctx.save_for_backward(mean, logvar, target)
    ctx.elementwise = elementwise


def _differentiable_backward(grad, mean, logvar, target, elementwise: bool):
    """The gradients of the module docstring as torch ops, so that autograd can differentiate
    them again: used when a double backward follows (``create_graph=True``)."""
    E = mean.shape[0]
    scale = grad if elementwise else grad.reshape(E, 1, 1) / (mean.numel() // E)
    diff = mean - (target.unsqueeze(0) if target.dim() == 2 else target)
    inv_var = torch.exp(-logvar)
    d_mean = scale * 2.0 * diff * inv_var
    d_logvar = scale * (1.0 - diff * diff * inv_var)
    d_target = -d_mean.sum(0) if target.dim() == 2 else -d_mean
    return d_mean, d_logvar, d_target


def _autograd_backward(ctx, grad):
    mean, logvar, target = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: second derivatives are wanted
        d_mean, d_logvar, d_target = _differentiable_backward(grad, mean, logvar, target,
                                                              ctx.elementwise)
    else:
        d_mean, d_logvar, d_target = torch.ops.fastmbrl.gaussian_nll_backward(
            grad, mean, logvar, target, ctx.elementwise
        )
    return d_mean, d_logvar, d_target, None


torch.library.register_autograd(
    "fastmbrl::gaussian_nll", _autograd_backward, setup_context=_setup_context, lib=LIB
)


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------
def gaussian_nll(
    mean: torch.Tensor,
    logvar: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "sum",
    backend: str | None = None,
) -> torch.Tensor:
    """Ensemble Gaussian NLL (mbrl-lib's definition); formula and shapes in the module docstring.

    Args:
        mean: predicted means ``[E, B, D]``.
        logvar: predicted log-variances ``[E, B, D]``.
        target: ``[E, B, D]`` per member, or ``[B, D]`` shared by all members.
        reduction: ``"sum"`` (Σ over members of the per-member mean; mbrl-lib), ``"mean"``,
            ``"member"`` (``[E]``) or ``"none"`` (``[E, B, D]``).
        backend: ``None`` (process default), ``"auto"``, ``"reference"`` or ``"native"``.
    """
    _validate(mean, logvar, target, reduction)
    prefer_cpu = mean.numel() >= CPU_NATIVE_MIN_ELEMENTS
    if not _native.use_native(mean.device, backend, prefer_native_cpu=prefer_cpu):
        return gaussian_nll_reference(mean, logvar, target, reduction)
    elementwise = reduction == "none"
    out = torch.ops.fastmbrl.gaussian_nll(mean, logvar, target, elementwise)
    if reduction == "sum":
        return out.sum()
    if reduction == "mean":
        return out.mean()
    return out
