"""Benchmark cases for fastmbrl.ops.value_gradients: VaGraM's ∇_s V_k(s) for SAC's K=4 value heads
(Q1, Q2, Q̄1, Q̄2 at the policy's mean action; hidden 512 × 2 layers, O=17, A=6).

Implementations (``reference-eager`` is the baseline the harness divides by):
    reference-eager   a per-head Python loop: the policy's mean action once, then 4 separate
                      forward/backward passes, one per critic head (plain torch matmuls)
    batched           ``value_gradients(sac_value_fn(agent))``: all heads in one ensemble MLP
                      call and one backward
Both without clipping, and (``+clip``) with VaGraM's 0.95-quantile clipping of the norms.
"""

from __future__ import annotations

import torch

from fastmbrl.agents import SAC, SACConfig
from fastmbrl.ops import clip_norms_at_quantile, sac_value_fn, value_gradients

O, A, HIDDEN, K = 17, 6, 512, 4
ROWS = [256, 7 * 256, 65536]


def per_head_loop(agent, states: torch.Tensor) -> torch.Tensor:
    """∇_s Q_k(s, μ_π(s)) one head at a time: what a user writes without the batched helper."""
    with torch.no_grad():
        mean, _ = agent.policy(states)
        act = torch.tanh(mean) * agent.policy.action_scale + agent.policy.action_bias
    grads = []
    for net in (agent.critic, agent.critic_target):
        for k in range(net.weights[0].shape[0]):
            x = states.detach().clone().requires_grad_(True)
            h = torch.cat([x, act], dim=-1)
            n_layers = len(net.weights)
            for i in range(n_layers):
                h = torch.addmm(net.biases[i][k].detach(), h, net.weights[i][k].detach())
                if i < n_layers - 1:
                    h = torch.relu(h)
            (g,) = torch.autograd.grad(h.sum(), x)
            grads.append(g)
    return torch.stack(grads)


def cases(device: str, quick: bool = False):
    """Yield (op, shape, {impl: callable}) for the harness."""
    agent = SAC(O, A, -torch.ones(A), torch.ones(A), SACConfig(hidden_size=HIDDEN), device=device,
                seed=0)
    value_fn, k = sac_value_fn(agent, "all")
    assert k == K
    for N in ROWS[:1] if quick else ROWS:
        g = torch.Generator(device=device).manual_seed(0)
        states = torch.randn(N, O, device=device, generator=g)
        impls = {
            "reference-eager": lambda s=states: per_head_loop(agent, s),
            "batched": lambda s=states: value_gradients(value_fn, s, K, clip_quantile=None),
            "loop+clip": lambda s=states: clip_norms_at_quantile(per_head_loop(agent, s), 0.95),
            "batched+clip": lambda s=states: value_gradients(value_fn, s, K, clip_quantile=0.95),
        }
        yield "value_gradients K=4", f"N={N} O={O} A={A} H={HIDDEN}x2", impls
