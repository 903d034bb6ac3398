"""Batched ensemble MLP: E independent MLPs evaluated in one op.

Formula (mbrl-lib ``EnsembleLinearLayer``: weight ``[E, in, out]``, i.e. ``x @ W``)::

    h_0 = x
    h_l = act(h_{l-1} @ W_l + b_l)        l = 1 .. L-1   (act: silu | relu | tanh)
    y   = h_{L-1} @ W_L + b_L

Optional Gaussian head (mbrl-lib ``GaussianMLP``): with ``min_logvar``/``max_logvar`` given, the
last layer has 2·D outputs split into ``mean = y[..., :D]`` and a log-variance bounded softly::

    lv = max_logvar - softplus(max_logvar - y[..., D:])
    lv = min_logvar + softplus(lv - min_logvar)

Shapes::

    x            [E, B, in]  one input per member (bootstrap training), or
                 [B, in]     shared by all members
    weights[l]   [E, in_l, out_l]      (in_1 = in, in_l = out_{l-1})
    biases[l]    [E, out_l]
    min_logvar, max_logvar  [D]        (D = out_L / 2)
    returns      y [E, B, out_L], or (mean, logvar), each [E, B, D]

Gradients flow to x, every weight and bias, and to min_logvar/max_logvar (learnable or frozen).
Double backward (``create_graph=True``, e.g. a gradient penalty) through the native op raises a
clear error instead of returning wrong second derivatives; ``backend="reference"`` supports it.

Native op (``torch.ops.fastmbrl.ensemble_mlp_forward`` / ``ensemble_mlp_backward``; one autograd
node for the whole MLP; works under autograd, ``opcheck`` and ``torch.compile(fullgraph=True)``):

- CUDA: one kernel per layer, a tiled register-blocked batched GEMM over the E members with the
  bias + activation (hidden layers) or bias + soft logvar bounds (last layer) fused in its
  epilogue; backward dX = dZ·Wᵀ with the previous layer's activation derivative fused, dW = Xᵀ·dZ,
  db = Σ_b dZ and the head's bound gradients as fixed-order reductions (deterministic, no
  atomics). fp32 (or fp64) arithmetic, no TF32. **Compiled for sm_80/sm_90 but not yet run on a
  GPU**; every kernel and this CUDA glue are run in CI by the SIMT emulation (tests/emu,
  docs/ops.md) against the reference.
- CPU: torch's batched GEMM with the bias fused (``baddbmm``), torch's vectorised activation and
  softplus kernels, and a hand-written closed-form backward.

CPU verdict (benchmarks/results/2026-11-21-cpu*-ensemble_mlp.txt; one training step, E=7,
B=256, 4x200 SiLU, Gaussian head, on a shared 2-core EPYC): the GEMMs are torch's in both paths
and take most of the step, so the native CPU path is at parity without the head, and slower with
it at Humanoid size (D=377: 0.88x the reference's median at 1 thread; its head -- torch
elementwise ops, softplus recomputed in the backward -- costs about twice the reference's autograd
head). At HalfCheetah size it is within noise (0.97x). It never wins, so ``auto`` runs the
reference on CPU (``PREFER_NATIVE_CPU = False``); ``backend="native"`` still runs the native CPU
path. Until the CUDA kernels are measured on a GPU, ``auto`` also keeps CUDA tensors on the
reference (``PREFER_NATIVE_CUDA = False``); ``backend="native"`` runs them.

The scalar native CPU epilogues (``mlp_*_cpu``) measured ~5x slower than torch's vectorised
kernels and are not on the CPU path; tests use them to check the math the CUDA epilogues share.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _native
from ._library import LIB, impl_cuda, refuse_double_backward
from ._validate import check_nonempty, check_same, check_shape, check_tensor

OP = "ensemble_mlp"
ACTIVATIONS = ("silu", "relu", "tanh")
_ACT_FNS = {"silu": F.silu, "relu": F.relu, "tanh": torch.tanh}
ACT_CODES = {"silu": 0, "relu": 1, "tanh": 2}  # include/fastmbrl/ensemble_mlp.h
NO_ACT = -1

# Measured verdict for CPU tensors in ``auto`` mode (benchmarks/results/*-cpu*-ensemble_mlp.*).
PREFER_NATIVE_CPU = False
# The CUDA kernels have not been run on a GPU yet (none on the development machine), nor timed
# against torch's cuBLAS GEMMs, so ``auto`` keeps CUDA tensors on the reference until a measured
# run says otherwise; ``backend="native"`` runs them.
PREFER_NATIVE_CUDA = False


def bound_logvar(
    raw: torch.Tensor, min_logvar: torch.Tensor, max_logvar: torch.Tensor
) -> torch.Tensor:
    """mbrl-lib's soft bounds: ``max - softplus(max - lv)``, then ``min + softplus(lv - min)``."""
    lv = max_logvar - F.softplus(max_logvar - raw)
    return min_logvar + F.softplus(lv - min_logvar)


