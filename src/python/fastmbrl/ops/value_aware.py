"""Value-difference model losses: VA-MBPO's model advantage (Modhe et al. 2021) and IterVAML.

VA-MBPO (``value_aware_loss``): with ``Q`` the value of the real next state and ``Q̂`` the value of
the model's (reparameterised) sample of it, the model advantage is ``MA = Q − Q̂`` and::

    norm "l1"  (MA-L1, the seed's default)    loss = |Q − Q̂|
    norm "l2"  (VAML-L2)                      loss = (Q − Q̂)²

IterVAML (``itervaml_loss``, Farahmand 2018): ``(V(ŝ') − V(s'))²`` with V differentiable in
``ŝ'``, i.e. ``value_aware_loss(v_true, v_model, "l2")`` under its own name and a mean.

Shapes::

    q_model    [...]          any shape, e.g. [E, B] (one value per member row)
    q_true     [...]          the same shape, or q_model.shape[1:] (shared by the members)

Reductions::

    "sum"   Σ loss   (VA-MBPO sums over members and rows)    -> scalar
    "mean"  mean loss                                        -> scalar
    "none"  loss                                             -> q_model's shape

Gradients (times the incoming gradient; 1/n for "mean", n = q_model.numel())::

    l1  dL/dq_model = −sign(Q − Q̂)        (0 where Q = Q̂)
    l2  dL/dq_model = −2 (Q − Q̂)
    dL/dq_true = −dL/dq_model (summed over members when shared)

The model sample for VA-MBPO is :func:`reparameterized_sample`, so the gradient reaches the
model's mean and log-variance through ``Q̂``.
"""

from __future__ import annotations

import torch

from .. import _native
from ._validate import check_nonempty, check_same, check_shape

OP = "value_aware_loss"
NORMS = ("l1", "l2")
REDUCTIONS = ("sum", "mean", "none")


def reparameterized_sample(
    mean: torch.Tensor, logvar: torch.Tensor | None, noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``μ + exp(½ lv) · ε`` (``ε ~ N(0, 1)``, drawn from ``generator`` unless given): a model
    sample through which gradients reach ``mean`` and ``logvar``. A deterministic model
    (``logvar=None``) returns ``mean``."""
    if logvar is None:
        return mean
    if noise is None:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar) * noise


# ---------------------------------------------------------------------------------------------
# Reference: the definition of the op.
# ---------------------------------------------------------------------------------------------
def value_aware_loss_reference(
    q_true: torch.Tensor, q_model: torch.Tensor, norm: str = "l1", reduction: str = "sum"
) -> torch.Tensor:
    """Pure-PyTorch value-difference loss; see the module docstring for formula and shapes."""
    diff = q_true - q_model  # q_true [shape[1:]] broadcasts over members
    loss = diff.abs() if norm == "l1" else diff * diff
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def _validate(q_true, q_model, norm: str, reduction: str, op: str = OP) -> None:
    if norm not in NORMS:
        raise ValueError(f"{op}: `norm` must be one of {NORMS}, got {norm!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: `reduction` must be one of {REDUCTIONS}, got {reduction!r}")
    for name, t in (("q_true", q_true), ("q_model", q_model)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: `{name}` must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{op}: `{name}` must be float32 or float64, got {t.dtype}")
    check_same(op, {"q_true": q_true, "q_model": q_model})
    if q_model.dim() == 0:
        raise ValueError(f"{op}: `q_model` must have at least one dimension, got a scalar")
    check_nonempty(op, {"q_model.numel()": q_model.numel()})
    if q_true.shape != q_model.shape:
        check_shape(op, "q_true", q_true, q_model.shape[1:],
                    f"like `q_model` {tuple(q_model.shape)} or its shape without the first "
                    "(member) dimension")


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------
def value_aware_loss(
    q_true: torch.Tensor,
    q_model: torch.Tensor,
    norm: str = "l1",
    reduction: str = "sum",
    backend: str | None = None,
) -> torch.Tensor:
    """VA-MBPO's model-advantage loss ``norm(Q − Q̂)``; formula and shapes in the module docstring.

    Args:
        q_true: values of the real next states, ``q_model``'s shape or ``q_model.shape[1:]``.
        q_model: values of the model's next-state samples (differentiable).
        norm: ``"l1"`` (MA-L1) or ``"l2"`` (VAML-L2).
        reduction: ``"sum"`` (VA-MBPO), ``"mean"`` or ``"none"``.
        backend: ``None`` (process default), ``"auto"``, ``"reference"`` or ``"native"``.
    """
    _validate(q_true, q_model, norm, reduction)
    _native.use_native(q_model.device, backend, prefer_native_cpu=False, prefer_native_cuda=False)
    return value_aware_loss_reference(q_true, q_model, norm, reduction)


def itervaml_loss(
    v_model: torch.Tensor,
    v_true: torch.Tensor,
    reduction: str = "mean",
    backend: str | None = None,
) -> torch.Tensor:
    """IterVAML: ``(V(ŝ') − V(s'))²``, averaged (``reduction="mean"``) or summed.

    Args:
        v_model: ``V(ŝ')`` of the model's predictions, computed with gradient to ``ŝ'``.
        v_true: ``V(s')`` of the real next states (the same shape, or without the first,
            member, dimension); usually detached.
    """
    _validate(v_true, v_model, "l2", reduction, op="itervaml_loss")
    return value_aware_loss(v_true, v_model, "l2", reduction, backend)
