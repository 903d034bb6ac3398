"""SAC agent: shapes, bounds, log-prob, hand-computed losses, update semantics, state, compile,
mbrl-lib's pranz24 SAC itself (when importable), and a tiny learning smoke test."""

from __future__ import annotations

import copy
import io
import math
import os
import types

import numpy as np
import pytest
import torch
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from fastmbrl.agents import SAC, SACConfig

O, A, B = 4, 2, 32
LOW, HIGH = torch.tensor([-1.0, -3.0]), torch.tensor([1.0, 0.5])  # asymmetric bounds


def make(seed=0, **kw) -> SAC:
    kw.setdefault("hidden_size", 16)
    return SAC(O, A, LOW, HIGH, SACConfig(**kw), seed=seed)


def batch(seed=0, n=B):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, O, generator=g)
    act = LOW + (HIGH - LOW) * torch.rand(n, A, generator=g)
    reward = torch.randn(n, generator=g)
    next_obs = torch.randn(n, O, generator=g)
    terminated = torch.rand(n, generator=g) < 0.3
    return obs, act, reward, next_obs, terminated


def gen(seed):
    return torch.Generator().manual_seed(seed)


def params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def assert_same(xs, ys, **tol):
    for x, y in zip(xs, ys, strict=True):
        torch.testing.assert_close(x, y, **tol)


# ---- shapes and bounds ---------------------------------------------------------------------------
def test_shapes():
    agent = make()
    obs = batch()[0]
    assert agent.act(obs).shape == (B, A)
    assert agent.act(obs[0]).shape == (A,)
    assert agent.act(obs[0].numpy(), sample=True).shape == (A,)
    action, log_prob, mean_action = agent.policy.sample(obs, gen(0))
    assert action.shape == mean_action.shape == (B, A) and log_prob.shape == (B, 1)
    assert agent.critic(obs, action).shape == (2, B)
    metrics = agent.update(*batch())
    assert set(metrics) >= {"critic_loss", "actor_loss", "alpha_loss", "alpha", "entropy"}
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in metrics.values())
    assert all(torch.isfinite(v) for v in metrics.values())


def test_actions_within_bounds():
    agent = make()
    obs = 100 * torch.randn(512, O, generator=gen(1))  # saturates the tanh
    for sample in (False, True):
        a = agent.act(obs, sample=sample, generator=gen(2))
        assert (a >= LOW).all() and (a <= HIGH).all()


def test_deterministic_act_is_scaled_tanh_mean():
    agent = make()
    obs = batch()[0]
    mean, _ = agent.policy(obs)
    torch.testing.assert_close(agent.act(obs), LOW + (HIGH - LOW) * (torch.tanh(mean) + 1) / 2)


def test_log_prob_matches_torch_distributions():
    agent = make()
    obs = batch()[0]
    noise = torch.randn(B, A, generator=gen(3))
    action, log_prob, _ = agent.policy.sample(obs, noise=noise)
    mean, log_std = agent.policy(obs)
    scale, bias = (HIGH - LOW) / 2, (HIGH + LOW) / 2
    transforms = [TanhTransform(cache_size=1), AffineTransform(bias, scale, cache_size=1)]
    dist = TransformedDistribution(Normal(mean, log_std.exp()), transforms)
    x = mean + log_std.exp() * noise
    for t in transforms:  # apply the same transforms so log_prob inverts through the caches
        x = t(x)
    torch.testing.assert_close(action, x)
    exact = dist.log_prob(x)
    # ours adds 1e-6 inside log(scale·(1 − y²)), as mbrl-lib: subtract log(1 + 1e-6/(scale(1-y²)))
    jac = scale * (1 - torch.tanh(mean + log_std.exp() * noise).double() ** 2)
    expected = (exact.double() - torch.log1p(1e-6 / jac)).sum(-1, keepdim=True)
    torch.testing.assert_close(log_prob.double(), expected, rtol=1e-5, atol=1e-4)
    assert (exact.sum(-1, keepdim=True) - log_prob).abs().max() > 1e-5  # the ε is visible


