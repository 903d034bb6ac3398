"""Value-aware losses on a synthetic linear system with a known quadratic value function.

    s ~ N(0, diag(1, 1, 10², 10², 10², 10²)),  s' = A s  (A block-diagonal: the two value-relevant
    dimensions and the four large distractor dimensions evolve separately)
    V(s) = s_0² + s_1²                         (only the first two dimensions matter)

The model is linear with rank 2 (limited capacity): ŝ' = U W s. Maximum likelihood (MSE) spends
its two directions on the large distractors; a value-aware loss spends them on what V sees. The
value-relevant error E[(V(ŝ') − V(s'))²] on fresh data must be far lower for every value-aware
loss than for MLE.
"""

from __future__ import annotations

import pytest
import torch

from fastmbrl.ops import itervaml_loss, vagram_loss, value_aware_loss

LOSSES = ["vagram_bounded", "vagram_unbounded", "itervaml", "ma_l1", "vaml_l2"]


def system(seed: int, n: int = 512, dims: int = 6, relevant: int = 2, big: float = 10.0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1.0] * relevant + [big] * (dims - relevant), dtype=torch.float64)

    def rotation(k):
        q, _ = torch.linalg.qr(torch.randn(k, k, generator=torch.Generator().manual_seed(k),
                                           dtype=torch.float64))
        return q

    A = 0.9 * torch.block_diag(rotation(relevant), rotation(dims - relevant))
    s = torch.randn(n, dims, generator=g, dtype=torch.float64) * scale
    P = torch.diag(torch.tensor([1.0] * relevant + [0.0] * (dims - relevant),
                                dtype=torch.float64))
    return s, s @ A.T, P


def value(x, P):
    return ((x @ P) * x).sum(-1)


def fit(kind: str, seed: int = 0, rank: int = 2, steps: int = 600, lr: float = 1e-2):
    """Train the rank-limited model with ``kind``; return (value error, MSE) on test data."""
    s, s_next, P = system(seed)
    s_test, s_next_test, _ = system(seed + 100)
    dims = s.shape[1]
    g = torch.Generator().manual_seed(seed + 1)
    U = (0.1 * torch.randn(dims, rank, generator=g, dtype=torch.float64)).requires_grad_()
    W = (0.1 * torch.randn(rank, dims, generator=g, dtype=torch.float64)).requires_grad_()
    opt = torch.optim.Adam([U, W], lr=lr)
    grad_v = (2 * s_next @ P).unsqueeze(0)  # ∇V(s') [E=1, N, O], known in closed form
    v_true = value(s_next, P)
    for _ in range(steps):
        pred = s @ W.T @ U.T
        if kind == "mle":
            loss = ((pred - s_next) ** 2).mean()
        elif kind.startswith("vagram"):
            loss = vagram_loss(pred.unsqueeze(0), s_next.unsqueeze(0), grad_v,
                               bounded=kind == "vagram_bounded")
        elif kind == "itervaml":
            loss = itervaml_loss(value(pred, P), v_true)
        else:
            loss = value_aware_loss(v_true, value(pred, P), "l1" if kind == "ma_l1" else "l2",
                                    reduction="mean")
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = s_test @ W.T @ U.T
        value_err = ((value(pred, P) - value(s_next_test, P)) ** 2).mean().item()
        mse = ((pred - s_next_test) ** 2).mean().item()
    return value_err, mse


@pytest.fixture(scope="module")
def mle_result():
    return fit("mle")


@pytest.mark.parametrize("kind", LOSSES)
def test_value_aware_loss_beats_mle_on_value_error(kind, mle_result):
    mle_value_err, mle_mse = mle_result
    value_err, mse = fit(kind)
    assert mle_value_err > 1.0  # MLE really does spend its capacity on the distractors
    assert value_err < 0.05 * mle_value_err, (kind, value_err, mle_value_err)
    # ... and pays for it in plain MSE, which MLE minimises: the trade-off is real
    assert mse >= mle_mse * 0.99
