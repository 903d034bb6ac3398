"""``fastmbrl info``: what was compiled, what devices are seen, and why not."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import torch

from . import __version__, _native


def _driver_reason() -> str:
    """Why the CUDA runtime sees no device, in words a user can act on."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return ("no NVIDIA driver on this machine (libcuda.so.1 not found); the CUDA kernels "
                "need a GPU and its driver")
    if not os.path.exists("/dev/nvidiactl") and not os.path.exists("/dev/nvidia0"):
        return "the NVIDIA driver library is present but no /dev/nvidia* device nodes exist"
    return "the driver loaded but reported no usable device"


def collect() -> dict:
    """Everything ``fastmbrl info`` prints, as a dict (also used by benchmarks)."""
    info: dict = {
        "fastmbrl": __version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "backend": _native.get_backend(),
        "native_module": None,
        "native_import_error": _native.IMPORT_ERROR,
    }
    if _native.HAS_NATIVE:
        info["native_module"] = _native._C.__file__
        info["build"] = _native._C.build_info()
        info["cuda"] = _native._C.cuda_info()
    info["torch_cuda_devices"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return info


def format_report(info: dict) -> str:
    lines = [f"fastmbrl {info['fastmbrl']}"]
    tc = info["torch_cuda"]
    lines.append(f"torch {info['torch']} ({'CUDA ' + tc if tc else 'CPU-only build'})")
    if info["native_module"] is None:
        lines.append(f"native kernels: NOT available ({info['native_import_error']}); every op "
                     "runs its pure-PyTorch reference")
    else:
        b, c = info["build"], info["cuda"]
        lines.append(f"native module: {info['native_module']}")
        lines.append(f"  compiled with {b['compiler']}; op families: {', '.join(b['op_families'])}")
        lines.append("  CPU kernels: compiled")
        if b["cuda_compiled"]:
            archs = ", ".join("sm_" + a for a in b["cuda_architectures"].split(",") if a)
            rt = c["runtime_version"]
            lines.append(f"  CUDA kernels: compiled for {archs} (CUDA runtime {rt // 1000}."
                         f"{(rt % 1000) // 10}, linked statically)")
        else:
            lines.append("  CUDA kernels: not compiled (nvcc not found at build time, or "
                         "FASTMBRL_CUDA=OFF)")
        if c["device_count"] > 0:
            lines.append(f"CUDA devices seen by fastmbrl: {c['device_count']}")
            for i, d in enumerate(c["devices"]):
                gib = d["total_memory"] / 2**30
                lines.append(f"  [{i}] {d['name']} (sm_{d['capability'][0]}{d['capability'][1]}, "
                             f"{d['multiprocessors']} SMs, {gib:.0f} GiB)")
        elif b["cuda_compiled"]:
            lines.append(f"CUDA devices seen by fastmbrl: none — {c['error'] or 'no device'}; "
                         f"{_driver_reason()}")
        else:
            lines.append("CUDA devices seen by fastmbrl: none (built without CUDA kernels)")
    if info["torch_cuda_devices"]:
        lines.append(f"CUDA devices seen by torch: {info['torch_cuda_devices']}")
    elif not tc:
        lines.append("CUDA devices seen by torch: none (this torch is a CPU-only build)")
    else:
        lines.append("CUDA devices seen by torch: none")
    usable = bool(info["native_module"]) and info["cuda"]["device_count"] > 0 and bool(
        info["torch_cuda_devices"])
    lines.append("ops on CUDA tensors: native CUDA kernels" if usable else
                 "ops run on: CPU (native CPU kernels where faster, else the reference)")
    lines.append(f"backend: {info['backend']} (set FASTMBRL_BACKEND=reference|native|auto)")
    return "\n".join(lines)
