"""The value-expansion target recursion (agents/targets.py) against direct per-path code."""

from __future__ import annotations

import pytest
import torch

from fastmbrl.agents.targets import masked_discounts, multistep_returns, retrace_traces


def per_path(r, d, v, q, c):
    """The recursion written out for one path, in Python floats."""
    K = len(r)
    G = [0.0] * K
    G[K - 1] = r[K - 1] + d[K - 1] * v[K - 1]
    for k in range(K - 2, -1, -1):
        G[k] = r[k] + d[k] * (v[k] - c[k] * q[k] + c[k] * G[k + 1])
    return G


def random_inputs(B, K, gen, dtype=torch.float64):
    r = torch.randn(B, K, generator=gen, dtype=dtype)
    term = torch.rand(B, K, generator=gen) < 0.15
    disc = masked_discounts(0.97, term, dtype=dtype)
    v = torch.randn(B, K, generator=gen, dtype=dtype)
    q = torch.randn(B, K, generator=gen, dtype=dtype)
    c = torch.rand(B, K, generator=gen, dtype=dtype)
    return r, term, disc, v, q, c


@pytest.mark.parametrize("K", [1, 2, 5, 11])
def test_recursion_matches_per_path_code(K):
    gen = torch.Generator().manual_seed(K)
    r, _, disc, v, q, c = random_inputs(64, K, gen)
    G = multistep_returns(r, disc, v, q, c)
    for b in range(64):
        expect = per_path(*(t[b].tolist() for t in (r, disc, v, q, c)))
        torch.testing.assert_close(G[b], torch.tensor(expect, dtype=torch.float64),
                                   rtol=1e-12, atol=1e-12)


def test_masked_discounts_zero_from_the_termination_on():
    term = torch.tensor([[False, False, True, False], [True, False, False, False],
                         [False] * 4])
    d = masked_discounts(0.5, term, dtype=torch.float64)
    assert d.tolist() == [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.5] * 4]


@pytest.mark.parametrize("K", [1, 3, 6])
def test_full_traces_with_q_equal_v_give_the_k_step_return(K):
    """c ≡ 1 and Q̄(s_{k+1}, a_{k+1}) = V(s_{k+1}): G₀ = Σ_k Γ_k r_k + Γ_{K-1}γ V(s_K) with
    Γ_k = Π_{i<k} γ_i (the closed-form H+1-step return, terminations included)."""
    gen = torch.Generator().manual_seed(10 + K)
    r, term, disc, v, _, _ = random_inputs(256, K, gen)
    G0 = multistep_returns(r, disc, v, v.clone(), torch.ones_like(r))[:, 0]
    prod = torch.ones(256, dtype=torch.float64)
    expect = torch.zeros(256, dtype=torch.float64)
    for k in range(K):
        expect += prod * r[:, k]
        prod = prod * disc[:, k]
    expect += prod * v[:, K - 1]
    torch.testing.assert_close(G0, expect, rtol=1e-12, atol=1e-12)
    # with γ ≡ 1, no termination: the plain sum of rewards plus the last value
    ones = torch.ones_like(r)
    torch.testing.assert_close(multistep_returns(r, ones, v, v, ones)[:, 0],
                               r.sum(1) + v[:, -1])


def test_zero_traces_give_one_step_targets():
    gen = torch.Generator().manual_seed(3)
    r, _, disc, v, q, _ = random_inputs(32, 5, gen)
    G = multistep_returns(r, disc, v, q, torch.zeros_like(r))
    torch.testing.assert_close(G, r + disc * v)


def test_traces_are_clipped_cut_and_constant():
    log_pi = torch.tensor([[0.0, -1.0, 2.0, 0.5]], requires_grad=True)
    log_mu = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    cut = torch.tensor([[False, False, False, True]])
    c = retrace_traces(log_pi, log_mu, lam=0.9, cut=cut)
    torch.testing.assert_close(c, torch.tensor([[0.9, 0.9 * torch.exp(torch.tensor(-1.0)),
                                                 0.9, 0.0]]))
    assert not c.requires_grad
    # gradients reach rewards and values, never the traces
    gen = torch.Generator().manual_seed(4)
    r, _, disc, v, q, _ = random_inputs(8, 4, gen, torch.float32)
    cc = torch.rand(8, 4, requires_grad=True)
    v.requires_grad_(True)
    multistep_returns(r, disc, v, q, cc).sum().backward()
    assert cc.grad is None and v.grad is not None


def test_shape_errors_name_the_arguments():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="must all be \\[B, K\\]"):
        multistep_returns(x, x, x, torch.zeros(2, 4), x)
