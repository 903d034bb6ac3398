"""Value expansion (algorithms/value_expansion.py) end to end: tiny runs of every expansion with
each model type, MVE at H = 0 equals the one-step target, MVE by hand through a known model,
config errors before any work, a killed run resumes. The pieces have their own tests:
test_ve_targets.py (the recursion), test_ve_agents.py (SAC/DDPG updates), test_oracle.py
(MuJoCo oracle), test_buffers.py (windows), test_ve_cli.py (the seed's command line)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from helpers import compose_main, read_csv, run_killed_at

from fastmbrl.agents.ve_agents import VEAgent, VEAgentConfig
from fastmbrl.algorithms import value_expansion as ve
from fastmbrl.buffers import ReplayBuffer
from fastmbrl.config import ConfigError
from fastmbrl.runs.checkpoint import latest_checkpoint
from fastmbrl.train import run

TINY = [
    "algorithm=value_expansion",
    "overrides=ve_inverted_pendulum",
    "overrides.num_steps=240",
    "overrides.warmup_steps=80",
    "overrides.batch_size=16",
    "overrides.eval_every=80",
    "overrides.eval_episodes=1",
    "algorithm.hidden_sizes=[16,16]",
    "algorithm.model_ensemble_size=2",
    "algorithm.model_num_layers=2",
    "algorithm.model_hid_size=16",
    "algorithm.model_batch_size=32",
    "algorithm.model_pretrain_epochs=2",
    "algorithm.model_train_every=20",
    "device=cpu",
    "progress=false",
    "use_tensorboard=false",
    "log_frequency_agent=50",
]


def tiny_cfg(*extra: str):
    return compose_main(*TINY, *extra)


@pytest.mark.parametrize("setting", [
    ("agent=sac", "expansion=mve", "H=2", "model_type=network"),
    ("agent=sac", "expansion=mve", "H=2", "model_type=analytic"),
    ("agent=ddpg", "expansion=mve", "H=1", "model_type=network"),
    ("agent=sac", "expansion=retrace", "H=2", "model_type=analytic"),
    ("agent=ddpg", "expansion=none", "H=0", "model_type=network"),
    ("agent=sac", "expansion=retrace", "H=3", "model_type=network", "overrides.num_envs=4"),
    ("agent=sac", "expansion=mve", "H=1", "model_type=analytic", "overrides.num_envs=4"),
    ("agent=sac", "expansion=vg", "H=2", "model_type=network"),
    ("agent=sac", "expansion=vg", "H=2", "model_type=analytic"),
    ("agent=ddpg", "expansion=vg", "H=2", "model_type=network"),
    ("agent=ddpg", "expansion=vg", "H=1", "model_type=analytic", "overrides.num_envs=4"),
])
def test_tiny_run_of_each_setting(setting, tmp_path):
    best = run(tiny_cfg(*setting), tmp_path)
    rows = read_csv(tmp_path / "results.csv")
    assert [int(r["env_step"]) for r in rows] == [80, 160, 240]
    assert all(math.isfinite(float(r["episode_return"])) for r in rows)
    assert best == max(float(r["episode_return"]) for r in rows)
    # one update per transition after the warm-up
    assert int(rows[-1]["updates"]) == 240 - 80
    agent_rows = read_csv(tmp_path / "agent.csv")
    assert agent_rows and all(math.isfinite(float(r["critic_loss"])) for r in agent_rows)
    if "model_type=network" in setting and ("expansion=mve" in setting
                                            or "expansion=vg" in setting):
        assert math.isfinite(float(agent_rows[-1]["model_loss"]))
    assert latest_checkpoint(tmp_path) is not None
    assert (tmp_path / "train.log").read_text().count("eval return") == 3


def test_mve_at_horizon_zero_is_the_one_step_target():
    torch.manual_seed(0)
    O, A, B = 4, 1, 64
    agent = VEAgent(O, A, -3 * torch.ones(A), 3 * torch.ones(A),
                    VEAgentConfig(kind="sac", hidden=[16, 16], gamma=0.9))
    buf = ReplayBuffer(B, (O,), (A,), extras={"log_mu": ((), torch.float32),
                                               "u": ((A,), torch.float32)})
    term = torch.rand(B) < 0.3
    buf.add_batch(torch.randn(B, O), torch.rand(B, A), torch.randn(B, O), torch.randn(B),
                  term, torch.zeros(B, dtype=torch.bool), log_mu=torch.zeros(B),
                  u=torch.zeros(B, A))
    b = buf.get_all()
    agent.generator = torch.Generator().manual_seed(5)
    y_mve = ve.mve_target(agent, ve.NetworkModel(None), b, None, 0, 0.9)
    agent.generator = torch.Generator().manual_seed(5)
    y_one = ve.one_step_target(agent, b, 0.9)
    torch.testing.assert_close(y_mve, y_one)
    assert (y_one[term] == b.reward[term]).all()  # no bootstrap after a termination


class _ShiftModel:
    """A known deterministic model: s' = s + 1, r = s[0], never terminates."""

    def start(self, states):
        pass

    def step(self, obs, act):
        return obs + 1.0, obs[:, 0].clone(), torch.zeros(obs.shape[0], dtype=torch.bool)


