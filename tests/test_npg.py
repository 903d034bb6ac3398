"""NPG agent pieces (CG, Fisher-vector product, step KL, GAE, baseline), the mjrl residual
model and the batched model rollout of model-based NPG."""

from __future__ import annotations

import math

import pytest
import torch

from fastmbrl.agents.npg import (
    GaussianMLPPolicy,
    MLPBaseline,
    NPGConfig,
    cg_solve,
    compute_gae,
    fisher_vector_product,
    mean_kl,
    mlp_mean,
    npg_step,
)
from fastmbrl.algorithms.mbnpg import model_rollout
from fastmbrl.envs import mjrl_fns
from fastmbrl.models.residual import ResidualEnsemble


@pytest.mark.parametrize("x0", ["g", "zero"])
def test_cg_solves_random_spd_system(x0):
    g = torch.Generator().manual_seed(0)
    n = 30
    Q = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = Q @ Q.T + 0.5 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    x = cg_solve(lambda v: A @ v, b, x0=b.clone() if x0 == "g" else None, iters=200,
                 residual_tol=1e-20)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-8, atol=1e-8)
    # a single iteration from 0 is the steepest-descent step along b
    x1 = cg_solve(lambda v: A @ v, b, iters=1)
    torch.testing.assert_close(x1, (b @ b) / (b @ A @ b) * b)


def _tiny_policy(seed=0):
    pol = GaussianMLPPolicy(3, 2, (5, 4), init_log_std=-0.3, min_log_std=-2.0, seed=seed)
    with torch.no_grad():  # a non-trivial last layer (mjrl's ×1e-2 init makes J tiny)
        pol.params[-2].mul_(50.0)
    return pol.double()