def test_log_std_is_clamped():
    agent = make()
    with torch.no_grad():
        agent.policy.biases[-1][0, A:] = 50.0
    _, log_std = agent.policy(batch()[0])
    assert (log_std == 2.0).all()


# ---- hand-computed target and losses -------------------------------------------------------------
def tiny_agent(**kw) -> SAC:
    """O = A = 1, one hidden layer of 2 units, weights set by hand."""
    cfg = SACConfig(hidden_size=2, num_layers=1, gamma=0.9, alpha=0.5, **kw)
    agent = SAC(1, 1, [-2.0], [2.0], cfg, seed=0)
    with torch.no_grad():
        c = agent.critic
        c.weights[0].copy_(torch.tensor([[[0.5, -1.0], [1.0, 0.25]], [[-0.5, 2.0], [0.3, -0.7]]]))
        c.biases[0].copy_(torch.tensor([[0.1, 0.2], [0.0, -0.1]]))
        c.weights[1].copy_(torch.tensor([[[1.5], [-0.5]], [[0.8], [1.2]]]))
        c.biases[1].copy_(torch.tensor([[0.3], [-0.2]]))
        agent.critic_target.load_state_dict(c.state_dict())
        agent.critic_target.weights[1].mul_(0.5)  # a target that differs from the critic
        p = agent.policy
        p.weights[0].copy_(torch.tensor([[[0.7, -0.4]]]))
        p.biases[0].copy_(torch.tensor([[0.1, 0.3]]))
        p.weights[1].copy_(torch.tensor([[[0.6, -0.3], [-0.2, 0.5]]]))
        p.biases[1].copy_(torch.tensor([[0.05, -0.6]]))
    return agent


def q_hand(net, k, s, a):
    w0, b0, w1, b1 = (t.detach().double().tolist() for t in
                      (net.weights[0][k], net.biases[0][k], net.weights[1][k], net.biases[1][k]))
    h = [max(0.0, s * w0[0][j] + a * w0[1][j] + b0[j]) for j in range(2)]
    return sum(h[j] * w1[j][0] for j in range(2)) + b1[0]


def pi_hand(policy, s, eps):
    """(action, log π) of the tanh Gaussian scaled to [-2, 2], by hand."""
    w0, b0, w1, b1 = (t.detach().double().tolist() for t in
                      (policy.weights[0][0], policy.biases[0][0], policy.weights[1][0],
                       policy.biases[1][0]))
    h = [max(0.0, s * w0[0][j] + b0[j]) for j in range(2)]
    mean = h[0] * w1[0][0] + h[1] * w1[1][0] + b1[0]
    log_std = min(2.0, max(-20.0, h[0] * w1[0][1] + h[1] * w1[1][1] + b1[1]))
    u = mean + math.exp(log_std) * eps
    y = math.tanh(u)
    log_n = -0.5 * eps**2 - log_std - 0.5 * math.log(2 * math.pi)
    return 2.0 * y, log_n - math.log(2.0 * (1 - y * y) + 1e-6)


def test_critic_target_and_loss_by_hand():
    agent = tiny_agent()
    s, a, r, s2 = [0.5, -1.0], [1.5, -0.3], [1.0, -2.0], [-0.4, 0.9]
    term, eps2 = [0.0, 1.0], [0.3, -1.1]
    targets, loss = [], 0.0
    for i in range(2):
        a2, logp2 = pi_hand(agent.policy, s2[i], eps2[i])
        q_next = min(q_hand(agent.critic_target, k, s2[i], a2) for k in range(2))
        y = r[i] + 0.9 * (1 - term[i]) * (q_next - 0.5 * logp2)
        targets.append(y)
        loss += sum((q_hand(agent.critic, k, s[i], a[i]) - y) ** 2 for k in range(2)) / 2
    col = lambda v: torch.tensor(v).reshape(2, 1)  # noqa: E731
    got_loss, got_target = agent.critic_loss(col(s), col(a), torch.tensor(r), col(s2),
                                             torch.tensor(term), col(eps2))
    torch.testing.assert_close(got_target, torch.tensor(targets), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_loss, torch.tensor(loss), rtol=1e-5, atol=1e-5)


