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
"""

from __future__ import annotations

import torch

from .. import _native
from ._validate import check_nonempty, check_same, check_shape, check_tensor

OP = "vagram_loss"
REDUCTIONS = ("mean", "member")


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
    _native.use_native(pred.device, backend, prefer_native_cpu=False, prefer_native_cuda=False)
    return vagram_loss_reference(pred, target, value_grad, bounded, reduction)
