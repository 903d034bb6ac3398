"""Shared test fixtures: device parametrisation, output poisoning, seeded generators."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import fastmbrl
from fastmbrl import _native

# CI's installed-wheel pass (.ci/run) sets FASTMBRL_TEST_INSTALLED=1: the package under test must
# then be the installed wheel, not the source tree (an editable install imports from src/).
if os.environ.get("FASTMBRL_TEST_INSTALLED") == "1":
    _package = Path(fastmbrl.__file__).resolve().parent
    _source = Path(__file__).resolve().parents[1] / "src" / "python" / "fastmbrl"
    if _package == _source or "site-packages" not in _package.parts:
        raise pytest.UsageError(f"FASTMBRL_TEST_INSTALLED=1 but fastmbrl is imported from "
                                f"{_package}, not from an installed wheel in site-packages")
    if not _native.HAS_NATIVE:
        raise pytest.UsageError(f"FASTMBRL_TEST_INSTALLED=1 but the installed wheel's native "
                                f"module does not load: {_native.IMPORT_ERROR}")


def _cuda_usable() -> bool:
    return _native.HAS_CUDA_KERNELS and torch.cuda.is_available()


CUDA_OK = _cuda_usable()

# Parametrise over these to run a test on every device where native kernels can run.
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not CUDA_OK, reason="no CUDA device or CUDA kernels not compiled"),
        ],
    ),
]

# Tolerances for native vs reference (design.md: float64 tight, float32 ~1e-5 relative).
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    """Every native output starts as NaN, so an unwritten element fails parity."""
    monkeypatch.setattr(_native, "POISON_OUTPUTS", True)
    yield


@pytest.fixture(autouse=True)
def one_thread():
    """Tests use small problems: one torch thread avoids oversubscription slowdowns on shared
    CPUs, and makes CPU results independent of the machine's core count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def gen():
    g = torch.Generator()
    g.manual_seed(1234)
    return g
