"""The ``torch.library`` namespace every fastmbrl op is registered in (``torch.ops.fastmbrl``).

Ops use ``Library.define``/``impl`` (about 4 µs per call) rather than ``@custom_op`` (about
16 µs); see ../shared notes on the build. Each op module defines its schema, CPU/CUDA kernels,
fake (meta) kernel and autograd formula against this one library object.
"""

from __future__ import annotations

import torch

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
