"""Access to the native module ``fastmbrl._C`` and backend selection.

The native module is torch-agnostic (raw pointers, sizes, CUDA stream handles). This file is
the only place that turns torch tensors into those arguments.

Backends
--------
``auto`` (default)  native kernels where they are compiled and measured faster, else the
                    pure-PyTorch reference.
``reference``       always the pure-PyTorch reference (the definition of every op).
``native``          always the native kernel; an error where none is compiled for the device.

Set it for a whole process with ``FASTMBRL_BACKEND=reference`` (read at import), with
:func:`set_backend`, or per call with ``backend=...``.
"""

from __future__ import annotations

import os

import torch

try:
    from . import _C  # type: ignore[attr-defined]

    IMPORT_ERROR: str | None = None
except ImportError as exc:  # a source checkout without a build, or a broken install
    _C = None
    IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

HAS_NATIVE: bool = _C is not None
HAS_CUDA_KERNELS: bool = bool(_C is not None and _C.WITH_CUDA)

BACKENDS = ("auto", "reference", "native")
_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}


def _parse_backend(value: str, source: str) -> str:
    value = value.strip().lower()
    if value not in BACKENDS:
        raise ValueError(f"{source} must be one of {BACKENDS}, got {value!r}")
    return value


_BACKEND = _parse_backend(os.environ.get("FASTMBRL_BACKEND", "auto") or "auto", "FASTMBRL_BACKEND")


def get_backend() -> str:
    """The process-wide backend: ``auto``, ``reference`` or ``native``."""
    return _BACKEND


def set_backend(backend: str) -> None:
    """Set the process-wide backend (overrides ``FASTMBRL_BACKEND``)."""
    global _BACKEND
    _BACKEND = _parse_backend(backend, "backend")


def native_available(device: torch.device) -> bool:
    """Whether a native kernel is compiled for tensors on ``device``."""
    if device.type == "cpu":
        return HAS_NATIVE
    if device.type == "cuda":
        return HAS_CUDA_KERNELS
    return False


def use_native(device: torch.device, backend: str | None, prefer_native_cpu: bool = True,
               prefer_native_cuda: bool = True) -> bool:
    """Decide native vs reference for one call.

    ``prefer_native_cpu`` / ``prefer_native_cuda`` are the op's measured verdicts for CPU and CUDA
    tensors in ``auto`` mode (see the op's docstring and benchmarks/results/); an explicit
    ``backend="native"`` ignores them.
    """
    mode = _BACKEND if backend is None else _parse_backend(backend, "backend")
    if mode == "reference":
        return False
    available = native_available(device)
    if mode == "native":
        if not available:
            why = IMPORT_ERROR or (
                "the module was built without CUDA kernels" if device.type == "cuda" else ""
            )
            raise RuntimeError(
                f"backend='native' requested for a tensor on {device}, but no native kernel is "
                f"compiled for it ({why or 'unsupported device type'}); run `fastmbrl info`"
            )
        return True
    if not available:
        return False
    return prefer_native_cpu if device.type == "cpu" else prefer_native_cuda


def dtype_code(t: torch.Tensor) -> int:
    return _DTYPE_CODES[t.dtype]


def ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def cuda_stream(device: torch.device) -> int:
    """Raw handle of torch's current stream on ``device`` (correct under CUDA-graph capture)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.current_stream(index).cuda_stream


# Outputs and workspaces handed to native kernels are allocated here. Tests set
# ``POISON_OUTPUTS = True`` (or FASTMBRL_POISON_OUTPUTS=1) so every buffer starts as NaN and an
# element a kernel forgets to write fails parity instead of passing by luck.
POISON_OUTPUTS: bool = os.environ.get("FASTMBRL_POISON_OUTPUTS", "0") == "1"


def empty(shape, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Uninitialised output of ``shape`` on ``like``'s device (NaN-filled when poisoning)."""
    out = torch.empty(shape, dtype=dtype or like.dtype, device=like.device)
    if POISON_OUTPUTS and out.is_floating_point():
        out.fill_(float("nan"))
    return out


def empty_like(t: torch.Tensor) -> torch.Tensor:
    return empty(t.shape, t)


# ---- CUDA launch limits, checked in Python before a launch (the kernels' grids) ----------------
CUDA_MAX_GRID_YZ = 65535  # grid.y and grid.z of a launch
CUDA_MAX_TILED_ROWS = 65535 * 64  # rows of a 64-row tiled GEMM on grid.y: 4,194,240


def check_cuda_limit(op: str, name: str, value: int, limit: int, where: str) -> None:
    """Raise a clear error before a CUDA launch whose grid would exceed a device limit."""
    if value > limit:
        raise ValueError(
            f"{op}: {name} = {value} is above {limit:,}, the most the CUDA kernel supports "
            f"({where}); split the batch or use backend='reference'"
        )


# ---- FASTMBRL_CUDA_SYNC=1: synchronise after every native CUDA op (debugging) ------------------
# Kernel faults on a GPU are reported asynchronously, by whichever later call synchronises. With
# FASTMBRL_CUDA_SYNC=1 every native CUDA op synchronises its device when it returns and raises
# with the op's name. Slow, and not allowed during CUDA-graph capture: for first runs on a GPU.
CUDA_SYNC: bool = os.environ.get("FASTMBRL_CUDA_SYNC", "0") == "1"


def synchronize_after(op: str, device: torch.device | None) -> None:
    """Synchronise ``device`` after ``op`` and raise naming the op if a kernel failed."""
    try:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        elif _C is not None and hasattr(_C, "emu_synchronize"):  # the SIMT emulation (tests)
            _C.emu_synchronize()
    except RuntimeError as exc:
        raise RuntimeError(
            f"fastmbrl.{op}: a CUDA kernel of this op failed (FASTMBRL_CUDA_SYNC=1 synchronised "
            f"right after it): {exc}"
        ) from exc