def test_actor_and_alpha_loss_by_hand():
    agent = tiny_agent(target_entropy=-0.3)
    s, eps = [0.5, -1.0], [0.2, 0.7]
    loss, logps = 0.0, []
    for i in range(2):
        a, logp = pi_hand(agent.policy, s[i], eps[i])
        logps.append(logp)
        loss += (0.5 * logp - min(q_hand(agent.critic, k, s[i], a) for k in range(2))) / 2
    col = lambda v: torch.tensor(v).reshape(2, 1)  # noqa: E731
    got, log_pi = agent.actor_loss(col(s), col(eps))
    torch.testing.assert_close(got, torch.tensor(loss), rtol=1e-5, atol=1e-5)
    alpha_loss = -sum(math.log(0.5) * (lp - 0.3) for lp in logps) / 2
    torch.testing.assert_close(agent.alpha_loss(log_pi), torch.tensor(alpha_loss),
                               rtol=1e-5, atol=1e-5)


# ---- update semantics ----------------------------------------------------------------------------
def test_critic_loss_decreases_on_a_fixed_batch():
    agent = make(lr=1e-3)
    b = batch()
    first = agent.update(*b, generator=gen(0))["critic_loss"]
    for i in range(60):
        last = agent.update(*b, generator=gen(i + 1))["critic_loss"]
    assert last < 0.5 * first


def test_policy_step_lowers_the_actor_loss():
    agent = make(lr=1e-3)
    before = copy.deepcopy(agent)
    obs = batch()[0]
    agent.update(*batch(), generator=gen(0))
    before.critic.load_state_dict(agent.critic.state_dict())  # the critic the actor step used
    noise = torch.randn(B, A, generator=gen(5))
    with torch.no_grad():
        assert agent.actor_loss(obs, noise)[0] < before.actor_loss(obs, noise)[0]


def test_alpha_moves_towards_the_target_entropy():
    for target, direction in ((-10.0, -1), (10.0, 1)):  # entropy above / below the target
        agent = make(target_entropy=target)
        m = agent.update(*batch())
        assert torch.sign(m["alpha"] - 0.2) == direction
        torch.testing.assert_close(agent.alpha, agent.log_alpha.detach().exp())


def test_fixed_alpha_stays():
    agent = make(automatic_entropy_tuning=False, alpha=0.3)
    for i in range(3):
        m = agent.update(*batch(i))
    assert m["alpha"].item() == pytest.approx(0.3) and m["alpha_loss"].item() == 0.0


def test_pranz24_log_alpha_init():
    """mbrl-lib's pranz24 SAC: the first update uses cfg.alpha, log α itself starts at 0."""
    agent = make(pranz24_log_alpha_init=True, alpha=0.2, lr=1e-3)
    assert agent.alpha.item() == pytest.approx(0.2) and agent.log_alpha.item() == 0.0
    agent.update(*batch())
    assert agent.alpha.item() == pytest.approx(1.0, abs=2e-3)


def test_target_moves_by_tau():
    agent = make(tau=0.1)
    target0 = params(agent.critic_target)
    agent.update(*batch())
    expected = [0.9 * t + 0.1 * p for t, p in zip(target0, params(agent.critic), strict=True)]
    assert_same(params(agent.critic_target), expected)


def test_target_update_interval():
    """As mbrl-lib (its counter is read before incrementing): updates 0, k, 2k, … update Q̄."""
    agent = make(target_update_interval=3)
    moved = []
    for i in range(7):
        before = params(agent.critic_target)
        agent.update(*batch(i))
        moved.append(any(not torch.equal(x, y) for x, y in
                         zip(before, params(agent.critic_target), strict=True)))
    assert moved == [True, False, False, True, False, False, True]


def test_actor_loss_leaves_no_critic_grads():
    agent = make()
    loss, _ = agent.actor_loss(batch()[0], torch.randn(B, A, generator=gen(0)))
    loss.backward()
    assert all(p.grad is None for p in agent.critic.parameters())
    assert all(p.grad is not None for p in agent.policy.parameters())
    assert agent.log_alpha.grad is None


