"""Model-based NPG end to end on tiny configs (CPU, seconds): results, resume after a kill,
config errors, the command line."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
from helpers import compose_main, read_csv, run_killed_at
from hydra import compose, initialize_config_module

from fastmbrl.algorithms import mbnpg
from fastmbrl.config import ConfigError
from fastmbrl.runs.checkpoint import latest_checkpoint, load_checkpoint
from fastmbrl.train import run

TINY = [
    "algorithm=mbnpg",
    "overrides=npg_inverted_pendulum",
    "overrides.num_iter=3",
    "overrides.init_samples=150",
    "overrides.iter_samples=60",
    "overrides.eval_rollouts=1",
    "overrides.hidden_size=[16,16]",
    "overrides.policy_size=[8]",
    "overrides.fit_epochs=2",
    "overrides.horizon=30",
    "overrides.update_paths=4",
    "overrides.inner_steps=2",
    "overrides.cg_iters=5",
    "algorithm.baseline_hidden_sizes=[16]",
    "device=cpu",
    "progress=false",
    "use_tensorboard=false",
]


def tiny_cfg(*extra: str):
    return compose_main(*TINY, *extra)


def test_tiny_run_writes_mjrl_columns(tmp_path):
    best = run(tiny_cfg(), tmp_path)
    rows = read_csv(tmp_path / "results.csv")
    assert len(rows) == 3
    assert {"num_samples", "train_score", "eval_score", "kl", "alpha"} <= set(rows[0])
    samples = [int(r["num_samples"]) for r in rows]
    assert samples[0] >= 150 * 2 and samples == sorted(samples)  # env steps = samples × repeat
    assert all(int(r["env_step"]) == s for r, s in zip(rows, samples, strict=True))
    assert all(math.isfinite(float(r["eval_score"])) for r in rows)
    assert best == max(float(r["eval_score"]) for r in rows)
    assert latest_checkpoint(tmp_path) is not None


def test_disagreement_and_learned_reward_options_run(tmp_path):
    cfg = tiny_cfg("overrides.num_iter=1", "overrides.pessimism_coef=2.0",
                   "overrides.learn_reward=true", "overrides.reward_file=learned",
                   "overrides.start_state=buffer", "overrides.termination=none")
    run(cfg, tmp_path)
    row = read_csv(tmp_path / "results.csv")[0]
    assert float(row["truncate_lim"]) > 0 and math.isfinite(float(row["rew_loss"]))
    assert 0.0 <= float(row["truncated_fraction"]) <= 1.0


def test_killed_run_resumes_and_loses_nothing(tmp_path, monkeypatch):
    full, killed = tmp_path / "full", tmp_path / "killed"
    cfg = tiny_cfg()
    run(cfg, full)
    run_killed_at(cfg, killed, monkeypatch, mbnpg, "evaluate", call=3)
    assert len(read_csv(killed / "results.csv")) == 2
    with pytest.raises(ConfigError, match="resume=true"):
        run(cfg, killed)
    run(tiny_cfg("resume=true"), killed)
    a, b = read_csv(full / "results.csv"), read_csv(killed / "results.csv")
    keys = ["env_step", "num_samples", "train_score", "eval_score", "kl", "dyn_loss"]
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    sa, sb = load_checkpoint(latest_checkpoint(full)), load_checkpoint(latest_checkpoint(killed))
    for k, v in sa["policy"].items():
        assert (v == sb["policy"][k]).all(), k


@pytest.mark.parametrize("override, message", [
    ("overrides.step_size=-1", "overrides.step_size=-1: must be > 0.0"),
    ("overrides.start_state=random", "overrides.start_state='random': allowed values are"),
    ("+overrides.num_itr=3", "unknown key overrides.num_itr=3 (did you mean overrides.num_iter?)"),
    ("overrides.reward_file=mjrl", "overrides.reward_file=mjrl: mjrl reward files exist for"),
    ("overrides.learn_reward=true", "use reward_file=learned exactly when learn_reward=true"),
    ("algorithm.npg_dtype=half", "algorithm.npg_dtype='half': allowed values are"),
    ("overrides.env=pogo", "overrides.env='pogo'"),
])
def test_bad_configuration_is_reported_before_work(override, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(tiny_cfg(override), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_mbpo_overrides_with_mbnpg_is_a_clear_error(tmp_path):
    with initialize_config_module("fastmbrl.conf", version_base="1.3"):
        cfg = compose("main", overrides=["algorithm=mbnpg", "device=cpu"])
    with pytest.raises(ConfigError, match="overrides=npg_hopper_pal"):
        run(cfg, tmp_path / "run")


@pytest.mark.parametrize("name", ["npg_hopper_pal", "npg_hopper_mal", "npg_inverted_pendulum"])
def test_shipped_configs_validate(name):
    with initialize_config_module("fastmbrl.conf", version_base="1.3"):
        cfg = compose("main", overrides=["algorithm=mbnpg", f"overrides={name}"])
    mbnpg.validate(cfg)


def test_cli_train_and_plot_xkey(tmp_path):
    cmd = [sys.executable, "-m", "fastmbrl", "train", *TINY, "overrides.num_iter=2",
           f"root_dir={tmp_path}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    run_dir = tmp_path / "mbnpg" / "default" / "inverted_pendulum" / "seed0"
    assert len(read_csv(run_dir / "results.csv")) == 2
    out = tmp_path / "plot.png"
    res = subprocess.run([sys.executable, "-m", "fastmbrl", "plot", str(run_dir), "--xkey",
                          "num_samples", "--y", "eval_score", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert out.stat().st_size > 0


def test_hopper_with_mjrl_file_masks_policy_and_baseline_inputs(tmp_path):
    """mjrl's reward file brings obs_mask (velocities ×0.02): its policy and baseline see
    masked observations, so fastmbrl's policy divides velocities by 50."""
    with initialize_config_module("fastmbrl.conf", version_base="1.3"):
        cfg = compose("main", overrides=[
            "algorithm=mbnpg", "overrides=npg_hopper_pal", *TINY[2:]])
    assert cfg.overrides.reward_file == "mjrl" and cfg.overrides.env == "hopper"
    run(cfg, tmp_path)
    state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state["policy"]["in_scale"].tolist() == [1.0] * 5 + [50.0] * 6
    assert state["baseline"]["obs_scale"].tolist() == pytest.approx([1.0] * 5 + [0.02] * 6)
