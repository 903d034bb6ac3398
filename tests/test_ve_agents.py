"""The value-expansion seed's SAC and DDPG (agents/ve_agents.py): one update against a
hand-written float64 step, Polyak targets, the running normaliser, acting, traces, state."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastmbrl.agents.ve_agents import RunningNormalizer, VEAgent, VEAgentConfig

O, A, B = 3, 2, 16
LOW, HIGH = -2 * torch.ones(A), torch.tensor([2.0, 1.0])


def make(kind: str, **kw) -> VEAgent:
    cfg = VEAgentConfig(kind=kind, hidden=[8, 8], gamma=0.9, lr=1e-2, alpha_lr=1e-2, **kw)
    agent = VEAgent(O, A, LOW, HIGH, cfg, generator=torch.Generator().manual_seed(0)).double()
    agent.normalizer.update(torch.randn(50, O, dtype=torch.float64) * 2 + 1)
    return agent


def mlp(x, ws, bs):
    for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
        x = x @ w + b
        if i < len(ws) - 1:
            x = torch.relu(x)
    return x


def hand_losses(p, agent, obs, act, y, noise, kind):
    """The seed's three losses written out with plain tensors ``p`` (name -> tensor)."""
    norm = agent.normalizer
    obs_n = ((obs - norm.mean) / norm.var.sqrt()).clamp(-5, 5)
    cw = [p[f"critic.weights.{i}"] for i in range(3)]
    cb = [p[f"critic.biases.{i}"] for i in range(3)]
    q = torch.stack([mlp(torch.cat([obs_n, act], -1), [w[j] for w in cw], [b[j] for b in cb])[:, 0]
                     for j in range(2)])
    critic = 0.5 * ((q - y) ** 2).mean()
    out = mlp(obs_n, [p[f"actor.weights.{i}"][0] for i in range(3)],
              [p[f"actor.biases.{i}"][0] for i in range(3)])
    loc, raw = out[:, :A], out[:, A:]
    scale, bias = (HIGH - LOW).double() / 2, (HIGH + LOW).double() / 2

    def q_min(a):
        cwd, cbd = [w.detach() for w in cw], [b.detach() for b in cb]
        return torch.stack([mlp(torch.cat([obs_n, a], -1), [w[j] for w in cwd],
                                [b[j] for b in cbd])[:, 0] for j in range(2)]).min(0).values

    if kind == "sac":
        std = F.softplus(raw) + 1e-3
        u = loc + std * noise
        log_p = (-0.5 * noise ** 2 - std.log() - 0.5 * math.log(2 * math.pi)
                 - torch.log(1 - torch.tanh(u) ** 2 + 1e-6)).sum(-1)
        alpha = p["log_alpha"].exp()
        actor = (alpha.detach() * log_p - q_min(bias + scale * torch.tanh(u))).mean()
        temp = (alpha * (-log_p.detach() + 0.5 * A)).mean()
    else:
        actor = -q_min(bias + scale * torch.tanh(loc)).mean()
        temp = torch.zeros((), dtype=torch.float64)
    return critic, actor, temp


def adam_first_step(p, g, lr, eps=1e-8):
    return p - lr * g / (g.abs() + eps)  # m̂ = g, v̂ = g² after one step


