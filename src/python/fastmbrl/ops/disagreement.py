"""Ensemble disagreement (MOReL): for each row, the largest distance between two members'
predictions::

    u[n] = max_{0 ≤ i < j < E} ‖ pred[i, n, :] - pred[j, n, :] ‖₂

Shapes: ``pred [E, N, O]`` (E ≥ 2 members, N rows, O output dimensions) -> ``u [N]`` in pred's
dtype. The op has no gradient (it decides where a model rollout is truncated); its output is
detached.

Native op ``torch.ops.fastmbrl.ensemble_disagreement`` (one pass over ``pred``, no ``[E, E, N]``
temporary):

- CPU: one loop per row over the member pairs, squared distances accumulated in the input
  dtype (float32 or float64), row-parallel with OpenMP-free plain loops.
- CUDA: one warp per row; the lanes stride over O, each pair's squared distance is reduced with
  warp shuffles and the maximum kept in registers. Compiled for sm_80/sm_90; verified by the
  SIMT emulation in CI (tests/test_cuda_emulation.py), **not yet run on a GPU** (the GPU test
  skips without one).

``backend="reference"`` (or ``FASTMBRL_BACKEND=reference``) forces the reference, ``"native"``
the kernel. CPU verdict: see ``PREFER_NATIVE_CPU`` and benchmarks/results/*-disagreement*.
"""

from __future__ import annotations

import torch

from .. import _native
from ._library import LIB, impl_cuda
from ._validate import check_nonempty, check_tensor

OP = "ensemble_disagreement"
# Measured CPU verdict (benchmarks/results/*-cpu-1thread-disagreement.txt).
PREFER_NATIVE_CPU = True


def ensemble_disagreement_reference(pred: torch.Tensor) -> torch.Tensor:
    """Pure-PyTorch definition: all pairwise distances ``[E, E, N]``, then the maximum."""
    d = (pred.unsqueeze(0) - pred.unsqueeze(1)).square().sum(-1).sqrt()  # [E, E, N]
    E = pred.shape[0]
    upper = torch.triu(torch.ones(E, E, dtype=torch.bool, device=pred.device), diagonal=1)
    return d[upper].amax(0)


def _validate(pred) -> None:
    check_tensor(OP, "pred", pred, 3, "[E, N, O]")
    E, N, O = pred.shape
    check_nonempty(OP, {"N (rows)": N, "O (output dimension)": O})
    if E < 2:
        raise ValueError(f"{OP}: `pred` needs at least 2 ensemble members [E, N, O], got E={E}")


# ---------------------------------------------------------------------------------------------
# torch.library registration: fastmbrl::ensemble_disagreement(pred [E,N,O]) -> u [N]
# ---------------------------------------------------------------------------------------------
LIB.define("ensemble_disagreement(Tensor pred) -> Tensor")


def _prep(pred):
    pred = pred.contiguous()
    E, N, O = pred.shape
    out = _native.empty((N,), pred)
    args = (_native.dtype_code(pred), _native.ptr(pred), E, N, O, _native.ptr(out))
    return pred, out, args


def _impl_cpu(pred):
    pred, out, args = _prep(pred)  # `pred` kept alive (its contiguous copy) until the call ends
    _native._C.disagreement_cpu(*args)
    return out


def _impl_cuda(pred):
    pred, out, args = _prep(pred)
    _native._C.disagreement_cuda(*args, _native.cuda_stream(pred.device))
    return out


def _fake(pred):
    return pred.new_empty((pred.shape[1],))


if _native.HAS_NATIVE:
    LIB.impl("ensemble_disagreement", _impl_cpu, "CPU")
impl_cuda("ensemble_disagreement", _impl_cuda)
torch.library.register_fake("fastmbrl::ensemble_disagreement", _fake, lib=LIB)


def ensemble_disagreement(pred: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """``u [N]``: the largest pairwise L2 distance between members' predictions
    ``pred [E, N, O]`` (module docstring). ``backend``: None (process default), ``"auto"``,
    ``"reference"`` or ``"native"``."""
    _validate(pred)
    pred = pred.detach()
    if not _native.use_native(pred.device, backend, prefer_native_cpu=PREFER_NATIVE_CPU,
                              prefer_native_cuda=True):
        return ensemble_disagreement_reference(pred)
    return torch.ops.fastmbrl.ensemble_disagreement(pred)
