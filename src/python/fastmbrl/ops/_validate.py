"""Argument validation shared by every op. Errors name the op, the argument, and the expected
and actual shape, dtype or device, and are raised before any native code runs."""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64)


def check_tensor(op: str, name: str, t: object, ndim: int | Sequence[int], layout: str) -> None:
    """``t`` is a float32/float64 tensor with ``ndim`` dimensions (``layout`` names them)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: `{name}` must be a torch.Tensor {layout}, got {type(t).__name__}")
    dims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if t.dim() not in dims:
        raise ValueError(
            f"{op}: `{name}` must have {' or '.join(map(str, dims))} dimensions {layout}, "
            f"got shape {tuple(t.shape)}"
        )
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{op}: `{name}` must be float32 or float64, got {t.dtype}"
        )


def check_same(op: str, tensors: dict[str, torch.Tensor]) -> None:
    """All tensors share one device and one dtype."""
    items = list(tensors.items())
    name0, t0 = items[0]
    for name, t in items[1:]:
        if t.device != t0.device:
            raise ValueError(
                f"{op}: all tensors must be on one device; `{name0}` is on {t0.device}, "
                f"`{name}` is on {t.device}"
            )
        if t.dtype != t0.dtype:
            raise TypeError(
                f"{op}: all tensors must have one dtype; `{name0}` is {t0.dtype}, "
                f"`{name}` is {t.dtype}"
            )


def check_shape(op: str, name: str, t: torch.Tensor, expected: Sequence[int], layout: str) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(
            f"{op}: `{name}` must have shape {layout} = {tuple(expected)}, got {tuple(t.shape)}"
        )


def check_nonempty(op: str, sizes: dict[str, int]) -> None:
    for name, n in sizes.items():
        if n <= 0:
            raise ValueError(f"{op}: {name} must be at least 1, got {n} (empty input)")