def test_fisher_vector_product_equals_explicit_kl_hessian_float64():
    pol = _tiny_policy()
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(17, 3, generator=g, dtype=torch.float64)
    params = [p.detach() for p in pol.params]
    log_std = pol.log_std.detach()
    theta0 = pol.flat_params().detach()
    sizes = [log_std.numel()] + [p.numel() for p in params]
    mu_old = mlp_mean(obs, params, pol.in_shift, pol.in_scale)

    def kl_of(theta):
        parts = torch.split(theta, sizes)
        ps = [q.view_as(p) for q, p in zip(parts[1:], params, strict=True)]
        return mean_kl(mu_old, log_std, mlp_mean(obs, ps, pol.in_shift, pol.in_scale), parts[0])

    F = torch.autograd.functional.hessian(kl_of, theta0)  # explicit [n, n]
    damping = 1e-3
    fvp = fisher_vector_product(obs, params, log_std, pol.in_shift.double(),
                                pol.in_scale.double(), damping)
    for _ in range(3):
        v = torch.randn(theta0.numel(), generator=g, dtype=torch.float64)
        torch.testing.assert_close(fvp(v), F @ v + damping * v, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_npg_step_kl_is_close_to_half_the_step_size(dtype):
    g = torch.Generator().manual_seed(2)
    pol = GaussianMLPPolicy(4, 2, (16, 16), init_log_std=-0.5, min_log_std=-2.5, seed=3)
    obs = torch.randn(3000, 4, generator=g)
    act = pol.act(obs, generator=g)
    adv = torch.randn(3000, generator=g) + act[:, 0]  # favours larger first actions
    before = pol.flat_params().detach().clone()
    delta = 0.01
    stats = npg_step(pol, obs, act, adv, NPGConfig(normalized_step_size=delta, dtype=dtype))
    assert not torch.equal(before, pol.flat_params().detach())
    assert stats["kl"] == pytest.approx(delta / 2, rel=0.15)
    assert stats["quad_kl"] == pytest.approx(delta / 2, rel=1e-3)
    assert stats["surr_improvement"] > 0


def test_log_std_is_clamped_after_a_step():
    pol = GaussianMLPPolicy(2, 1, (8,), init_log_std=-1.0, min_log_std=-1.0, seed=0)
    pol.set_flat_params(pol.flat_params().detach() - 5.0)
    assert pol.log_std.item() == -1.0
    pol.set_flat_params(pol.flat_params().detach() + 10.0)
    assert pol.log_std.item() == 1.0


def _gae_by_hand(r, b, terminated, gamma, lam):
    T = len(r)
    b_next = [b[t + 1] if t + 1 < T else (0.0 if terminated else b[T - 1]) for t in range(T)]
    delta = [r[t] + gamma * b_next[t] - b[t] for t in range(T)]
    adv = [sum((gamma * lam) ** (k - t) * delta[k] for k in range(t, T)) for t in range(T)]
    ret = [sum(gamma ** (k - t) * r[k] for k in range(t, T)) for t in range(T)]
    return adv, ret


def test_gae_matches_hand_computation_with_and_without_termination():
    gamma, lam = 0.9, 0.8
    r1, b1 = [1.0, 2.0, -0.5, 3.0], [0.3, -0.2, 0.7, 1.1]
    r2, b2 = [0.5, -1.0, 2.0, 0, 0, 0], [1.0, 2.0, 0.25, 9, 9, 9]  # length 3, padded
    rewards = torch.tensor([r1 + [0, 0], r2, r1 + [0, 0]], dtype=torch.float64)
    values = torch.tensor([b1 + [5, 5], b2, b1 + [5, 5]], dtype=torch.float64)
    lengths = torch.tensor([4, 3, 4])
    terminated = torch.tensor([True, False, False])
    adv, ret = compute_gae(rewards, values, lengths, terminated, gamma, lam)
    for p, (r, b, term) in enumerate([(r1, b1, True), (r2[:3], b2[:3], False),
                                      (r1, b1, False)]):
        a_ref, ret_ref = _gae_by_hand(r, b, term, gamma, lam)
        L = len(r)
        torch.testing.assert_close(adv[p, :L], torch.tensor(a_ref, dtype=torch.float64))
        torch.testing.assert_close(ret[p, :L], torch.tensor(ret_ref, dtype=torch.float64))
        assert torch.all(adv[p, L:] == 0) and torch.all(ret[p, L:] == 0)
    assert adv[0, 3] != adv[2, 3]  # the bootstrap rule matters


def test_baseline_fit_reduces_error_and_uses_time_features():
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(20, 50, 3, generator=g)
    t = torch.arange(50).float()
    returns = (50 - t).expand(20, 50) / 10 + obs[..., 0]
    valid = torch.ones(20, 50, dtype=torch.bool)
    base = MLPBaseline(3, seed=0)
    feats = base.features(obs)
    assert feats.shape == (20, 50, 7)
    torch.testing.assert_close(feats[0, 10, 3:], torch.tensor([0.01, 1e-4, 1e-6, 1e-8]))
    err0 = (base.predict(obs) - returns).square().mean()
    for _ in range(30):
        base.fit(obs, returns, valid, g)
    assert (base.predict(obs) - returns).square().mean() < 0.2 * err0


def test_residual_model_prediction_formula_mask_and_fit():
    g = torch.Generator().manual_seed(0)
    N, O, A = 600, 3, 2
    s, a = torch.randn(N, O, generator=g), torch.randn(N, A, generator=g)
    sp = s + 0.1 * torch.tanh(a.sum(-1, keepdim=True)) * torch.tensor([1.0, -2.0, 0.0])
    model = ResidualEnsemble(O, A, ensemble_size=3, hidden_sizes=(32, 32), seed=0)
    model.set_statistics(s, a, sp)
    assert model.mask.tolist() == [1.0, 1.0, 0.0]  # the constant dimension is masked
    torch.testing.assert_close(model.s_scale, (s - s.mean(0)).abs().mean(0))
    y = model.forward_normalized(s, a)
    expect = s + model.mask * ((model.out_scale + 1e-8) * y + model.out_shift)
    torch.testing.assert_close(model.predict(s, a), expect)
    before = model.mse(s, a, sp).mean()
    model.fit(s, a, sp, epochs=30, max_steps=10_000, batch_size=50, generator=g)
    assert model.mse(s, a, sp).mean() < 0.3 * before
    assert torch.all(model.predict(s, a)[..., 2] == s[:, 2])


def test_learned_reward_fits():
    g = torch.Generator().manual_seed(0)
    N, O, A = 400, 3, 1
    s, a = torch.randn(N, O, generator=g), torch.randn(N, A, generator=g)
    sp = s + 0.1 * a
    r = s[:, 0] - a[:, 0] ** 2
    model = ResidualEnsemble(O, A, ensemble_size=2, hidden_sizes=(16,), learn_reward=True,
                             seed=0)
    model.fit(s, a, sp, epochs=5, max_steps=10_000, batch_size=50, generator=g)
    err0 = (model.predict_reward(s, a, model.predict(s, a)) - r).square().mean()
    model.fit_reward(s, a, sp, r, epochs=40, max_steps=10_000, batch_size=50, generator=g)
    err1 = (model.predict_reward(s, a, model.predict(s, a)) - r).square().mean()
    assert err1 < 0.2 * err0


def test_mjrl_hopper_reward_and_termination():
    obs = torch.zeros(3, 11)
    obs[:, 0] = torch.tensor([1.2, 1.2, 0.5])
    obs[:, 1] = torch.tensor([0.0, 0.17, 0.0])
    obs[:, 5] = 2.0
    act = torch.tensor([[2.0, 0.0, 0.0]] * 3)
    r = mjrl_fns.hopper_reward(obs, act)
    torch.testing.assert_close(r, torch.tensor([3.0 - 1e-3, 3.0 - 1e-3, 2.0 - 1e-3]))
    # 0.17 passes the env's |angle| < 0.2 but not mjrl's stricter 0.15
    assert mjrl_fns.hopper_termination(obs).tolist() == [False, True, True]


def _rollout_setup(E=3, N=4, O=2, A=1):
    model = ResidualEnsemble(O, A, ensemble_size=E, hidden_sizes=(8,), seed=0)
    g = torch.Generator().manual_seed(0)
    s = torch.randn(50, O, generator=g)
    a = torch.randn(50, A, generator=g)
    model.set_statistics(s, a, s + 0.05 * a)
    policy = GaussianMLPPolicy(O, A, (8,), seed=0)
    return model, policy, torch.randn(N, O, generator=g)


def test_model_rollout_matches_a_step_by_step_loop():
    model, policy, starts = _rollout_setup()
    E, N, H = 3, 4, 7
    noise = torch.randn(H, E, N, 1, generator=torch.Generator().manual_seed(5))
    reward = lambda s, a, sp: sp[..., 0] - a[..., 0] ** 2  # noqa: E731
    batch = model_rollout(model, policy, starts, H, reward, None, 2, None, noise=noise,
                          min_length=1)
    for e in range(E):
        for n in range(N):
            p = e * N + n
            s = starts[n]
            for t in range(H):
                a = policy.mean(s) + noise[t, e, n] * policy.log_std.exp()
                sp = model.predict(s.view(1, -1), a.view(1, -1))[e, 0]
                torch.testing.assert_close(batch.obs[p, t], s)
                torch.testing.assert_close(batch.act[p, t], a.detach())
                torch.testing.assert_close(batch.rew[p, t], 2 * reward(s, a, sp).detach())
                s = sp.detach()
    assert batch.lengths.tolist() == [H] * (E * N) and not batch.terminated.any()


def test_model_rollout_termination_cut_and_short_paths_dropped():
    model, policy, starts = _rollout_setup()
    H = 10
    first = torch.tensor([2, 6, 20, 0])  # per start state n, the first terminal step

    def reward(s, a, sp):
        return torch.zeros(s.shape[:-1])

    calls = {}

    def term(obs):  # obs [P, H, O]; path p = e*N + n
        P = obs.shape[0]
        t = torch.arange(H).expand(P, H)
        calls["P"] = P
        return t >= first.repeat(3).unsqueeze(1)

    batch = model_rollout(model, policy, starts, H, reward, term, 1, None,
                          gen=torch.Generator().manual_seed(0))
    # lengths t+1 = 3 (dropped, < 5), 7, 10 (never terminal), 1 (dropped)
    assert calls["P"] == 12
    assert batch.lengths.tolist() == [7, 10] * 3
    assert batch.terminated.tolist() == [True, False] * 3


@pytest.mark.parametrize("original_bug", [False, True])
def test_disagreement_truncation(original_bug):
    model, policy, starts = _rollout_setup()
    H = 12

    def reward(s, a, sp):
        return torch.ones(s.shape[:-1])

    batch = model_rollout(model, policy, starts, H, reward, None, 1, truncate_lim=1e-12,
                          truncate_reward=-5.0, truncation_terminates=not original_bug,
                          gen=torch.Generator().manual_seed(0))
    # every pair disagrees at t=0 -> cut at max(4, 1) = 4, truncate_reward added to the last
    assert batch.lengths.tolist() == [4] * 12 and batch.truncated.all()
    assert batch.rew[:, 3].tolist() == [-4.0] * 12 and batch.rew[:, :3].eq(1).all()
    assert batch.terminated.tolist() == [not original_bug] * 12
    # a threshold no step exceeds leaves the paths alone
    calm = model_rollout(model, policy, starts, H, reward, None, 1, truncate_lim=math.inf,
                         gen=torch.Generator().manual_seed(0))
    assert calm.lengths.tolist() == [H] * 12 and not calm.truncated.any()
