"""fastmbrl.ops.ensemble_disagreement: native kernels against the pure-PyTorch reference."""

from __future__ import annotations

import itertools

import pytest
import torch

from conftest import DEVICES, TOL
from fastmbrl import _native
from fastmbrl.ops import ensemble_disagreement, ensemble_disagreement_reference

pytestmark = pytest.mark.skipif(not _native.HAS_NATIVE, reason="native module not built")

SHAPES = [(E, N, O) for E in range(2, 9) for N, O in ((1, 1), (7, 11), (33, 17), (300, 3))]
SHAPES += [(4, 1000, 11), (5, 64, 100), (2, 5, 1)]


def _pred(shape, dtype, device, gen):
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "E{}N{}O{}".format(*s))
def test_native_matches_reference(device, dtype, shape, gen):
    pred = _pred(shape, dtype, device, gen)
    out = ensemble_disagreement(pred, backend="native")  # outputs start NaN (conftest)
    ref = ensemble_disagreement_reference(pred)
    assert out.shape == (shape[1],) and out.dtype == dtype
    torch.testing.assert_close(out, ref, **TOL[dtype])


def test_reference_is_the_max_pairwise_distance(gen):
    pred = _pred((4, 6, 3), torch.float64, "cpu", gen)
    want = torch.stack([
        max((pred[i, n] - pred[j, n]).norm() for i, j in itertools.combinations(range(4), 2))
        for n in range(6)])
    torch.testing.assert_close(ensemble_disagreement_reference(pred), want)
    torch.testing.assert_close(ensemble_disagreement(pred, backend="native"), want)


@pytest.mark.parametrize("device", DEVICES)
def test_identical_members_and_non_contiguous_input(device, gen):
    base = _pred((1, 9, 5), torch.float32, device, gen)
    same = base.expand(3, 9, 5)
    assert torch.all(ensemble_disagreement(same, backend="native") == 0)
    wide = _pred((3, 5, 9), torch.float32, device, gen).transpose(1, 2)  # [3, 9, 5] strided
    torch.testing.assert_close(ensemble_disagreement(wide, backend="native"),
                               ensemble_disagreement_reference(wide))


@pytest.mark.parametrize("device", DEVICES)
def test_nan_in_a_member_propagates_like_the_reference(device, gen):
    pred = _pred((4, 8, 3), torch.float64, device, gen)
    pred[2, 5, 1] = float("nan")
    out = ensemble_disagreement(pred, backend="native")
    ref = ensemble_disagreement_reference(pred)
    assert torch.isnan(out[5]) and torch.isnan(ref[5])
    mask = torch.arange(8, device=out.device) != 5
    torch.testing.assert_close(out[mask], ref[mask])


def test_no_gradient_flows(gen):
    pred = _pred((3, 4, 2), torch.float32, "cpu", gen).requires_grad_(True)
    assert not ensemble_disagreement(pred).requires_grad


@pytest.mark.parametrize("bad, match", [
    (lambda: torch.zeros(1, 4, 3), r"at least 2 ensemble members.*E=1"),
    (lambda: torch.zeros(4, 3), r"`pred` must have 3 dimensions \[E, N, O\]"),
    (lambda: torch.zeros(3, 4, 2, dtype=torch.int64), r"`pred` must be float32 or float64"),
    (lambda: torch.zeros(3, 0, 2), r"N \(rows\) must be at least 1"),
    (lambda: torch.zeros(3, 4, 0), r"O \(output dimension\) must be at least 1"),
    (lambda: [[1.0]], r"`pred` must be a torch.Tensor"),
])
def test_bad_inputs_are_named(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ensemble_disagreement(bad())


def test_opcheck_and_compile(gen):
    pred = _pred((4, 10, 3), torch.float32, "cpu", gen)
    torch.library.opcheck(torch.ops.fastmbrl.ensemble_disagreement.default, (pred,))
    compiled = torch.compile(lambda p: ensemble_disagreement(p, backend="native"),
                             fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(pred), ensemble_disagreement_reference(pred))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or not _native.HAS_CUDA_KERNELS,
                    reason="no CUDA device or CUDA kernels not compiled")
def test_cuda_large_rows_and_graph_capture(gen):
    pred = _pred((7, 100_003, 40), torch.float32, "cuda", gen)  # O > 32: lanes stride
    torch.testing.assert_close(ensemble_disagreement(pred, backend="native"),
                               ensemble_disagreement_reference(pred), **TOL[torch.float32])
    small = _pred((4, 300, 11), torch.float32, "cuda", gen)
    ensemble_disagreement(small, backend="native")
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = ensemble_disagreement(small, backend="native")
    g.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, ensemble_disagreement_reference(small), **TOL[torch.float32])