def test_critic_loss_grads_reach_the_critic_only():
    agent = make()
    loss, _ = agent.critic_loss(*batch(), torch.randn(B, A, generator=gen(0)))
    loss.backward()
    assert all(p.grad is not None for p in agent.critic.parameters())
    assert all(p.grad is None for p in agent.policy.parameters())
    assert all(p.grad is None for p in agent.critic_target.parameters())


def test_actor_step_leaves_critic_unchanged():
    agent = make()
    b = batch()
    critic_after = {}

    def critic_step():  # record the critic right after its own step
        SAC._critic_step(agent)
        critic_after["p"] = params(agent.critic)

    agent._critic_step_fn = critic_step
    agent.update(*b)
    assert_same(params(agent.critic), critic_after["p"], rtol=0, atol=0)


@pytest.mark.parametrize("clip", [1e-3, 0.05])
def test_grad_clipping(clip):
    agent = make(grad_clip_norm=clip)
    norms = {}

    def record(name, module, step):
        def fn():
            step()
            norms[name] = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in module.parameters()]))
        return fn

    agent._critic_step_fn = record("critic", agent.critic, agent._critic_step)
    agent._policy_step_fn = record("policy", agent.policy, agent._policy_step)
    agent.update(*batch())
    for name in ("critic", "policy"):  # unclipped norms are far above both limits
        assert norms[name].item() == pytest.approx(clip, rel=1e-3)


def test_unclipped_grads_exceed_the_clip():
    """Guards test_grad_clipping: without clipping the gradient norms are larger than 0.05."""
    agent = make()
    loss, _ = agent.critic_loss(*batch(), torch.randn(B, A, generator=gen(0)))
    loss.backward()
    assert torch.nn.utils.get_total_norm([p.grad for p in agent.critic.parameters()]) > 0.05
    loss, _ = agent.actor_loss(batch()[0], torch.randn(B, A, generator=gen(0)))
    loss.backward()
    assert torch.nn.utils.get_total_norm([p.grad for p in agent.policy.parameters()]) > 0.05


def test_seed_reproducible_and_config_validated():
    assert_same(params(make(seed=3)), params(make(seed=3)))
    assert not torch.equal(params(make(seed=3).critic)[0], params(make(seed=4).critic)[0])
    with pytest.raises(ValueError, match="tau"):
        SACConfig(tau=0.0).validate()
    with pytest.raises(ValueError, match="compile_mode"):
        SACConfig(compile_mode="nope").validate()


def test_state_round_trip():
    agent = make(target_update_interval=2)
    for i in range(3):
        agent.update(*batch(i), generator=gen(i))
    buf = io.BytesIO()
    torch.save(agent.full_state_dict(), buf)
    buf.seek(0)
    other = make(seed=99, target_update_interval=2)
    other.load_full_state_dict(torch.load(buf, weights_only=False))
    assert other.num_updates == agent.num_updates
    m1 = agent.update(*batch(7), generator=gen(7))
    m2 = other.update(*batch(7), generator=gen(7))
    assert_same(list(agent.state_dict().values()), list(other.state_dict().values()),
                rtol=0, atol=0)
    assert all(torch.equal(m1[k], m2[k]) for k in m1)


# ---- torch.compile -------------------------------------------------------------------------------
def compile_parity(mode, backend):
    kw = dict(grad_clip_norm=1.0, target_update_interval=2)
    eager = make(**kw)
    comp = make(compile=True, compile_mode=mode, compile_backend=backend, **kw)
    comp.load_full_state_dict(eager.full_state_dict())
    for i in range(3):
        me = eager.update(*batch(i), generator=gen(10 + i))
        mc = comp.update(*batch(i), generator=gen(10 + i))
    assert_same(list(eager.state_dict().values()), list(comp.state_dict().values()),
                rtol=1e-5, atol=1e-5)
    for k in me:
        torch.testing.assert_close(me[k], mc[k], rtol=1e-5, atol=1e-5)


