"""fastmbrl.ops.value_grad: batched value gradients of SAC's heads, quantile and clipping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastmbrl.agents import SAC, SACConfig
from fastmbrl.ops import clip_norms_at_quantile, sac_value_fn, value_gradients
from fastmbrl.ops.value_grad import quantile_lastdim

O, A = 5, 2


@pytest.fixture(scope="module")
def agent():
    ag = SAC(O, A, -torch.ones(A), torch.ones(A), SACConfig(hidden_size=32), seed=0)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():  # the target critics differ from the critics; biases nonzero
        for net in (ag.critic, ag.critic_target):
            for p in list(net.weights) + list(net.biases):
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return ag


def _per_head_loop(agent, states: torch.Tensor, heads: str) -> torch.Tensor:
    """∇_s Q_k(s, μ_π(s)) with autograd.grad, one head at a time, in float32."""
    flat = states.reshape(-1, O).float()
    with torch.no_grad():
        mean, _ = agent.policy(flat)
        act = torch.tanh(mean) * agent.policy.action_scale + agent.policy.action_bias
    nets = [agent.critic, agent.critic_target] if heads == "all" else [agent.critic_target]
    out = []
    for net in nets:
        for k in range(2):
            x = flat.clone().requires_grad_(True)
            h = torch.cat([x, act], dim=-1)
            for i in range(len(net.weights)):
                h = h @ net.weights[i][k].detach() + net.biases[i][k].detach()
                if i < len(net.weights) - 1:
                    h = torch.relu(h)
            (g,) = torch.autograd.grad(h.sum(), x)
            out.append(g.reshape(states.shape))
    return torch.stack(out)


@pytest.mark.parametrize("heads,K", [("all", 4), ("target", 2)])
@pytest.mark.parametrize("state_shape", [(13, O), (3, 7, O)], ids=["N,O", "E,B,O"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_value_gradients_match_per_head_loop(agent, heads, K, state_shape, dtype, gen):
    states = torch.randn(state_shape, generator=gen, dtype=torch.float64).to(dtype)
    before = states.clone()
    value_fn, k = sac_value_fn(agent, heads)
    assert k == K
    g = value_gradients(value_fn, states, K, clip_quantile=None)
    assert g.shape == (K, *state_shape) and g.dtype == dtype
    assert not g.requires_grad
    want = _per_head_loop(agent, states, heads).to(dtype)
    torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-6)
    assert torch.equal(states, before)  # not modified
    assert not torch.equal(g[0], g[-1])  # the heads really differ


def test_states_requiring_grad_get_none(agent, gen):
    states = torch.randn(4, O, generator=gen).requires_grad_(True)
    value_fn, K = sac_value_fn(agent)
    g = value_gradients(value_fn, states, K)
    assert not g.requires_grad and g.grad_fn is None
    assert states.grad is None


def test_value_gradients_clipping_equals_clip_of_unclipped(agent, gen):
    states = torch.randn(50, O, generator=gen)
    value_fn, K = sac_value_fn(agent)
    raw = value_gradients(value_fn, states, K, clip_quantile=None)
    clipped = value_gradients(value_fn, states, K, clip_quantile=0.9)
    torch.testing.assert_close(clipped, clip_norms_at_quantile(raw, 0.9))
    assert not torch.equal(clipped, raw)


def test_wrong_value_shape_raises(gen):
    states = torch.randn(6, O, generator=gen)
    with pytest.raises(ValueError, match=r"value_fn must return \(3, 6\).* got \(3, 6, 1\)"):
        value_gradients(lambda x: x.sum(-1, keepdim=True), states, 3)
    with pytest.raises(ValueError, match=r"num_heads must be an integer >= 1, got 0"):
        value_gradients(lambda x: x.sum(-1), states, 0)


def test_generic_value_fn_gradient():
    """V_k(s) = (k+1)·Σ s² -> ∇ = 2(k+1)s."""
    states = torch.randn(2, 3, 4, dtype=torch.float64)
    scale = torch.arange(1.0, 4.0, dtype=torch.float64).view(3, 1, 1)
    g = value_gradients(lambda x: (x * x).sum(-1) * scale, states, 3, clip_quantile=None)
    torch.testing.assert_close(g, 2 * scale.unsqueeze(-1) * states.unsqueeze(0))


# ---- quantile_lastdim ------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 1000])
@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.95, 0.999, 1.0])
@pytest.mark.parametrize("ties", [False, True])
def test_quantile_matches_numpy(n, q, ties):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((3, n))
    if ties:
        x = np.round(x * 2) / 2  # many equal values
    got = quantile_lastdim(torch.from_numpy(x), q)
    want = np.quantile(x, q, axis=-1)  # method="linear", numpy's default
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


def test_quantile_float32_and_batch_dims():
    x = torch.randn(2, 3, 17)
    got = quantile_lastdim(x, 0.95)
    assert got.shape == (2, 3) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), np.quantile(x.numpy(), 0.95, axis=-1), rtol=1e-6)


def test_quantile_rejects_bad_q():
    with pytest.raises(ValueError, match="quantile must be in"):
        quantile_lastdim(torch.zeros(3), 1.5)


# ---- clip_norms_at_quantile ------------------------------------------------------------------
def _vagram_iclr_clip(g: np.ndarray, quantile: float) -> np.ndarray:
    """VaGraM's ICLR bound clipping, per head: q = np.quantile(‖g‖ over all rows), and every row
    with ‖g‖ ≥ q rescaled to g·q/‖g‖."""
    out = g.copy()
    for k in range(g.shape[0]):
        norms = np.linalg.norm(g[k], axis=-1)
        q = np.quantile(norms.reshape(-1), quantile)
        scale = np.where(norms >= q, q / norms, 1.0)
        out[k] = g[k] * scale[..., None]
    return out


@pytest.mark.parametrize("shape", [(4, 50, 6), (2, 3, 7, 5), (1, 1, 3), (3, 2, 1)], ids=str)
@pytest.mark.parametrize("quantile", [0.95, 0.5, 0.0, 1.0])
def test_clip_norms(shape, quantile, gen):
    g = torch.randn(shape, generator=gen, dtype=torch.float64)
    g = g * torch.rand(shape[:-1] + (1,), generator=gen, dtype=torch.float64) * 10
    out = clip_norms_at_quantile(g, quantile)
    K = shape[0]
    norms = torch.linalg.vector_norm(g, dim=-1)
    q = torch.from_numpy(np.quantile(norms.reshape(K, -1).numpy(), quantile, axis=-1))
    q = q.view((K,) + (1,) * (norms.dim() - 1)).expand_as(norms)
    above = norms > q
    new_norms = torch.linalg.vector_norm(out, dim=-1)
    torch.testing.assert_close(new_norms[above], q[above], rtol=1e-12, atol=0)
    assert torch.equal(out[~above], g[~above])  # unchanged, bit for bit
    cos = (out * g).sum(-1) / (new_norms * norms)
    torch.testing.assert_close(cos, torch.ones_like(cos))  # direction kept
    np.testing.assert_allclose(out.numpy(), _vagram_iclr_clip(g.numpy(), quantile),
                               rtol=1e-12, atol=1e-14)
    if quantile < 1.0 and shape[1:-1] != (1,):
        assert above.any()


def test_clip_norms_with_zero_rows():
    g = torch.zeros(2, 5, 3)
    g[0, 0] = torch.tensor([3.0, 4.0, 0.0])
    out = clip_norms_at_quantile(g, 0.5)
    assert torch.isfinite(out).all()
    assert torch.equal(out, torch.zeros_like(g))  # q = 0: the one nonzero row goes to norm 0
