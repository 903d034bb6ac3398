"""Shared test fixtures: device parametrisation, output poisoning, seeded generators."""

from __future__ import annotations

import pytest
import torch

from fastmbrl import _native


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
