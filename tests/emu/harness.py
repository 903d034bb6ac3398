"""Build and use the SIMT emulation of the CUDA kernels (tests/emu/simt.h) from Python.

``build()`` configures and builds tests/emu/CMakeLists.txt into ``build/emu`` (``build/emu-asan``
for the ASan+UBSan build) with CMake, incrementally: a second call only rebuilds what changed.
``load()`` imports the emulated module (a variant of fastmbrl._C whose CUDA entry points run
the unchanged kernel sources on the CPU). ``emulated(module)`` routes every op's CUDA kernel
(``fastmbrl.ops._library.CUDA_IMPLS``) to CPU tensors for the duration of a ``with`` block: the
ops' CUDA glue then runs as on a GPU (same workspaces, argument order, stream argument), on the
emulated module. Test-only: nothing here is reachable from fastmbrl's normal code path.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
EMU = ROOT / "tests" / "emu"
PAD = 64  # elements of canary before and after every output buffer
_CANARY32, _CANARY64 = 0x7FA5DEAD, 0x7FF5DEADBEEF5A5A  # signalling-NaN patterns no kernel writes


def build(sanitize: bool = False, targets: tuple[str, ...] = ()) -> Path:
    """Configure (once) and build the emulation; returns the build directory."""
    cmake = shutil.which("cmake")
    if cmake is None:
        raise RuntimeError("the SIMT emulation needs cmake on PATH")
    out = ROOT / "build" / ("emu-asan" if sanitize else "emu")
    if not (out / "CMakeCache.txt").exists():
        args = [cmake, "-S", str(EMU), "-B", str(out), f"-DPython_EXECUTABLE={sys.executable}",
                f"-DSIMT_SANITIZE={'ON' if sanitize else 'OFF'}",
                f"-DSIMT_MODULE={'OFF' if sanitize else 'ON'}"]
        if not sanitize:
            import pybind11

            args.append(f"-Dpybind11_DIR={pybind11.get_cmake_dir()}")
        _run(args)
    cmd = [cmake, "--build", str(out), "-j", str(os.environ.get("FASTMBRL_EMU_JOBS", "2"))]
    for t in targets:
        cmd += ["--target", t]
    _run(cmd)
    return out


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")


def load(build_dir: Path):
    """Import the emulated module (named _C, from its own folder; not fastmbrl._C)."""
    path = next((build_dir / "module").glob("_C*.so"))
    spec = importlib.util.spec_from_file_location("_C", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.SIMT_EMULATION and module.WITH_CUDA
    return module


class Emulation:
    """State of one ``emulated`` block: canary-padded outputs and their check."""

    def __init__(self, module):
        self.module = module
        self.buffers: list[tuple[torch.Tensor, int]] = []

    def empty(self, shape, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or like.dtype
        n = math.prod(shape)
        buf = torch.empty(n + 2 * PAD, dtype=dtype)
        _fill_canary(buf)
        out = buf[PAD:PAD + n]
        if out.is_floating_point():
            out.fill_(float("nan"))
        self.buffers.append((buf, n))
        return out.view(shape)

    def check_canaries(self) -> None:
        """Every output buffer's padding is intact: no kernel wrote past either end."""
        for buf, n in self.buffers:
            ref = torch.empty(2 * PAD, dtype=buf.dtype)
            _fill_canary(ref)
            got = torch.cat([buf[:PAD], buf[PAD + n:]])
            if not torch.equal(_bits(got), _bits(ref)):
                raise AssertionError(f"a kernel wrote outside an output buffer of {n} elements")
        self.buffers.clear()

    def set_order(self, order: int, seed: int = 0) -> None:
        self.module.emu_set_order(order, seed)

    def launches(self) -> list[str]:
        log = self.module.emu_take_launch_log()
        return log.split(",") if log else []


def _bits(t: torch.Tensor) -> torch.Tensor:
    if t.dtype == torch.float64:
        return t.view(torch.int64)
    if t.dtype == torch.float32:
        return t.view(torch.int32)
    return t


def _fill_canary(buf: torch.Tensor) -> None:
    if buf.dtype == torch.float64:
        buf.view(torch.int64).fill_(_CANARY64)
    elif buf.dtype == torch.float32:
        buf.view(torch.int32).fill_(_CANARY32)
    else:
        buf.view(torch.uint8).fill_(0xA5)


def padded(t: torch.Tensor) -> torch.Tensor:
    """``t`` copied into the middle of a NaN-filled buffer: a kernel reading past either end of
    it reads NaN, which reaches the outputs and fails the comparison."""
    buf = torch.full((t.numel() + 2 * PAD,), float("nan"), dtype=t.dtype)
    out = buf[PAD:PAD + t.numel()].view(t.shape)
    out.copy_(t)
    return out.requires_grad_(t.requires_grad)


@contextlib.contextmanager
def emulated(module):
    """Within the block, CPU tensors take every op's CUDA code path, on the emulated module."""
    from fastmbrl import _native
    from fastmbrl.ops import _library

    emu = Emulation(module)
    saved = (_native._C, _native.cuda_stream, _native.empty, _native.POISON_OUTPUTS)
    lib = torch.library.Library(_library.NAMESPACE, "IMPL")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
            for op, fn in _library.CUDA_IMPLS.items():
                lib.impl(op, fn, "CPU")
        _native._C = module
        _native.cuda_stream = lambda device: module.emu_caller_stream()
        _native.empty = emu.empty
        _native.POISON_OUTPUTS = True
        module.emu_set_order(0, 0)
        module.emu_take_launch_log()
        yield emu
    finally:
        _native._C, _native.cuda_stream, _native.empty, _native.POISON_OUTPUTS = saved
        lib._destroy()
        module.emu_set_order(0, 0)
