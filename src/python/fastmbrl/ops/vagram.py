"""VaGraM: the value-gradient weighted model loss (Voelcker et al., ICLR 2022).

With ``Δ = pred − target`` (the model's next-state error, ``ŝ' − s'``) and ``g_k = ∇_{s'} V_k(s')``
the gradient of the k-th of K value heads at the real next state::

    bounded   (``use_scaling``, the paper's default; a diagonal rescaled MSE)
        L = mean_{e,b,d} [ (1/K) Σ_k (g_{k,e,b,d} · Δ_{e,b,d})² ]
    unbounded (``use_vaml``, the first-order Taylor expansion of V(ŝ') − V(s'))
        L = mean_{e,b}   [ (1/K) Σ_k (Σ_d g_{k,e,b,d} · Δ_{e,b,d})² ]

Shapes::

    pred         [E, B, O]     E ensemble members, B rows, O state dimensions
    target       [E, B, O]     per member (bootstrap batches), or
                 [B, O]        shared by every member
    value_grad   [K, E, B, O]  K value heads' gradients, per member row, or
                 [E, B, O]     one head (K = 1)

Reductions::

    "mean"    (default) the formulas above                       -> scalar
    "member"  the same mean taken per member                     -> [E]

Gradients (n = B·O bounded, n = B unbounded; per member, times the incoming gradient)::

    bounded     dL/dpred[e,b,d] = 2/(n·K) · Σ_k g_{k,e,b,d}² · Δ_{e,b,d}
    unbounded   dL/dpred[e,b,d] = 2/(n·K) · Σ_k (Σ_j g_{k,e,b,j} Δ_{e,b,j}) · g_{k,e,b,d}
    dL/dtarget  = −dL/dpred (summed over members when the target is shared)

``value_grad`` is a constant of the loss (VaGraM detaches it): it receives no gradient.
The reward error (VaGraM adds ``mean (r̂ − r)²``) is not part of this op.

Native kernels: one fused forward (``torch.ops.fastmbrl.vagram_loss``) reads pred, target and
value_grad once and writes both the per-member loss ``[E]`` and the unit gradient
``dpred_unit [E, B, O]`` (of each member's mean); the backward only scales ``dpred_unit`` by the
incoming per-member gradient, so it never rereads value_grad (K·E·B·O, the largest input).
Double backward through the native op is not supported (it raises); use the reference.

Dispatch: CUDA tensors run the CUDA kernel when compiled — verified by the SIMT emulation in CI
(tests/test_cuda_emulation.py), NOT YET RUN ON A GPU. CPU tensors run the native kernel at
every size (``CPU_NATIVE_MIN_ELEMENTS = 0``): it never measured slower than the reference
(benchmarks/results/2026-11-21-cpu-1thread-vagram_loss.txt, E=7 O=17 K=4, fwd+bwd, 1 thread,
speed-up over the eager reference, bounded / unbounded: B=256 1.56x / 1.04x, B=4096 11.3x /
2.37x, B=65536 19.7x / 3.07x, B=262144 10.4x / 3.03x). The reference under ``torch.compile``
(inductor) is as fast as native up to B=4096 and 1.7x to 2.6x faster (medians) at B >= 65536
on the CPU, so a compiled training step on the CPU may prefer ``backend="reference"``. The
run was on a shared 2-core VM under load; see the results file.
``backend="reference"`` or ``FASTMBRL_BACKEND=reference`` forces the reference, and
``backend="native"`` the kernel.
"""

from __future__ import annotations

import torch

from .. import _native
from ._library import LIB, impl_cuda, refuse_double_backward
from ._validate import check_nonempty, check_same, check_shape, check_tensor

OP = "vagram_loss"
REDUCTIONS = ("mean", "member")
# Measured CPU verdict (benchmarks/results/2026-11-21-cpu-1thread-vagram_loss.txt; module
# docstring): native from this many elements of pred on, i.e. at every size.
CPU_NATIVE_MIN_ELEMENTS = 0


