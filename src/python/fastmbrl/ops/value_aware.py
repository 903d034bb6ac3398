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

Native kernels (``fastmbrl::value_aware_loss``): one fused pass computes the loss (elementwise,
or its total with a deterministic fixed-order reduction) and the unit gradient ``∂loss/∂Q̂``;
the backward is one torch multiply of it by the incoming gradient. Double backward is not
supported by the native path (it raises).

Dispatch: CUDA tensors run the CUDA kernel when compiled (``prefer_native_cuda=True``; the CUDA
kernels are verified by the SIMT emulation in CI, not yet run on a GPU). CPU tensors run the
native CPU kernel from
``CPU_NATIVE_MIN_ELEMENTS`` = 2^19 elements of ``q_model`` on, the reference below
(benchmarks/results/2026-11-21-cpu-1thread-value_aware.txt, l1 "sum" forward + backward, E=7,
1 thread): native vs reference eager 0.52x at B=256 (1.8k elements: torch.library's Python
autograd path costs ~100 µs more than the reference's few ops), 0.58-0.79x from 29k to 229k
elements, 0.88-1.09x at 459k (within the noise), 1.26x at 917k and 1.72-1.79x at 7.3M.
``backend="reference"`` or ``FASTMBRL_BACKEND=reference`` forces the reference, and
``backend="native"`` the kernel.
"""

from __future__ import annotations

import torch

from .. import _native
from ._library import LIB, impl_cuda, refuse_double_backward
from ._validate import check_nonempty, check_same, check_shape

OP = "value_aware_loss"
NORMS = ("l1", "l2")
REDUCTIONS = ("sum", "mean", "none")
_NORM_CODES = {"l1": 1, "l2": 2}
CPU_NATIVE_MIN_ELEMENTS = 1 << 19  # measured crossover; see the module docstring


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


def _validate(q_true, q_model, norm: str, reduction: str, op: str = OP,
              names: tuple[str, str] = ("q_true", "q_model")) -> None:
    """``names``: what the caller calls the two arguments (itervaml_loss: v_true, v_model)."""
    n_true, n_model = names
    if norm not in NORMS:
        raise ValueError(f"{op}: `norm` must be one of {NORMS}, got {norm!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: `reduction` must be one of {REDUCTIONS}, got {reduction!r}")
    for name, t in ((n_true, q_true), (n_model, q_model)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: `{name}` must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{op}: `{name}` must be float32 or float64, got {t.dtype}")
    check_same(op, {n_true: q_true, n_model: q_model})
    if q_model.dim() == 0:
        raise ValueError(f"{op}: `{n_model}` must have at least one dimension, got a scalar")
    check_nonempty(op, {f"{n_model}.numel()": q_model.numel()})
    if q_true.shape != q_model.shape:
        check_shape(op, n_true, q_true, q_model.shape[1:],
                    f"like `{n_model}` {tuple(q_model.shape)} or its shape without the first "
                    "(member) dimension")


# ---------------------------------------------------------------------------------------------
# torch.library registration: fastmbrl::value_aware_loss
#
# The forward returns (loss, unit): loss is elementwise (q_model's shape) or the total over all
# elements (a 0-dim tensor), unit = d loss / d q_model per element. The backward is one torch
# multiply, grad * unit (grad broadcasts when the loss was reduced). "mean" divides the total by
# n outside the op, so autograd hands the backward g / n.
# ---------------------------------------------------------------------------------------------
LIB.define(
    "value_aware_loss(Tensor q_true, Tensor q_model, int norm, bool elementwise) "
    "-> (Tensor, Tensor)"
)


def _forward_prep(q_true, q_model, norm: int, elementwise: bool):
    q_true, q_model = q_true.contiguous(), q_model.contiguous()
    shared = q_true.dim() != q_model.dim()
    E = q_model.shape[0] if shared else 1
    N = q_model.numel() // E
    loss = _native.empty(q_model.shape if elementwise else (), q_model)
    unit = _native.empty_like(q_model)
    P = _native.ptr
    args = (_native.dtype_code(q_model), P(q_true), P(q_model), shared, E, N, norm, elementwise,
            P(loss), P(unit))
    return (loss, unit), args, (q_true, q_model)  # keep the contiguous inputs alive


def _forward_cpu(q_true, q_model, norm: int, elementwise: bool):
    outs, args, _alive = _forward_prep(q_true, q_model, norm, elementwise)
    _native._C.value_aware_forward_cpu(*args)
    return outs


def _forward_cuda(q_true, q_model, norm: int, elementwise: bool):
    outs, args, _alive = _forward_prep(q_true, q_model, norm, elementwise)
    C, P = _native._C, _native.ptr
    ws = _native.empty((max(1, C.value_aware_cuda_workspace(q_model.numel(), elementwise)),),
                       q_model)
    C.value_aware_forward_cuda(*args, P(ws), _native.cuda_stream(q_model.device))
    return outs


def _forward_fake(q_true, q_model, norm: int, elementwise: bool):
    return q_model.new_empty(q_model.shape if elementwise else ()), torch.empty_like(q_model)


if _native.HAS_NATIVE:
    LIB.impl("value_aware_loss", _forward_cpu, "CPU")
impl_cuda("value_aware_loss", _forward_cuda)
torch.library.register_fake("fastmbrl::value_aware_loss", _forward_fake, lib=LIB)


def _setup_context(ctx, inputs, output):
    q_true, q_model, _norm, elementwise = inputs
    _loss, unit = output
    ctx.mark_non_differentiable(unit)
    ctx.save_for_backward(unit)
    ctx.shared = q_true.dim() != q_model.dim()


def _autograd_backward(ctx, grad, _grad_unit):
    refuse_double_backward(OP)
    (unit,) = ctx.saved_tensors
    d_model = grad * unit  # grad is 0-dim when the loss was reduced
    d_true = None
    if ctx.needs_input_grad[0]:
        d_true = -(d_model.sum(0) if ctx.shared else d_model)
    return d_true, d_model, None, None


torch.library.register_autograd(
    "fastmbrl::value_aware_loss", _autograd_backward, setup_context=_setup_context, lib=LIB
)


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
    prefer_cpu = q_model.numel() >= CPU_NATIVE_MIN_ELEMENTS
    if not _native.use_native(q_model.device, backend, prefer_native_cpu=prefer_cpu,
                              prefer_native_cuda=True):
        return value_aware_loss_reference(q_true, q_model, norm, reduction)
    loss, _unit = torch.ops.fastmbrl.value_aware_loss(
        q_true, q_model, _NORM_CODES[norm], reduction == "none"
    )
    if reduction == "mean":
        return loss / q_model.numel()
    return loss


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
    _validate(v_true, v_model, "l2", reduction, op="itervaml_loss", names=("v_true", "v_model"))
    return value_aware_loss(v_true, v_model, "l2", reduction, backend)
