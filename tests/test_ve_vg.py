"""Value-gradient actors (issue 14): gradients through the learned model (``ensemble_mlp``'s
native and reference backward), through MuJoCo (finite-difference Jacobians of the whole
environment step), and the VG actor objective itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastmbrl import _native
from fastmbrl.agents.ve_agents import VEAgent, VEAgentConfig
from fastmbrl.algorithms import value_expansion as ve
from fastmbrl.envs import registry
from fastmbrl.envs.oracle import MujocoOracle
from fastmbrl.models.dynamics import NetworkDynamics
from fastmbrl.models.normalizer import Normalizer


# --------------------------------------------------------------------------- learned model
@pytest.fixture(params=["native", "reference"])
def backend(request):
    if request.param == "native" and not _native.native_available(torch.device("cpu")):
        pytest.skip("native CPU kernels not built")
    before = _native.get_backend()
    _native.set_backend(request.param)
    yield request.param
    _native.set_backend(before)


def small_dynamics(O=3, A=2, E=3, seed=0) -> NetworkDynamics:
    torch.manual_seed(seed)
    dyn = NetworkDynamics(O, A, None, registry.term_fn("inverted_pendulum"), ensemble_size=E,
                          num_layers=2, hid_size=8, generator=torch.Generator().manual_seed(1))
    dyn.model.double()
    dyn.model.normalizer = Normalizer(O + A, dtype=torch.float64)  # float64 end to end
    x = torch.randn(64, O + A, dtype=torch.float64) * 2 + 0.5
    dyn.model.normalizer.fit(x)
    return dyn


def test_rsample_step_gradcheck_through_a_three_step_rollout(backend):
    """float64 gradcheck of (s₀, a₀, a₁, a₂) ↦ the states and rewards of a 3-step rollout,
    members and Gaussian noise fixed per step (the reparameterised sample), through the
    backend's ensemble_mlp backward."""
    O, A, N = 3, 2, 6
    dyn = small_dynamics(O, A)
    gen = torch.Generator().manual_seed(3)
    members = [torch.randint(0, 3, (N,), generator=gen) for _ in range(3)]
    noise = [torch.randn(N, O + 1, generator=gen, dtype=torch.float64) for _ in range(3)]

    def rollout(s0, a0, a1, a2):
        s, outs = s0, []
        for k, a in enumerate((a0, a1, a2)):
            s, r, _ = dyn.rsample_step(s, a, members=members[k], noise=noise[k])
            outs += [s, r]
        return tuple(outs)

    inputs = [torch.randn(N, O, dtype=torch.float64, requires_grad=True)] + [
        torch.randn(N, A, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(rollout, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)
    # the model's parameters get nothing, and are left trainable
    sum(o.sum() for o in rollout(*inputs)).backward()
    assert all(p.grad is None and p.requires_grad for p in dyn.model.parameters())


def test_rsample_step_is_the_models_sampling_rule(backend):
    """Same member and noise: rsample_step = s + μ + σ·ε of GaussianEnsemble.predict."""
    dyn = small_dynamics()
    s, a = torch.randn(9, 3, dtype=torch.float64), torch.randn(9, 2, dtype=torch.float64)
    members = torch.tensor([0, 1, 2] * 3)
    eps = torch.randn(9, 4, dtype=torch.float64)
    nxt, r, done = dyn.rsample_step(s, a, members=members, noise=eps)
    mean, logvar = dyn.model.predict(torch.cat([s, a], -1), indices=members)
    out = mean + (0.5 * logvar).exp() * eps
    torch.testing.assert_close(nxt, s + out[:, :3])
    torch.testing.assert_close(r, out[:, 3])
    assert done.dtype == torch.bool and done.shape == (9,)


def test_native_and_reference_backward_agree_on_a_rollout():
    if not _native.native_available(torch.device("cpu")):
        pytest.skip("native CPU kernels not built")
    dyn = small_dynamics()
    members = torch.tensor([2, 0, 1, 1, 0, 2])
    eps = torch.randn(6, 4, dtype=torch.float64)
    grads = {}
    before = _native.get_backend()
    try:
        for b in ("native", "reference"):
            _native.set_backend(b)
            s = torch.linspace(-1, 1, 18, dtype=torch.float64).view(6, 3).requires_grad_()
            a = torch.linspace(-0.5, 0.5, 12, dtype=torch.float64).view(6, 2).requires_grad_()
            x, r = s, 0.0
            for _ in range(3):
                x, rk, _ = dyn.rsample_step(x, a, members=members, noise=eps)
                r = r + rk
            r.sum().backward()
            grads[b] = (s.grad, a.grad)
    finally:
        _native.set_backend(before)
    for g_n, g_r in zip(grads["native"], grads["reference"], strict=True):
        torch.testing.assert_close(g_n, g_r, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- MuJoCo oracle
def pendulum_states(n: int, seed: int = 0):
    """States of inverted_pendulum near upright, slow: no joint limit or contact is near."""
    oracle = MujocoOracle("inverted_pendulum", num_threads=2)
    env = registry.make_env("inverted_pendulum", seed=seed)
    env.reset(seed=seed)
    base = oracle.get_state(env)
    rng = np.random.default_rng(seed)
    states = np.repeat(base[None], n, 0)
    x = rng.uniform(-0.05, 0.05, (n, oracle.x_size))
    states = oracle.with_positions(states, x)
    actions = rng.uniform(-0.5, 0.5, (n, oracle.nu))
    return oracle, states, actions


def test_oracle_jacobian_agrees_with_a_higher_order_difference():
    """Centred differences at eps = 1e-6 against Richardson's 4th-order combination of
    centred differences at 1e-4 and 2e-4, on the smooth pendulum: agree to 1e-7 of the
    largest entry (measured: 3e-10); one-sided differences to 1e-4."""
    oracle, states, actions = pendulum_states(16)
    nxt, y, term, J = oracle.jacobians(states, actions, eps=1e-6)
    _, _, _, J1 = oracle.jacobians(states, actions, eps=1e-4)
    _, _, _, J2 = oracle.jacobians(states, actions, eps=2e-4)
    J4 = (4 * J1 - J2) / 3
    scale = np.abs(J4).max()
    assert J.shape == (16, oracle.x_size + oracle.obs_dim + 1, oracle.x_size + oracle.nu)
    assert np.abs(J - J4).max() < 1e-7 * scale
    _, _, _, J_one = oracle.jacobians(states, actions, eps=1e-6, centered=False)
    assert np.abs(J_one - J4).max() < 1e-4 * scale
    # the centre rows are the plain step
    step = oracle.step(states, actions)
    np.testing.assert_array_equal(y[:, oracle.x_size:-1], step.next_obs.numpy())
    np.testing.assert_array_equal(y[:, -1], step.reward.numpy())
    np.testing.assert_array_equal(nxt, step.next_states.numpy())
    # the action enters the velocities (it is a force), and the reward is smooth
    assert np.abs(J[:, oracle.nq:oracle.x_size, oracle.x_size:]).min() > 0


def test_oracle_step_function_gradcheck_over_two_chained_steps():
    oracle, states, actions = pendulum_states(3, seed=1)
    s0 = torch.from_numpy(states)

    def two_steps(x0, a0, a1):
        x1, o1, r0, _, s1 = oracle.differentiable_step(s0, x0, a0)
        x2, o2, r1, _, _ = oracle.differentiable_step(s1, x1, a1)
        return x2, o2, r0 + r1, o1

    x0 = oracle.positions(s0).clone().requires_grad_()
    a0 = torch.from_numpy(actions).clone().requires_grad_()
    a1 = torch.from_numpy(actions[::-1].copy()).requires_grad_()
    assert torch.autograd.gradcheck(two_steps, (x0, a0, a1), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_oracle_jacobian_clip_bounds_every_entry():
    oracle, states, actions = pendulum_states(4, seed=2)
    s = torch.from_numpy(states)
    a = torch.from_numpy(actions).float().requires_grad_()
    _, _, r, _, _ = oracle.differentiable_step(s, oracle.positions(s), a, jac_clip=1e-3)
    r.sum().backward()
    _, _, _, J = oracle.jacobians(states, actions.astype(np.float32).astype(np.float64))
    expect = np.clip(J[:, -1, oracle.x_size:], -1e-3, 1e-3)
    np.testing.assert_allclose(a.grad.numpy(), expect, rtol=1e-5, atol=1e-9)
    assert a.grad.dtype == torch.float32


def test_hopper_jacobians_run_and_are_finite_at_contacts():
    """Hopper (RK4, contacts): mjd_transitionFD refuses it; the whole-step differences run.
    Near contacts the entries are large and noisy (docs: expose oracle_jac_clip)."""
    oracle = MujocoOracle("hopper", num_threads=2)
    env = registry.make_env("hopper", seed=0)
    env.reset(seed=0)
    for _ in range(20):
        env.step(env.action_space.sample())
    states = np.stack([oracle.get_state(env)] * 2)
    _, y, _, J = oracle.jacobians(states, np.zeros((2, oracle.nu)))
    assert J.shape == (2, 12 + 11 + 1, 12 + 3) and np.isfinite(J).all()


# --------------------------------------------------------------------------- the VG objective
class _LinearModel:
    """A known differentiable model: s' = 0.9 s + Σa, r = −|s'|², never terminates."""

    def start(self, states):
        pass

    def rstep(self, obs, act):
        nxt = 0.9 * obs + act.sum(-1, keepdim=True)
        return nxt, -(nxt ** 2).sum(-1), torch.zeros(obs.shape[0], dtype=torch.bool)


def vg_agent(kind: str) -> VEAgent:
    torch.manual_seed(4)
    agent = VEAgent(3, 2, -torch.ones(2), torch.ones(2),
                    VEAgentConfig(kind=kind, hidden=[8, 8], gamma=0.9))
    return agent.double()


@pytest.mark.parametrize("kind", ["sac", "ddpg"])
def test_vg_return_is_the_recursion_with_the_online_critics(kind):
    """H = 2 through a known model, by hand: G₀ = r₀ + γ[V(s₁) − Q(s₁, a₁) + r₁ + γ V(s₂)]
    with the draws in the function's order (ã₁ for V(s₁), a₁, ã₂)."""
    agent, gamma = vg_agent(kind), 0.9
    s0 = torch.randn(5, 3, dtype=torch.float64)
    a0 = torch.rand(5, 2, dtype=torch.float64) - 0.5
    agent.generator = torch.Generator().manual_seed(11)
    G = ve.vg_return(agent, _LinearModel(), s0, a0, None, 2, gamma)
    agent.generator = torch.Generator().manual_seed(11)
    m = _LinearModel()
    s1, r0, _ = m.rstep(s0, a0)
    v1 = agent.soft_value(s1)
    a1, _ = agent.sample(s1)
    s2, r1, _ = m.rstep(s1, a1)
    v2 = agent.soft_value(s2)
    expect = r0 + gamma * (v1 - agent.q_pi(s1, a1) + r1 + gamma * v2)
    torch.testing.assert_close(G, expect)
    # H = 0: the usual objective min_j Q_j(s, a)
    torch.testing.assert_close(ve.vg_return(agent, m, s0, a0, None, 0, gamma),
                               agent.q_pi(s0, a0))


def test_vg_return_gradients_reach_the_action_and_the_actor_not_the_critics():
    agent = vg_agent("sac")
    s0 = torch.randn(4, 3, dtype=torch.float64)

    def G(a0):
        agent.generator = torch.Generator().manual_seed(2)
        return ve.vg_return(agent, _LinearModel(), s0, a0, None, 3, 0.9)

    a0 = (torch.rand(4, 2, dtype=torch.float64) - 0.5).requires_grad_()
    assert torch.autograd.gradcheck(G, (a0,), eps=1e-6, atol=1e-6, rtol=1e-4)
    agent.zero_grad(set_to_none=True)
    G(a0).sum().backward()
    assert all(p.grad is None for p in agent.critic.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.parameters())


def test_vg_actor_loss_is_scaled_by_one_over_h_plus_one():
    agent = vg_agent("sac")
    obs, act = torch.randn(6, 3, dtype=torch.float64), torch.rand(6, 2, dtype=torch.float64)
    y = torch.randn(6, dtype=torch.float64)
    noise = torch.randn(6, 2, dtype=torch.float64)

    def ret(s, a):
        agent.generator = torch.Generator().manual_seed(0)
        return ve.vg_return(agent, _LinearModel(), s, a, None, 3, 0.9)

    _, plain, _, _ = agent.losses(obs, act, y, noise, actor_return=ret)
    _, scaled, _, _ = agent.losses(obs, act, y, noise, actor_return=ret, actor_scale=0.25)
    torch.testing.assert_close(scaled, 0.25 * plain)
    _, default, _, _ = agent.losses(obs, act, y, noise)
    _, h0, _, _ = agent.losses(obs, act, y, noise, actor_return=lambda s, a: ve.vg_return(
        agent, None, s, a, None, 0, 0.9))
    torch.testing.assert_close(h0, default)