# ---------------------------------------------------------------------------------------------
# Reference: the definition of the op.
# ---------------------------------------------------------------------------------------------
def vagram_loss_reference(
    pred: torch.Tensor,
    target: torch.Tensor,
    value_grad: torch.Tensor,
    bounded: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Pure-PyTorch VaGraM loss; see the module docstring for formula and shapes."""
    if target.dim() == 2:
        target = target.unsqueeze(0)  # [1, B, O] broadcasts over members
    if value_grad.dim() == 3:
        value_grad = value_grad.unsqueeze(0)  # K = 1
    g = value_grad.detach()
    delta = (pred - target).unsqueeze(0)  # [1, E, B, O]
    if bounded:
        per = ((g * delta) ** 2).mean(0)  # [E, B, O]
        member = per.mean(dim=(1, 2))
    else:
        per = ((g * delta).sum(-1) ** 2).mean(0)  # [E, B]
        member = per.mean(dim=1)
    return member.mean() if reduction == "mean" else member


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def _validate(pred, target, value_grad, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{OP}: `reduction` must be one of {REDUCTIONS}, got {reduction!r}")
    check_tensor(OP, "pred", pred, 3, "[E, B, O]")
    check_tensor(OP, "target", target, (2, 3), "[E, B, O] or [B, O]")
    check_tensor(OP, "value_grad", value_grad, (3, 4), "[K, E, B, O] or [E, B, O]")
    check_same(OP, {"pred": pred, "target": target, "value_grad": value_grad})
    E, B, O = pred.shape
    check_nonempty(OP, {"E (ensemble size)": E, "B (batch)": B, "O (state dimension)": O})
    if target.dim() == 3:
        check_shape(OP, "target", target, (E, B, O), "[E, B, O] like `pred`")
    else:
        check_shape(OP, "target", target, (B, O), "[B, O] (shared by all members)")
    if value_grad.dim() == 4:
        check_nonempty(OP, {"K (value heads)": value_grad.shape[0]})
        check_shape(OP, "value_grad", value_grad, (value_grad.shape[0], E, B, O),
                    "[K, E, B, O] with E, B, O of `pred`")
    else:
        check_shape(OP, "value_grad", value_grad, (E, B, O), "[E, B, O] like `pred`")


# ---------------------------------------------------------------------------------------------
# torch.library registration: fastmbrl::vagram_loss, one fused forward
#
#   vagram_loss(pred [E,B,O], target [E,B,O] | [B,O], value_grad [K,E,B,O], bounded)
#       -> (member_loss [E], dpred_unit [E,B,O])
#
# dpred_unit[e] is the gradient of member_loss[e] with respect to pred[e], written in the same
# pass over memory as the loss. The autograd formula only scales it by the incoming per-member
# gradient, so the backward never rereads value_grad (the largest input, K·E·B·O). dpred_unit is
# an auxiliary output: it is marked non-differentiable, and value_grad gets no gradient (a
# constant of the loss, as VaGraM detaches it). Double backward is not supported: the formula
# treats dpred_unit as a constant, so second derivatives through this op would be wrong, and
# the backward raises when asked to build a graph (create_graph=True).
# ---------------------------------------------------------------------------------------------
LIB.define(
    "vagram_loss(Tensor pred, Tensor target, Tensor value_grad, bool bounded) -> (Tensor, Tensor)"
)


def _forward_prep(pred, target, value_grad, bounded: bool):
    pred, target, value_grad = pred.contiguous(), target.contiguous(), value_grad.contiguous()
    E, B, O = pred.shape
    K = value_grad.shape[0]
    member = _native.empty((E,), pred)
    dpred = _native.empty_like(pred)
    P = _native.ptr
    args = (_native.dtype_code(pred), P(pred), P(target), P(value_grad), target.dim() == 2, E, B,
            O, K, bool(bounded), P(member), P(dpred))
    return (member, dpred), args, (pred, target, value_grad)  # keep the inputs alive


def _forward_cpu(pred, target, value_grad, bounded: bool):
    outs, args, _alive = _forward_prep(pred, target, value_grad, bounded)
    _native._C.vagram_forward_cpu(*args)
    return outs


def _forward_cuda(pred, target, value_grad, bounded: bool):
    E, B, O = pred.shape
    _native.check_cuda_limit(OP, "E (ensemble size)", E, _native.CUDA_MAX_GRID_YZ,
                             "members on grid.y")
    outs, args, _alive = _forward_prep(pred, target, value_grad, bounded)
    C, P = _native._C, _native.ptr
    ws = _native.empty((C.vagram_cuda_workspace(E, B, O, bool(bounded)),), pred)
    C.vagram_forward_cuda(*args, P(ws), _native.cuda_stream(pred.device))
    return outs


def _forward_fake(pred, target, value_grad, bounded: bool):
    return pred.new_empty((pred.shape[0],)), torch.empty_like(pred)


if _native.HAS_NATIVE:
    LIB.impl("vagram_loss", _forward_cpu, "CPU")
impl_cuda("vagram_loss", _forward_cuda)
torch.library.register_fake("fastmbrl::vagram_loss", _forward_fake, lib=LIB)


def _setup_context(ctx, inputs, output):
    pred, target, value_grad, bounded = inputs
    _, dpred_unit = output
    ctx.mark_non_differentiable(dpred_unit)
    ctx.save_for_backward(dpred_unit)
    ctx.target_shared = target.dim() == 2


def _autograd_backward(ctx, grad_member, grad_dpred_unit):
    refuse_double_backward(OP)
    (dpred_unit,) = ctx.saved_tensors
    d_pred = d_target = None
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
        d_pred = grad_member.view(-1, 1, 1) * dpred_unit  # [E, B, O]
        if ctx.needs_input_grad[1]:
            d_target = -d_pred.sum(0) if ctx.target_shared else -d_pred
        if not ctx.needs_input_grad[0]:
            d_pred = None
    return d_pred, d_target, None, None


torch.library.register_autograd(
    "fastmbrl::vagram_loss", _autograd_backward, setup_context=_setup_context, lib=LIB
)


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------
def vagram_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    value_grad: torch.Tensor,
    bounded: bool = True,
    reduction: str = "mean",
    backend: str | None = None,
) -> torch.Tensor:
    """VaGraM's value-gradient weighted model loss; formula and shapes in the module docstring.

    Args:
        pred: predicted next states (or deltas) ``[E, B, O]``.
        target: real next states (or deltas) ``[E, B, O]``, or ``[B, O]`` shared by all members.
        value_grad: ``∇_{s'} V_k`` of K heads ``[K, E, B, O]`` (or ``[E, B, O]``); detached.
        bounded: the bounded (diagonal) loss; False: the unbounded first-order Taylor loss.
        reduction: ``"mean"`` (scalar) or ``"member"`` (``[E]``).
        backend: ``None`` (process default), ``"auto"``, ``"reference"`` or ``"native"``.
    """
    _validate(pred, target, value_grad, reduction)
    prefer_cpu = pred.numel() >= CPU_NATIVE_MIN_ELEMENTS
    if not _native.use_native(pred.device, backend, prefer_native_cpu=prefer_cpu,
                              prefer_native_cuda=True):
        return vagram_loss_reference(pred, target, value_grad, bounded, reduction)
    if value_grad.dim() == 3:
        value_grad = value_grad.unsqueeze(0)  # K = 1
    member, _ = torch.ops.fastmbrl.vagram_loss(pred, target, value_grad.detach(), bool(bounded))
    return member.mean() if reduction == "mean" else member
