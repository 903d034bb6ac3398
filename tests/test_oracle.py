"""The MuJoCo oracle (envs/oracle.py) reproduces ``env.step`` from stored states, and the
tasks it serves (action repeat, cartpole_swingup) behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastmbrl import envs
from fastmbrl.envs.oracle import MujocoOracle

TASKS = ["inverted_pendulum", "cartpole_swingup", "hopper", "walker2d", "halfcheetah"]


def random_transitions(task: str, k: int, n: int, seed: int = 0):
    """``n`` transitions of a random policy (float64 actions, resets included): the state
    before each step, the action and what ``env.step`` returned."""
    env = envs.make_env(task, seed=seed, action_repeat=k)
    oracle = MujocoOracle(task, action_repeat=k, num_threads=2)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    rows = {"state": [], "act": [], "obs": [], "rew": [], "term": []}
    env.reset()
    for _ in range(n):
        a = rng.uniform(low, high).astype(np.float64)
        rows["state"].append(oracle.get_state(env))
        obs, r, term, trunc, _ = env.step(a)
        rows["act"].append(a)
        rows["obs"].append(obs)
        rows["rew"].append(r)
        rows["term"].append(term)
        if term or trunc:
            env.reset()
    return oracle, {k_: np.array(v) for k_, v in rows.items()}


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("task", TASKS)
def test_oracle_step_equals_env_step(task, k):
    """Observations and terminations bitwise; rewards to 1e-12 (the squared actions of the
    control cost are summed in torch's order, not numpy's)."""
    oracle, d = random_transitions(task, k, 2000, seed=k)
    out = oracle.step(torch.as_tensor(d["state"]), torch.as_tensor(d["act"]))
    assert out.next_obs.dtype == torch.float64
    assert torch.equal(out.next_obs, torch.as_tensor(d["obs"]))
    assert torch.equal(out.terminated, torch.as_tensor(d["term"]))
    torch.testing.assert_close(out.reward, torch.as_tensor(d["rew"], dtype=torch.float64),
                               rtol=0, atol=1e-12)
    if task != "halfcheetah":
        assert d["term"].any()  # the check covered terminating transitions


def test_oracle_states_continue_and_rows_are_independent():
    oracle, d = random_transitions("hopper", 1, 64)
    s, a = torch.as_tensor(d["state"]), torch.as_tensor(d["act"])
    full = oracle.step(s, a)
    half = oracle.step(s[::2], a[::2])                # another batch, other thread split
    assert torch.equal(full.next_obs[::2], half.next_obs)
    two = oracle.step(full.next_states, a)             # chained from the returned states
    assert two.next_obs.shape == (64, 11) and torch.isfinite(two.next_obs).all()
    f32 = oracle.step(s, a.float())
    assert f32.next_obs.dtype == torch.float32 and f32.next_states.dtype == torch.float64


def test_get_state_of_wrapped_and_vector_envs():
    import gymnasium as gym

    vec = gym.vector.SyncVectorEnv([lambda i=i: envs.make_env("inverted_pendulum", seed=i)
                                    for i in range(3)],
                                   autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    vec.reset()
    oracle = MujocoOracle("inverted_pendulum", num_threads=1)
    states = oracle.get_states(vec.envs)
    assert states.shape == (3, oracle.state_size)
    a = np.full((3, 1), 0.5)
    out = oracle.step(states, a)
    obs, *_ = vec.step(a)
    assert np.array_equal(out.next_obs.numpy(), obs)


def test_bad_input_is_named():
    oracle = MujocoOracle("inverted_pendulum", num_threads=1)
    with pytest.raises(ValueError, match="states must be"):
        oracle.step(np.zeros((2, 3)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="actions must be"):
        oracle.step(np.zeros((2, oracle.state_size)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="no oracle for task 'cartpole'"):
        MujocoOracle("cartpole")
    with pytest.raises(ValueError, match="not this task's"):
        oracle.get_state(envs.make_env("hopper"))


def test_action_repeat_lengthens_steps_and_the_time_limit():
    env = envs.make_env("hopper", action_repeat=2)
    assert env.unwrapped.frame_skip == 8 and env.spec.max_episode_steps == 500
    assert abs(env.unwrapped.dt - 2 * envs.make_env("hopper").unwrapped.dt) < 1e-15
    with pytest.raises(ValueError, match="needs a MuJoCo task"):
        envs.make_env("cartpole", action_repeat=2)
    with pytest.raises(ValueError, match="action_repeat must be >= 1"):
        envs.make_env("hopper", action_repeat=0)


def test_cartpole_swingup_starts_down_and_ends_off_the_rail():
    from gymnasium.utils.env_checker import check_env

    env = envs.make_env("cartpole_swingup", seed=0)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert obs.shape == (5,) and obs[1] < -0.99            # cos θ ≈ −1: hanging down
    spec = envs.get_task("cartpole_swingup")
    o = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0], [1.5, -1.0, 0.0, 0.0, 0.0]])
    assert spec.term_fn(o).tolist() == [False, True]
    assert spec.rule.done(o).tolist() == [False, True]
    r = spec.reward_fn(o, torch.zeros(2, 1), o)
    assert abs(float(r[0]) - 1.0) < 1e-6 and float(r[1]) == 0.0  # upright, centred, still
    done = False
    for _ in range(2000):                                   # full push: leaves |x| <= 1
        obs, r, done, trunc, _ = env.step(np.array([3.0]))
        if done or trunc:
            break
    assert done and abs(obs[0]) > 1.0
