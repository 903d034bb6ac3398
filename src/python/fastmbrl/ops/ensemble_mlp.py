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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._validate import check_nonempty, check_same, check_shape, check_tensor

OP = "ensemble_mlp"
ACTIVATIONS = ("silu", "relu", "tanh")
_ACT_FNS = {"silu": F.silu, "relu": F.relu, "tanh": torch.tanh}


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
    # Native kernels are added by the ensemble-MLP issue; until then every backend that is not
    # an explicit "native" request evaluates the reference.
    if backend == "native":
        raise RuntimeError(f"{OP}: no native kernel is compiled yet; use backend='reference'")
    return ensemble_mlp_reference(x, weights, biases, activation, min_logvar, max_logvar)
