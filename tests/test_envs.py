"""Environments: registry, termination rules and reward functions against the v5 environments,
MBPO's truncated observations, VaGraM's distractor wrapper."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch

gym = pytest.importorskip("gymnasium")
pytest.importorskip("mujoco")

from fastmbrl.envs import (  # noqa: E402
    TASKS,
    DistractorWrapper,
    get_task,
    make_env,
    reward_fns,
    termination_fns,
    termination_rule,
)
from fastmbrl.ops.termination import TerminationRule  # noqa: E402

STEPS = 2000
ALL_TASKS = sorted(TASKS)
# Tasks whose random-policy rollouts terminate (so both outcomes are exercised).
TERMINATING = {"hopper", "walker2d", "ant", "humanoid", "inverted_pendulum", "cartpole",
               "cartpole_swingup"}


@functools.cache
def rollout(task: str, steps: int = STEPS, distraction_dimensions: int = 0, seed: int = 0):
    """Random-policy transitions, resetting on termination or truncation (cached per task)."""
    env = make_env(task, seed=seed, distraction_dimensions=distraction_dimensions)
    obs, _ = env.reset(seed=seed)
    rows = {k: [] for k in ("obs", "act", "next_obs", "reward", "terminated", "xv", "contact")}
    for _ in range(steps):
        act = env.action_space.sample()
        next_obs, reward, terminated, truncated, info = env.step(act)
        rows["obs"].append(obs)
        rows["act"].append(np.atleast_1d(act))
        rows["next_obs"].append(next_obs)
        rows["reward"].append(reward)
        rows["terminated"].append(terminated)
        rows["xv"].append(info.get("x_velocity", np.nan))
        rows["contact"].append(-info.get("reward_contact", np.nan))
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    out = {k: torch.as_tensor(np.asarray(v)) for k, v in rows.items()}
    # Observations in float64 (MuJoCo's own precision; classic-control obs are float32 exactly).
    for k in ("obs", "next_obs", "reward", "xv", "contact"):
        out[k] = out[k].to(torch.float64)
    return out


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    # MuJoCo writes its warnings (Humanoid's deprecated 'settotalmass') to ./MUJOCO_LOG.TXT.
    monkeypatch.chdir(tmp_path)


# ----------------------------------------------------------------------------- registry
@pytest.mark.parametrize("task", ALL_TASKS)
def test_spec_matches_env(task):
    spec = get_task(task)
    env = make_env(task)
    assert env.observation_space.shape == (spec.obs_dim,)
    if spec.discrete:
        assert env.action_space.n == spec.act_dim
    else:
        assert env.action_space.shape == (spec.act_dim,)
    assert env.spec.max_episode_steps == spec.max_episode_steps
    assert env.spec.id == spec.gym_id
    env.close()


def test_truncated_obs_dims():
    # MBPO's truncated Ant (27) and Humanoid (45): positions without x, y and velocities.
    assert make_env("ant").observation_space.shape == (27,)
    assert make_env("humanoid").observation_space.shape == (45,)
    # The full observations are still reachable through kwargs.
    assert make_env("ant", include_cfrc_ext_in_observation=True).observation_space.shape == (105,)


def test_unknown_task_lists_known_ones():
    with pytest.raises(ValueError, match="unknown task 'hoper'.*known tasks: ant, cartpole"):
        make_env("hoper")
    with pytest.raises(ValueError, match="known tasks"):
        termination_rule("nope")


def test_make_env_seed_is_reproducible():
    a, b = make_env("hopper", seed=3), make_env("hopper", seed=3)
    for _ in range(5):
        act = a.action_space.sample()
        assert np.array_equal(act, b.action_space.sample())
        oa, *_ = a.step(act)
        ob, *_ = b.step(act)
        assert np.array_equal(oa, ob)


def test_termination_rule_shapes():
    for task in ALL_TASKS:
        rule = termination_rule(task)
        assert isinstance(rule, TerminationRule)
        assert len(rule.lower) == TASKS[task].obs_dim
        assert len(termination_rule(task, 4).lower) == TASKS[task].obs_dim + 4
    never = termination_rule("halfcheetah")
    assert not never.check_finite and all(np.isinf(never.lower))


# ------------------------------------------------------------------ termination vs the env
@pytest.mark.parametrize("task", ALL_TASKS)
def test_termination_matches_env(task):
    data = rollout(task)
    terminated = data["terminated"]
    if task in TERMINATING:
        assert terminated.any() and not terminated.all()
    else:
        assert not terminated.any()
    spec = get_task(task)
    assert torch.equal(spec.term_fn(data["next_obs"]), terminated)
    assert torch.equal(spec.rule.done(data["next_obs"]), terminated)
    # Batched over extra leading dims too.
    nxt = data["next_obs"][:200].reshape(10, 20, -1)
    assert torch.equal(spec.term_fn(nxt), terminated[:200].reshape(10, 20))


@pytest.mark.parametrize("task", ALL_TASKS)
def test_termination_non_finite(task):
    obs = rollout(task)["next_obs"][:4].clone()
    obs[0, -1] = float("nan")
    obs[1, 0] = float("inf")
    done_fn, done_rule = get_task(task).term_fn(obs), get_task(task).rule.done(obs)
    assert torch.equal(done_fn, done_rule)
    if task not in ("halfcheetah", "pendulum"):
        assert done_fn[0] and done_fn[1]


def test_termination_boundaries():
    # Strict (hopper, walker2d, humanoid) vs inclusive (ant, inverted_pendulum, cartpole).
    def at(task, index, value):
        obs = torch.zeros(1, TASKS[task].obs_dim, dtype=torch.float64)
        obs[0, 0] = {"hopper": 1.2, "walker2d": 1.2, "humanoid": 1.4, "ant": 0.5}.get(task, 0.0)
        obs[0, index] = value
        return bool(TASKS[task].term_fn(obs)), bool(TASKS[task].rule.done(obs))

    assert at("hopper", 0, 0.7) == (True, True)
    assert at("hopper", 1, 0.2) == (True, True)
    assert at("hopper", 4, 99.0) == (False, False)
    assert at("walker2d", 0, 2.0) == (True, True)
    assert at("humanoid", 0, 1.0) == (True, True)
    assert at("ant", 0, 0.2) == (False, False)
    assert at("ant", 0, 1.0) == (False, False)
    assert at("ant", 0, 1.0 + 1e-9) == (True, True)
    assert at("inverted_pendulum", 1, 0.2) == (False, False)
    assert at("cartpole", 0, 2.4) == (False, False)
    assert at("cartpole", 2, termination_fns.CARTPOLE_THETA_THRESHOLD + 1e-9) == (True, True)


# ---------------------------------------------------------------------- rewards vs the env
@pytest.mark.parametrize("task", sorted(reward_fns.EXACT_REWARD))
def test_exact_rewards(task):
    data = rollout(task)
    r = get_task(task).reward_fn(data["obs"], data["act"], data["next_obs"])
    assert r.shape == data["reward"].shape
    torch.testing.assert_close(r, data["reward"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "task, approx_mae", [("hopper", 0.02), ("walker2d", 0.05), ("ant", 0.2), ("halfcheetah", 0.4)]
)
def test_locomotion_rewards(task, approx_mae):
    data = rollout(task)
    fn = get_task(task).reward_fn
    extra = {"contact_cost": data["contact"]} if task == "ant" else {}
    exact = fn(data["obs"], data["act"], data["next_obs"], x_velocity=data["xv"], **extra)
    # The env sums the float32 action squares in float32: ~1e-7 relative.
    torch.testing.assert_close(exact, data["reward"], rtol=1e-6, atol=1e-6)
    approx = fn(data["obs"], data["act"], data["next_obs"])
    mae = (approx - data["reward"]).abs().mean().item()
    assert mae < approx_mae, mae


def test_humanoid_has_no_reward_fn():
    assert get_task("humanoid").reward_fn is None
    assert not get_task("hopper").reward_exact and get_task("cartpole").reward_exact


# ------------------------------------------------------------------------- distractors
def _check_env(env):
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env, skip_render_check=True)


@pytest.mark.parametrize("pure_noise", [False, True])
def test_distractor_passes_check_env(pure_noise):
    env = make_env("hopper", seed=0, distraction_dimensions=5, pure_noise_distraction=pure_noise)
    assert env.observation_space.shape == (16,)
    assert env.observation_space.dtype == np.float64
    _check_env(env)
    # float32 base observations keep their dtype.
    env = make_env("cartpole", seed=0, distraction_dimensions=3)
    assert env.observation_space.dtype == np.float32 and env.observation_space.shape == (7,)
    _check_env(env)


def _trajectory(env, steps=50, seed=0, action_seed=0, with_resets=False):
    """Observations of a fixed random action sequence; ``with_resets`` also returns a mask of
    the rows that start an episode."""
    rng = np.random.default_rng(action_seed)
    obs, starts = [env.reset(seed=seed)[0]], [True]
    for _ in range(steps):
        act = rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32)
        o, _, term, trunc, _ = env.step(act)
        obs.append(o)
        starts.append(False)
        if term or trunc:
            obs.append(env.reset()[0])
            starts.append(True)
    return (np.stack(obs), np.array(starts)) if with_resets else np.stack(obs)


def test_distractor_reproducible_from_seed():
    a = make_env("hopper", seed=7, distraction_dimensions=4)
    b = make_env("hopper", seed=7, distraction_dimensions=4)
    c = make_env("hopper", seed=8, distraction_dimensions=4)
    for name in ("A", "P", "reset_vector"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
        assert not np.array_equal(getattr(a, name), getattr(c, name))
    assert np.array_equal(_trajectory(a), _trajectory(b))
    # The task part is exactly the unwrapped environment's (its RNG is not touched).
    base = make_env("hopper", seed=7)
    np.testing.assert_array_equal(_trajectory(a)[:, :11], _trajectory(base))


def test_distractor_train_and_test_envs_agree():
    # The original drew A, P, c from numpy's global RNG, so train and test envs differed.
    np.random.seed(0)
    train = make_env("hopper", seed=1, distraction_dimensions=6)
    np.random.seed(123)
    test = make_env("hopper", seed=1, distraction_dimensions=6)
    for name in ("A", "P", "reset_vector"):
        assert np.array_equal(getattr(train, name), getattr(test, name))
    # Same dynamics: from the same distractor state, the next one is the same.
    train.reset(seed=10)
    test.reset(seed=99)
    d = np.random.default_rng(0).normal(size=6)
    train.distractor_state, test.distractor_state = d.copy(), d.copy()
    act = np.zeros(3, dtype=np.float32)
    assert np.array_equal(train.step(act)[0][11:], test.step(act)[0][11:])


def test_distractor_dynamics_formula():
    env = make_env("hopper", seed=2, distraction_dimensions=5)
    traj, starts = _trajectory(env, steps=300, with_resets=True)
    d = torch.as_tensor(traj[:, 11:])
    A, P, c = (torch.as_tensor(x) for x in (env.A, env.P, env.reset_vector))
    assert (P >= 0).all()
    pred = d[:-1] @ A.T
    pred = pred + 0.1 * torch.sin(pred @ P.T)
    pred = torch.where(pred.abs() > 20, c.expand_as(pred), pred)
    # Rows that start an episode come from a fresh d0 ~ N(0, 0.1^2), not from the previous row.
    cont = ~torch.as_tensor(starts[1:])
    assert cont.sum() >= 250
    torch.testing.assert_close(pred[cont], d[1:][cont], rtol=1e-12, atol=1e-12)
    assert (d.abs() <= 20).all()
    # Switching resets happen (with A ~ N(0, 1) the linear part is unstable).
    assert (d == c).any(1).any()


def test_distractor_pure_noise_statistics():
    env = make_env("halfcheetah", seed=0, distraction_dimensions=8, pure_noise_distraction=True)
    traj = _trajectory(env, steps=1500)
    d = traj[:, 17:]
    assert abs(d.mean()) < 0.05
    assert abs(d.std() - 1.0) < 0.05
    lag1 = np.mean([np.corrcoef(d[:-1, i], d[1:, i])[0, 1] for i in range(8)])
    assert abs(lag1) < 0.1


def test_distractor_termination_rule_is_padded():
    data = rollout("hopper", steps=1000, distraction_dimensions=3)
    assert data["next_obs"].shape[1] == 14
    rule = termination_rule("hopper", distraction_dimensions=3)
    assert rule == TASKS["hopper"].rule.padded(14)
    assert torch.equal(rule.done(data["next_obs"]), data["terminated"])
    assert torch.equal(TASKS["hopper"].term_fn(data["next_obs"]), data["terminated"])
    assert data["terminated"].any()


def test_distractor_validation():
    with pytest.raises(ValueError, match="distraction_dimensions"):
        make_env("hopper", pure_noise_distraction=True)
    with pytest.raises(ValueError, match="dimensions"):
        DistractorWrapper(make_env("hopper"), 0)
    env = DistractorWrapper(make_env("hopper"), 2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(3, dtype=np.float32))
    # Unseeded wrapper: parameters come from the first seeded reset.
    env.reset(seed=5)
    assert np.array_equal(env.A, make_env("hopper", seed=5, distraction_dimensions=2).A)