def test_mve_target_matches_a_hand_rollout_with_a_known_model():
    """With a deterministic policy (DDPG: α = 0, mean actions) and c ≡ 1, G₀ telescopes to
    the H+1-step return r₀ + Σ_h γ^h r_h + γ^{H+1} Q̄(s_{H+1}, μ(s_{H+1}))."""
    torch.manual_seed(1)
    O, A, B, H, gamma = 3, 2, 8, 3, 0.9
    agent = VEAgent(O, A, -torch.ones(A), torch.ones(A),
                    VEAgentConfig(kind="ddpg", hidden=[8], gamma=gamma))
    buf = ReplayBuffer(B, (O,), (A,), extras={"log_mu": ((), torch.float32),
                                               "u": ((A,), torch.float32)})
    buf.add_batch(torch.randn(B, O), torch.rand(B, A), torch.randn(B, O), torch.randn(B),
                  torch.zeros(B, dtype=torch.bool), torch.zeros(B, dtype=torch.bool),
                  log_mu=torch.zeros(B), u=torch.zeros(B, A))
    b = buf.get_all()
    y = ve.mve_target(agent, _ShiftModel(), b, None, H, gamma)
    s = b.next_obs.clone()
    expect = b.reward.clone()
    for h in range(1, H + 1):
        expect += gamma ** h * s[:, 0]
        s = s + 1.0
    with torch.no_grad():
        a, _ = agent.sample(s, target=True)
        expect += gamma ** (H + 1) * agent.q(s, a, target=True).min(0).values
    torch.testing.assert_close(y, expect, rtol=1e-5, atol=1e-5)


def test_killed_run_resumes(tmp_path, monkeypatch):
    full, killed = tmp_path / "full", tmp_path / "killed"
    setting = ("agent=sac", "expansion=mve", "H=1", "model_type=network")
    run(tiny_cfg(*setting), full)
    run_killed_at(tiny_cfg(*setting), killed, monkeypatch, ve, "evaluate", call=3)
    assert len(read_csv(killed / "results.csv")) == 2
    with pytest.raises(ConfigError, match="resume=true"):
        run(tiny_cfg(*setting), killed)
    run(tiny_cfg(*setting, "resume=true"), killed)
    a, b = read_csv(full / "results.csv"), read_csv(killed / "results.csv")
    assert [r["env_step"] for r in b] == ["80", "160", "240"]
    # everything up to the checkpoint (the first two evaluations) is the uninterrupted run's
    for ra, rb in zip(a[:2], b[:2], strict=True):
        assert ra["episode_return"] == rb["episode_return"]
    assert int(b[-1]["updates"]) == 240 - 80
    assert "resumed from" in (killed / "train.log").read_text()


@pytest.mark.parametrize("override, message", [
    ("agent=td3", "agent='td3': allowed values are"),
    ("expansion=svg", "expansion='svg': allowed values are"),
    ("H=-1", "H=-1: must be >= 0"),
    ("model_type=brax", "model_type='brax': allowed values are"),
    ("overrides.gamma=1.5", "overrides.gamma=1.5: must be > 0.0 and <= 1.0"),
    ("overrides.warmup_steps=500", "is not below overrides.num_steps=240"),
    ("+overrides.num_step=3", "unknown key overrides.num_step=3 (did you mean"),
    ("algorithm.tau_q=0", "algorithm.tau_q=0: must be > 0.0"),
])
def test_bad_configuration_is_reported_before_work(override, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(tiny_cfg(override), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_expansion_none_with_a_horizon_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="expansion=none"):
        run(tiny_cfg("expansion=none", "H=3"), tmp_path / "run")


def test_mbpo_overrides_are_a_clear_error(tmp_path):
    cfg = compose_main("algorithm=value_expansion", "device=cpu")
    with pytest.raises(ConfigError, match="overrides=ve_inverted_pendulum"):
        run(cfg, tmp_path / "run")


@pytest.mark.parametrize("name", ["ve_inverted_pendulum", "ve_cartpole", "ve_hopper",
                                  "ve_walker2d", "ve_halfcheetah"])
def test_shipped_configs_validate(name):
    ve.validate(compose_main("algorithm=value_expansion", f"overrides={name}"))
