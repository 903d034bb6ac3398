"""The ``torch.library`` namespace every fastmbrl op is registered in (``torch.ops.fastmbrl``).

Ops use ``Library.define``/``impl`` (about 4 µs per call) rather than ``@custom_op`` (about
16 µs); see ../shared notes on the build. Each op module defines its schema, CPU/CUDA kernels,
fake (meta) kernel and autograd formula against this one library object.
"""

from __future__ import annotations

import torch

from .. import _native

LIB = torch.library.Library("fastmbrl", "DEF")
NAMESPACE = "fastmbrl"


def refuse_double_backward(op: str) -> None:
    """Call first in the autograd formula of an op whose backward treats a saved unit gradient
    as a constant: with ``create_graph=True`` (a double backward is on its way) the second
    derivatives would be silently wrong, so raise instead."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"{op}: double backward (create_graph=True) is not supported by the native op; use "
            "backend='reference' for higher-order gradients"
        )


# ---------------------------------------------------------------------------------------------
# CUDA kernels: one registration point
#
# ``impl_cuda(op, fn)`` registers ``fn`` as the CUDA kernel of ``fastmbrl::op``, wrapped so that
#   - it runs with the tensors' device current (``torch.cuda.device``): tensors on cuda:1 while
#     cuda:0 is current launch on cuda:1 (the native code takes the stream of the tensors'
#     device and never sets the device itself);
#   - with FASTMBRL_CUDA_SYNC=1 it synchronises afterwards and raises with the op's name.
# Every wrapped kernel is also recorded in CUDA_IMPLS: the SIMT emulation (tests/emu) runs them
# on CPU tensors, so the CUDA code path of every op is executed in CI without a GPU.
# ---------------------------------------------------------------------------------------------
CUDA_IMPLS: dict = {}


def _device_of(args) -> torch.device | None:
    for a in args:
        if isinstance(a, (list, tuple)):
            a = a[0] if a else None
        device = getattr(a, "device", None)
        if isinstance(device, torch.device):
            return device
    return None


def guard_cuda(op: str, fn):
    """``fn`` run on its tensors' device (and synchronised with FASTMBRL_CUDA_SYNC=1)."""

    def run(*args):
        device = _device_of(args)
        if device is not None and device.type == "cuda" and device.index is not None \
                and device.index != torch.cuda.current_device():
            with torch.cuda.device(device):
                out = fn(*args)
        else:
            out = fn(*args)
        if _native.CUDA_SYNC:
            _native.synchronize_after(op, device)
        return out

    run.__name__ = getattr(fn, "__name__", op)
    run.__wrapped__ = fn
    return run


def impl_cuda(op: str, fn) -> None:
    """Register ``fn`` as the CUDA kernel of ``fastmbrl::op`` (device guard, sync switch) and
    record it for the SIMT emulation. The op's CPU kernel must not branch on the device."""
    wrapped = guard_cuda(op, fn)
    CUDA_IMPLS[op] = wrapped
    if _native.HAS_CUDA_KERNELS:
        LIB.impl(op, wrapped, "CUDA")