def test_compile_parity_aot_eager():
    compile_parity(SACConfig().compile_mode, "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["losses+optim", "optim", "losses", "update"])
def test_compile_parity_inductor(mode):
    """Inductor compiles for ~30-60 s per mode on a small CPU: the default mode always (slow),
    the other modes with FASTMBRL_COMPILE_TESTS=1."""
    if mode != SACConfig().compile_mode and os.environ.get("FASTMBRL_COMPILE_TESTS") != "1":
        pytest.skip("set FASTMBRL_COMPILE_TESTS=1 to compile every mode with inductor")
    compile_parity(mode, "inductor")


# ---- mbrl-lib's pranz24 SAC itself ---------------------------------------------------------------
def test_matches_mbrl_lib_pranz24():
    """Same weights and noise: parameters, target network and α agree with mbrl-lib 0.2.0's
    SAC.update_parameters(..., reverse_mask=True) over several updates."""
    sac_mod = pytest.importorskip("mbrl.third_party.pytorch_sac_pranz24.sac",
                                  exc_type=ImportError)
    H, lr, interval = 16, 1e-3, 2
    ours = make(hidden_size=H, lr=lr, target_update_interval=interval, target_entropy=-1.0,
                pranz24_log_alpha_init=True)
    args = types.SimpleNamespace(
        gamma=0.99, tau=0.005, alpha=0.2, policy="Gaussian", target_update_interval=interval,
        automatic_entropy_tuning=True, device="cpu", hidden_size=H, lr=lr, target_entropy=-1.0)
    space = types.SimpleNamespace(shape=(A,), low=LOW.numpy(), high=HIGH.numpy())
    theirs = sac_mod.SAC(O, space, args)

    def pairs():
        c, p = ours, theirs
        for k, names in enumerate([("linear1", "linear2", "linear3"),
                                   ("linear4", "linear5", "linear6")]):
            for layer, n in enumerate(names):
                for mine, their in ((c.critic, p.critic), (c.critic_target, p.critic_target)):
                    lin = getattr(their, n)
                    yield lin, mine.weights[layer][k], mine.biases[layer][k]
        pol = ours.policy
        for layer, n in enumerate(["linear1", "linear2"]):
            yield getattr(p.policy, n), pol.weights[layer][0], pol.biases[layer][0]
        w, b = pol.weights[2][0], pol.biases[2][0]
        yield p.policy.mean_linear, w[:, :A], b[:A]
        yield p.policy.log_std_linear, w[:, A:], b[A:]

    with torch.no_grad():
        for lin, w, b in pairs():
            lin.weight.copy_(w.T)
            lin.bias.copy_(b)
    for it in range(5):
        obs, act, rew, nobs, term = batch(it)
        arrays = tuple(x.numpy() for x in (obs, act, nobs, rew, term, term))
        memory = types.SimpleNamespace(
            sample=lambda _n, arrays=arrays: types.SimpleNamespace(astuple=lambda: arrays))
        torch.manual_seed(100 + it)  # both draw ε' for s' first, then ε for s
        theirs.update_parameters(memory, B, it, reverse_mask=True)
        torch.manual_seed(100 + it)
        ours.update(obs, act, rew, nobs, term)
        for lin, w, b in pairs():
            torch.testing.assert_close(lin.weight.detach().T, w.detach(), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(lin.bias.detach(), b.detach(), rtol=1e-5, atol=1e-6)
        assert float(theirs.alpha.detach()) == pytest.approx(ours.alpha.item(), rel=1e-6)


# ---- learning smoke test -------------------------------------------------------------------------
def test_learns_a_continuous_bandit():
    """One state, reward −(a − 0.6)², every step terminal: Q = r, best action 0.6 in [−1, 1]."""
    torch.manual_seed(0)
    agent = SAC(1, 1, [-1.0], [1.0],
                SACConfig(hidden_size=32, lr=3e-3, batch_size=64, target_entropy=-3.0), seed=0)
    obs = torch.zeros(64, 1)
    g = gen(0)
    for _ in range(600):
        act = agent.act(obs, sample=True, generator=g)
        reward = -((act[:, 0] - 0.6) ** 2)
        agent.update(obs, act, reward, obs, torch.ones(64), generator=g)
    assert agent.act(obs[0]).item() == pytest.approx(0.6, abs=0.1)
    assert np.isfinite(agent.alpha.item())
