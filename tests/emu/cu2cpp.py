"""Build step of the SIMT emulation: turn a CUDA source into host C++ (tests/emu/simt.h).

Two things change: the launch syntax and ``__shared__`` declarations.
``k<T><<<grid, block, shmem, stream>>>(args)`` becomes
``::simt::launch(&k<T>, "k<T>", __FILE__, __LINE__, BOUND, grid, block, shmem, stream)(args)``,
where BOUND is the expression in the kernel's ``__launch_bounds__(...)`` (1024 without one).
``__shared__ T name[A][B];`` becomes a reference to one copy per block,
``static ::simt::SharedSlot simt_slot_name; auto& name = ::simt::shared<T[A][B]>(simt_slot_name,
"name");`` (fresh and NaN-filled for every block, see simt.h). Headers with device code
(``include/fastmbrl/*.cuh``) are converted the same way into a directory searched first.
Line numbers are kept (``#line`` plus the same number of newlines), so compiler messages and the
emulation's error messages point at the original file.

Usage: python cu2cpp.py INPUT.cu OUTPUT.cpp
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_TARGS = r"<(?:[^<>;]|<[^<>;]*>)*>"  # template arguments, one level of nesting
_LAUNCH = re.compile(r"\b([A-Za-z_]\w*(?:::\w+)*)\s*(" + _TARGS + r")?\s*<<<(.*?)>>>\s*\(",
                     re.S)
_SHARED = re.compile(
    r"__shared__\s+([A-Za-z_][\w:<>, ]*?)\s+([A-Za-z_]\w*)\s*((?:\[[^\]]*\])*)\s*;")
_BOUNDS = re.compile(r"__launch_bounds__\s*\(([^()]*)\)\s*([A-Za-z_]\w*)\s*\(")


def convert(source: str, path: str) -> str:
    bounds = {name: expr.split(",")[0].strip() for expr, name in _BOUNDS.findall(source)}
    count = 0

    def launch(m: re.Match) -> str:
        nonlocal count
        count += 1
        name, targs, cfg = m.group(1), m.group(2) or "", m.group(3)
        kernel = name + targs
        label = " ".join(kernel.split())
        bound = bounds.get(name, "1024")
        newlines = "\n" * m.group(0).count("\n")
        cfg_flat = " ".join(cfg.split())
        return (f'::simt::launch(&{kernel}, "{label}", __FILE__, __LINE__, ({bound}), '
                f"{cfg_flat})({newlines}")

    def shared(m: re.Match) -> str:
        typ, name, dims = m.group(1).strip(), m.group(2), m.group(3)
        if typ.startswith("extern"):
            raise SystemExit(f"{path}: extern __shared__ (dynamic shared memory) is not emulated")
        return (f"static ::simt::SharedSlot simt_slot_{name}; auto& {name} = "
                f'::simt::shared<{typ}{dims}>(simt_slot_{name}, "{name}");')

    out = _LAUNCH.sub(launch, source)
    out = _SHARED.sub(shared, out)
    if "<<<" in out:  # (a __shared__ left over fails to compile: see simt.h)
        line = out[:out.index("<<<")].count("\n") + 1
        raise SystemExit(f"{path}:{line}: a kernel launch cu2cpp.py could not convert")
    return f'#line 1 "{path}"\n' + out


def main(argv: list[str]) -> int:
    src, dst = Path(argv[1]), Path(argv[2])
    text = convert(src.read_text(), str(src))
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists() or dst.read_text() != text:  # keep the timestamp: no needless rebuilds
        dst.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
