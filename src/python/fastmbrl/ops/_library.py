"""The ``torch.library`` namespace every fastmbrl op is registered in (``torch.ops.fastmbrl``).

Ops use ``Library.define``/``impl`` (about 4 µs per call) rather than ``@custom_op`` (about
16 µs); see ../shared notes on the build. Each op module defines its schema, CPU/CUDA kernels,
fake (meta) kernel and autograd formula against this one library object.
"""

from __future__ import annotations

import torch

LIB = torch.library.Library("fastmbrl", "DEF")
NAMESPACE = "fastmbrl"