def ensemble_mlp_reference(
    x: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    activation: str = "silu",
    min_logvar: torch.Tensor | None = None,
    max_logvar: torch.Tensor | None = None,
):
    """Pure-PyTorch ensemble MLP (batched matmul, as mbrl-lib); see the module docstring."""
    act = _ACT_FNS[activation]
    h = x
    last = len(weights) - 1
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = torch.matmul(h, w) + b.unsqueeze(1)  # [B,in] @ [E,in,out] broadcasts to [E,B,out]
        if layer < last:
            h = act(h)
    if min_logvar is None:
        return h
    d = h.shape[-1] // 2
    return h[..., :d], bound_logvar(h[..., d:], min_logvar, max_logvar)


def validate(x, weights, biases, activation, min_logvar, max_logvar) -> None:
    """Check every argument of :func:`ensemble_mlp`; errors name the argument and the shapes."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"{OP}: `activation` must be one of {ACTIVATIONS}, got {activation!r}")
    if not isinstance(weights, (list, tuple)) or not isinstance(biases, (list, tuple)):
        raise TypeError(f"{OP}: `weights` and `biases` must be lists of tensors")
    if len(weights) == 0 or len(weights) != len(biases):
        raise ValueError(
            f"{OP}: need one bias per weight and at least one layer, got {len(weights)} weights "
            f"and {len(biases)} biases"
        )
    check_tensor(OP, "x", x, (2, 3), "[E, B, in] or [B, in]")
    tensors = {"x": x}
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        check_tensor(OP, f"weights[{i}]", w, 3, "[E, in, out]")
        check_tensor(OP, f"biases[{i}]", b, 2, "[E, out]")
        tensors[f"weights[{i}]"] = w
        tensors[f"biases[{i}]"] = b
    check_same(OP, tensors)
    E, fan_in, _ = weights[0].shape
    B = x.shape[-2]
    check_nonempty(OP, {"E (ensemble size)": E, "B (batch)": B})
    if x.dim() == 3:
        check_shape(OP, "x", x, (E, B, fan_in), "[E, B, in]")
    else:
        check_shape(OP, "x", x, (B, fan_in), "[B, in]")
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        check_shape(OP, f"weights[{i}]", w, (E, fan_in, w.shape[2]), "[E, in_l, out_l]")
        check_shape(OP, f"biases[{i}]", b, (E, w.shape[2]), "[E, out_l]")
        fan_in = w.shape[2]
    if (min_logvar is None) != (max_logvar is None):
        raise ValueError(f"{OP}: give both `min_logvar` and `max_logvar`, or neither")
    if min_logvar is not None:
        if fan_in % 2:
            raise ValueError(
                f"{OP}: a Gaussian head needs an even last-layer width (mean and logvar), "
                f"got {fan_in}"
            )
        for name, t in (("min_logvar", min_logvar), ("max_logvar", max_logvar)):
            check_tensor(OP, name, t, 1, "[D]")
            check_same(OP, {"x": x, name: t})
            check_shape(OP, name, t, (fan_in // 2,), "[D] (half the last layer's width)")


# ---------------------------------------------------------------------------------------------
# torch.library registration: fastmbrl::ensemble_mlp_forward and its backward
#
# The forward returns the output ([E, B, out_L], logvar half already bounded with a head) and
# the tensors the backward needs: saved = [z_1 .. z_{L-1}, h_1 .. h_{L-1}] (pre- and
# post-activations of the hidden layers), then raw [E, B, D] (the unbounded logvar) with a head.
# The backward returns (dx, dW list, db list, d_min_logvar, d_max_logvar); dx is empty ([0])
# when not needed, d_min/d_max are empty without a head.
# ---------------------------------------------------------------------------------------------
LIB.define(
    "ensemble_mlp_forward(Tensor x, Tensor[] weights, Tensor[] biases, int activation, "
    "Tensor? min_logvar, Tensor? max_logvar) -> (Tensor, Tensor[])"
)
LIB.define(
    "ensemble_mlp_backward(Tensor grad, Tensor x, Tensor[] weights, Tensor[] saved, "
    "int activation, Tensor? min_logvar, Tensor? max_logvar, bool need_x_grad) "
    "-> (Tensor, Tensor[], Tensor[], Tensor, Tensor)"
)


def _torch_act(activation: int, z: torch.Tensor) -> torch.Tensor:
    if activation == ACT_CODES["silu"]:
        return F.silu(z)
    if activation == ACT_CODES["relu"]:
        return F.relu(z)
    return torch.tanh(z)


def _torch_act_backward(activation: int, g, z, h) -> torch.Tensor:
    if activation == ACT_CODES["silu"]:
        return torch.ops.aten.silu_backward(g, z)
    if activation == ACT_CODES["relu"]:
        return torch.ops.aten.threshold_backward(g, h, 0)
    return torch.ops.aten.tanh_backward(g, h)


def _forward_cpu(x, weights, biases, activation: int, min_logvar, max_logvar):
    """CPU: torch's batched GEMM with the bias fused (``baddbmm``) and torch's vectorised
    elementwise kernels for the activation and the head; one autograd node for the whole MLP."""
    L = len(weights)
    E, B = weights[0].shape[0], x.shape[-2]
    zs, hs = [], []
    h = x if x.dim() == 3 else x.expand(E, B, x.shape[-1])
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
        z = torch.baddbmm(b.unsqueeze(1), h, w)
        if layer < L - 1:
            h = _torch_act(activation, z)
            zs.append(z)
            hs.append(h)
        else:
            h = z
    saved = zs + hs
    if min_logvar is not None:
        # Gaussian head with torch's vectorised elementwise kernels: measured ~5x faster on CPU
        # than the scalar native loop (mlp_head_forward_cpu), which libm's exp/log1p bound.
        D = h.shape[-1] // 2
        raw = h[..., D:].clone(memory_format=torch.contiguous_format)
        h[..., D:] = bound_logvar(raw, min_logvar, max_logvar)
        saved.append(raw)
    return h, saved


def _backward_cpu(grad, x, weights, saved, activation: int, min_logvar, max_logvar,
                  need_x_grad: bool):
    L = len(weights)
    nh = L - 1
    zs, hs = saved[:nh], saved[nh:2 * nh]
    if min_logvar is not None:
        # closed-form head gradient (see include/fastmbrl/ensemble_mlp.h), torch elementwise ops
        raw = saved[2 * nh]
        D = raw.shape[-1]
        g_lv = grad[..., D:]
        u = max_logvar - raw
        v = (max_logvar - min_logvar) - F.softplus(u)
        t = torch.ops.aten.softplus_backward(g_lv, v, 1.0, 20.0)  # g s(v)
        d_raw = torch.ops.aten.softplus_backward(t, u, 1.0, 20.0)  # g s(v) s(u)
        t_sum = t.sum((0, 1))
        d_hi = t_sum - d_raw.sum((0, 1))  # Σ g s(v) (1 - s(u))
        d_lo = g_lv.sum((0, 1)) - t_sum  # Σ g (1 - s(v))
        dz = torch.cat([grad[..., :D], d_raw], dim=-1)
    else:
        dz = grad
        d_lo, d_hi = grad.new_empty((0,)), grad.new_empty((0,))
    d_ws: list[torch.Tensor] = [grad] * L
    d_bs: list[torch.Tensor] = [grad] * L
    dx = x.new_empty((0,))
    for layer in reversed(range(L)):
        inp = hs[layer - 1] if layer > 0 else x
        d_ws[layer] = torch.matmul(inp.transpose(-1, -2), dz)  # [E, in, out]
        d_bs[layer] = dz.sum(1)
        if layer > 0:
            dh = torch.bmm(dz, weights[layer].transpose(1, 2))
            dz = _torch_act_backward(activation, dh, zs[layer - 1], hs[layer - 1])
        elif need_x_grad:
            dx = torch.bmm(dz, weights[0].transpose(1, 2))
            if x.dim() == 2:
                dx = dx.sum(0)
    return dx, d_ws, d_bs, d_lo, d_hi


def _forward_cuda(x, weights, biases, activation: int, min_logvar, max_logvar):
    """CUDA: one fused kernel per layer (tiled GEMM + bias + activation / head bounds).
    Compiled, not yet verified on a GPU."""
    _check_cuda_limits(x, weights)
    C, P = _native._C, _native.ptr
    code = _native.dtype_code(x)
    stream = _native.cuda_stream(x.device)
    x = x.contiguous()
    weights = [w.contiguous() for w in weights]
    biases = [b.contiguous() for b in biases]
    L = len(weights)
    E, B = weights[0].shape[0], x.shape[-2]
    h, h_stride = x, (B * x.shape[-1] if x.dim() == 3 else 0)
    zs, hs = [], []
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
        K, N = w.shape[1], w.shape[2]
        if layer < L - 1:
            z, hn = _native.empty((E, B, N), x), _native.empty((E, B, N), x)
            C.mlp_layer_forward_cuda(code, P(h), h_stride, P(w), P(b), E, B, K, N, activation,
                                     P(z), P(hn), 0, 0, 0, 0, stream)
            zs.append(z)
            hs.append(hn)
            h, h_stride = hn, B * N
            continue
        out = _native.empty((E, B, N), x)
        if min_logvar is None:
            C.mlp_layer_forward_cuda(code, P(h), h_stride, P(w), P(b), E, B, K, N, NO_ACT, 0,
                                     P(out), 0, 0, 0, 0, stream)
            return out, zs + hs
        D = N // 2
        raw = _native.empty((E, B, D), x)
        lo, hi = min_logvar.contiguous(), max_logvar.contiguous()
        C.mlp_layer_forward_cuda(code, P(h), h_stride, P(w), P(b), E, B, K, N, NO_ACT, 0,
                                 P(out), P(lo), P(hi), D, P(raw), stream)
        return out, zs + hs + [raw]
    raise AssertionError("unreachable")


def _check_cuda_limits(x, weights) -> None:
    """The tiled GEMM puts members on grid.z and 64-row tiles of the batch (and, for weight
    gradients, of the layer inputs) on grid.y."""
    E, B = weights[0].shape[0], x.shape[-2]
    _native.check_cuda_limit(OP, "E (ensemble size)", E, _native.CUDA_MAX_GRID_YZ,
                             "members on grid.z")
    _native.check_cuda_limit(OP, "B (batch rows)", B, _native.CUDA_MAX_TILED_ROWS,
                             "64-row tiles on grid.y")
    for i, w in enumerate(weights):
        _native.check_cuda_limit(OP, f"weights[{i}] input width", w.shape[1],
                                 _native.CUDA_MAX_TILED_ROWS, "64-row tiles on grid.y")


def _backward_cuda(grad, x, weights, saved, activation: int, min_logvar, max_logvar,
                   need_x_grad: bool):
    _check_cuda_limits(x, weights)
    C, P = _native._C, _native.ptr
    code = _native.dtype_code(grad)
    stream = _native.cuda_stream(grad.device)
    grad, x = grad.contiguous(), x.contiguous()
    weights = [w.contiguous() for w in weights]
    L = len(weights)
    nh = L - 1
    zs, hs = saved[:nh], saved[nh:2 * nh]
    E, B = weights[0].shape[0], x.shape[-2]
    if min_logvar is not None:
        raw = saved[2 * nh].contiguous()
        D = raw.shape[-1]
        dz = _native.empty_like(grad)
        d_lo, d_hi = _native.empty((D,), grad), _native.empty((D,), grad)
        lo, hi = min_logvar.contiguous(), max_logvar.contiguous()
        C.mlp_head_backward_cuda(code, P(grad), P(raw), P(lo), P(hi), E * B, D, P(dz), P(d_lo),
                                 P(d_hi), stream)
    else:
        dz = grad
        d_lo, d_hi = grad.new_empty((0,)), grad.new_empty((0,))
    d_ws: list[torch.Tensor] = [grad] * L
    d_bs: list[torch.Tensor] = [grad] * L
    dx = x.new_empty((0,))
    for layer in reversed(range(L)):
        w = weights[layer]
        In, Out = w.shape[1], w.shape[2]
        if layer > 0:
            inp, inp_stride = hs[layer - 1].contiguous(), B * In
        else:
            inp, inp_stride = x, (B * In if x.dim() == 3 else 0)
        d_ws[layer] = _native.empty((E, In, Out), grad)
        d_bs[layer] = _native.empty((E, Out), grad)
        C.mlp_layer_backward_params_cuda(code, P(inp), inp_stride, P(dz), E, B, In, Out,
                                         P(d_ws[layer]), P(d_bs[layer]), stream)
        if layer > 0:
            z_prev, h_prev = zs[layer - 1].contiguous(), hs[layer - 1].contiguous()
            d_prev = _native.empty((E, B, In), grad)
            C.mlp_layer_backward_input_cuda(code, P(dz), P(w), E, B, Out, In, activation,
                                            P(z_prev), P(h_prev), P(d_prev), stream)
            dz = d_prev
        elif need_x_grad:
            dxe = _native.empty((E, B, In), grad)
            C.mlp_layer_backward_input_cuda(code, P(dz), P(w), E, B, Out, In, NO_ACT, 0, 0,
                                            P(dxe), stream)
            if x.dim() == 2:
                dx = _native.empty((B, In), grad)
                C.mlp_sum_members_cuda(code, P(dxe), E, B * In, P(dx), stream)
            else:
                dx = dxe
    return dx, d_ws, d_bs, d_lo, d_hi


def _forward_fake(x, weights, biases, activation: int, min_logvar, max_logvar):
    E, B = weights[0].shape[0], x.shape[-2]
    hidden = [x.new_empty((E, B, w.shape[2])) for w in weights[:-1]]
    saved = hidden + [x.new_empty((E, B, w.shape[2])) for w in weights[:-1]]
    N = weights[-1].shape[2]
    if min_logvar is not None:
        saved.append(x.new_empty((E, B, N // 2)))
    return x.new_empty((E, B, N)), saved


def _backward_fake(grad, x, weights, saved, activation: int, min_logvar, max_logvar,
                   need_x_grad: bool):
    dx = x.new_empty(x.shape) if need_x_grad else x.new_empty((0,))
    d_ws = [w.new_empty(w.shape) for w in weights]
    d_bs = [w.new_empty((w.shape[0], w.shape[2])) for w in weights]
    if min_logvar is not None:
        return dx, d_ws, d_bs, min_logvar.new_empty(min_logvar.shape), \
            max_logvar.new_empty(max_logvar.shape)
    return dx, d_ws, d_bs, grad.new_empty((0,)), grad.new_empty((0,))


if _native.HAS_NATIVE:
    LIB.impl("ensemble_mlp_forward", _forward_cpu, "CPU")
    LIB.impl("ensemble_mlp_backward", _backward_cpu, "CPU")
impl_cuda("ensemble_mlp_forward", _forward_cuda)
impl_cuda("ensemble_mlp_backward", _backward_cuda)
torch.library.register_fake("fastmbrl::ensemble_mlp_forward", _forward_fake, lib=LIB)
torch.library.register_fake("fastmbrl::ensemble_mlp_backward", _backward_fake, lib=LIB)


def _setup_context(ctx, inputs, output):
    x, weights, biases, activation, min_logvar, max_logvar = inputs
    _, saved = output
    # The saved activations are outputs only so the backward can have them: no gradient flows
    # through them, and autograd must not materialise zero gradients for them.
    ctx.mark_non_differentiable(*saved)
    ctx.set_materialize_grads(False)
    ctx.n_layers = len(weights)
    ctx.activation = activation
    ctx.head = min_logvar is not None
    ctx.save_for_backward(x, min_logvar, max_logvar, *weights, *saved)


def _autograd_backward(ctx, grad, _grad_saved):
    refuse_double_backward("ensemble_mlp")
    x, min_logvar, max_logvar, *rest = ctx.saved_tensors
    if grad is None:  # the output was not used in the loss
        none = [None] * ctx.n_layers
        return None, none, list(none), None, None, None
    weights, saved = rest[: ctx.n_layers], rest[ctx.n_layers:]
    need_x = bool(ctx.needs_input_grad[0])
    dx, d_ws, d_bs, d_lo, d_hi = torch.ops.fastmbrl.ensemble_mlp_backward(
        grad, x, list(weights), list(saved), ctx.activation, min_logvar, max_logvar, need_x
    )
    if not ctx.head:
        d_lo = d_hi = None
    return dx if need_x else None, list(d_ws), list(d_bs), None, d_lo, d_hi


torch.library.register_autograd(
    "fastmbrl::ensemble_mlp_forward", _autograd_backward, setup_context=_setup_context, lib=LIB
)


def _use_native(device: torch.device, backend: str | None) -> bool:
    """``_native.use_native`` with this op's verdicts for CPU and CUDA tensors."""
    return _native.use_native(device, backend, prefer_native_cpu=PREFER_NATIVE_CPU,
                              prefer_native_cuda=PREFER_NATIVE_CUDA)


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------
def ensemble_mlp(
    x: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    activation: str = "silu",
    min_logvar: torch.Tensor | None = None,
    max_logvar: torch.Tensor | None = None,
    backend: str | None = None,
):
    """Evaluate E MLPs at once; formula and shapes in the module docstring.

    Returns ``y [E, B, out]``, or ``(mean, logvar)`` when the logvar bounds are given.
    ``backend``: ``None`` (process default), ``"auto"``, ``"reference"`` or ``"native"``.
    """
    validate(x, weights, biases, activation, min_logvar, max_logvar)
    if not _use_native(x.device, backend):
        return ensemble_mlp_reference(x, weights, biases, activation, min_logvar, max_logvar)
    out, _ = torch.ops.fastmbrl.ensemble_mlp_forward(
        x, list(weights), list(biases), ACT_CODES[activation], min_logvar, max_logvar
    )
    if min_logvar is None:
        return out
    d = out.shape[-1] // 2
    return out[..., :d], out[..., d:]