@pytest.mark.parametrize("kind", ["sac", "ddpg"])
def test_one_update_matches_a_hand_written_float64_step(kind):
    agent = make(kind)
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(B, O, generator=gen, dtype=torch.float64)
    act = (torch.rand(B, A, generator=gen, dtype=torch.float64) * 2 - 1) * HIGH.double()
    y = torch.randn(B, generator=gen, dtype=torch.float64)
    before = {k: v.detach().clone().requires_grad_(True)
              for k, v in agent.named_parameters()}
    target_before = {k: v.clone() for k, v in agent.critic_target.named_parameters()}
    actor_target_before = {k: v.clone() for k, v in agent.actor_target.named_parameters()}
    noise = torch.randn(B, A, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    metrics = agent.update(obs, act, y, generator=torch.Generator().manual_seed(7))

    critic, actor, temp = hand_losses(before, agent, obs, act, y, noise, kind)
    torch.testing.assert_close(metrics["critic_loss"], critic.detach())
    torch.testing.assert_close(metrics["actor_loss"], actor.detach())
    grads = dict(zip(before, torch.autograd.grad(critic + actor + temp, list(before.values()),
                                                 allow_unused=True), strict=True))
    for name, p in agent.named_parameters():
        if "target" in name:
            continue  # Polyak, below
        g = grads[name]
        if g is None or (kind == "ddpg" and name == "log_alpha"):
            torch.testing.assert_close(p.detach(), before[name].detach())  # untouched
            continue
        lr = agent.cfg.alpha_lr if name == "log_alpha" else agent.cfg.lr
        torch.testing.assert_close(p.detach(), adam_first_step(before[name].detach(), g, lr),
                                   rtol=1e-9, atol=1e-12, msg=name)
    # Polyak: Q̄ ← (1−τ)Q̄ + τQ; the target policy with τ_π (SAC 1: the new policy)
    for name, tp in agent.critic_target.named_parameters():
        new = dict(agent.critic.named_parameters())[name].detach()
        torch.testing.assert_close(tp, 0.995 * target_before[name] + 0.005 * new)
    tau_pi = 1.0 if kind == "sac" else 0.005
    for name, tp in agent.actor_target.named_parameters():
        new = dict(agent.actor.named_parameters())[name].detach()
        torch.testing.assert_close(tp, (1 - tau_pi) * actor_target_before[name] + tau_pi * new)


def test_normalizer_matches_numpy():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(3, 2, size=(n, 4)) for n in (1, 7, 30, 2)]
    norm = RunningNormalizer(4, clip=5.0)
    for c in chunks:
        norm.update(torch.as_tensor(c))
    allx = np.concatenate(chunks)
    np.testing.assert_allclose(norm.mean.numpy(), allx.mean(0), rtol=1e-12)
    m2 = ((allx - allx.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(norm.var.numpy(), np.clip(m2 / (len(allx) + 1), 1e-6, 1e6),
                               rtol=1e-12)
    x = torch.tensor([[1e3, 3.0, -1e3, 3.0]], dtype=torch.float64)
    out = norm(x)
    assert out[0, 0] == 5.0 and out[0, 2] == -5.0


@pytest.mark.parametrize("kind", ["sac", "ddpg"])
def test_act_is_in_bounds_and_log_probs_agree(kind):
    agent = make(kind)
    obs = torch.randn(400, O, dtype=torch.float64)
    a, log_mu, u = agent.act(obs, generator=torch.Generator().manual_seed(3))
    assert a.shape == (400, A) and log_mu.shape == (400,) and u.shape == (400, A)
    assert (a >= LOW.double()).all() and (a <= HIGH.double()).all()
    torch.testing.assert_close(a, (HIGH + LOW).double() / 2 + (HIGH - LOW).double() / 2
                               * torch.tanh(u))
    if kind == "sac":  # the behaviour is the policy: log π of the stored u is log μ
        torch.testing.assert_close(agent.log_prob_u(obs, u, target=False), log_mu)
    else:  # DDPG explores with σ = 0.1 around loc
        loc, _ = agent._dist(obs, target=False)
        assert abs(float((u - loc.detach()).std()) - 0.1) < 0.01
        torch.testing.assert_close(agent.log_prob_u(obs, u, target=False), log_mu)
        mean_a, _ = agent.sample(obs)
        torch.testing.assert_close(agent.act(obs, deterministic=True)[0], mean_a)


def test_ddpg_original_trace_reproduces_the_seed_scales():
    agent = make("ddpg", ddpg_original_trace=True)
    obs = torch.randn(64, O, dtype=torch.float64)
    _, log_mu, u = agent.act(obs, generator=torch.Generator().manual_seed(4))
    loc, std = agent._dist(obs, target=True)
    s_mu = F.softplus(torch.tensor(0.1)).item() + 1e-3            # ≈ 0.745
    expect_mu = (-0.5 * ((u - agent._dist(obs, False)[0]) / s_mu) ** 2 - math.log(s_mu)
                 - 0.5 * math.log(2 * math.pi) - torch.log(1 - torch.tanh(u) ** 2 + 1e-6)).sum(-1)
    torch.testing.assert_close(log_mu, expect_mu)
    expect_pi = (-0.5 * ((u - loc) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)
                 - torch.log(1 - torch.tanh(u) ** 2 + 1e-6)).sum(-1)
    torch.testing.assert_close(agent.log_prob_u(obs, u, target=True), expect_pi)


def test_value_is_min_target_q_minus_alpha_log_pi():
    agent = make("sac")
    obs = torch.randn(32, O, dtype=torch.float64)
    noise = torch.randn(32, A, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    v = agent.value(obs, generator=torch.Generator().manual_seed(5))
    a, log_p = agent.sample(obs, target=True, noise=noise)
    expect = agent.q(obs, a, target=True).min(0).values - agent.alpha * log_p
    torch.testing.assert_close(v, expect.detach())


@pytest.mark.parametrize("kind", ["sac", "ddpg"])
def test_state_dict_round_trip_continues_identically(kind):
    a, b = make(kind), make(kind)
    obs = torch.randn(B, O, dtype=torch.float64)
    act = torch.rand(B, A, dtype=torch.float64)
    y = torch.randn(B, dtype=torch.float64)
    a.update(obs, act, y, generator=torch.Generator().manual_seed(0))
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as through a checkpoint file
    ma = a.update(obs, act, y, generator=torch.Generator().manual_seed(9))
    mb = b.update(obs, act, y, generator=torch.Generator().manual_seed(9))
    for k in ma:
        torch.testing.assert_close(ma[k], mb[k])
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), n


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="kind='td3'"):
        VEAgentConfig(kind="td3").validate()
    with pytest.raises(ValueError, match="tau_pi=2"):
        VEAgentConfig(tau_pi=2).validate()
