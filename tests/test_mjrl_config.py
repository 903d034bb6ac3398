"""`fastmbrl model-based-npg`: mjrl's dict-literal configs parsed safely and mapped onto the
Hydra overrides (the seed's PAL and MAL Hopper files are in tests/data/mjrl)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from fastmbrl.algorithms import mbnpg
from fastmbrl.mjrl_config import parse_config, to_overrides
from fastmbrl.schema import ConfigError

DATA = Path(__file__).parent / "data" / "mjrl"


def _compose(overrides: list[str]):
    hydra_free = [o for o in overrides if not o.startswith("hydra.")]
    with initialize_config_module("fastmbrl.conf", version_base="1.3"):
        return compose("main", overrides=hydra_free)


@pytest.mark.parametrize("name, expect", [
    ("hopper_v3_pal", dict(num_iter=50, init_samples=4000, iter_samples=1000, buffer_size=10000,
                           fit_epochs=25, max_steps=10000, inner_steps=5, update_paths=50,
                           init_log_std=0.0, min_log_std=-2.5)),
    ("hopper_v3_mal", dict(num_iter=25, init_samples=10000, iter_samples=2000,
                           buffer_size=100000, fit_epochs=10, max_steps=100000, inner_steps=20,
                           update_paths=25, init_log_std=-0.5, min_log_std=-2.5)),
])
def test_seed_configs_translate_to_the_shipped_overrides(name, expect):
    job = parse_config((DATA / f"{name}.txt").read_text())
    assert job["npg_hp"] == {"FIM_invert_args": {"iters": 25, "damping": 1e-3}}
    assert job["hidden_size"] == [512, 512]
    overrides = to_overrides(job, output="/tmp/out", device="cpu")
    assert overrides[-1] == "hydra.run.dir=/tmp/out"
    cfg = _compose(overrides)
    mbnpg.validate(cfg)
    o = cfg.overrides
    for key, value in expect.items():
        assert o[key] == value, key
    assert (o.env, o.act_repeat, o.reward_file, o.termination) == ("hopper", 2, "mjrl", "mjrl")
    assert (o.cg_iters, o.cg_damping, o.step_size, o.horizon) == (25, 1e-3, 0.05, 500)
    assert cfg.seed == 123 and cfg.device == "cpu" and cfg.checkpoint_every_epochs == 1
    # the translated config is the shipped overrides file, key for key
    shipped = _compose(["algorithm=mbnpg", f"overrides=npg_{name.replace('_v3', '')}"])
    assert dict(o) == dict(shipped.overrides)


def test_missing_keys_get_mjrl_defaults_and_no_reward_file_learns_the_reward():
    job = parse_config("{'env_name': 'InvertedPendulum-v2', 'seed': 1, 'num_iter': 2}")
    cfg = _compose(to_overrides(job))
    o = cfg.overrides
    assert (o.env, o.act_repeat, o.eval_rollouts, o.cg_iters, o.cg_damping) == (
        "inverted_pendulum", 1, 0, 10, 1e-4)
    assert (o.learn_reward, o.reward_file, o.termination) == (True, "learned", "none")
    assert cfg.device == "cpu" and cfg.checkpoint_every_epochs == 10
    mbnpg.validate(cfg)


@pytest.mark.parametrize("text, message", [
    ("{'env_name': 'Hopper-v3', 'num_itr': 5}", "unknown mjrl config key 'num_itr'"),
    ("{'env_name': __import__('os').system('echo hi')}", "only literals and dict(key=value"),
    ("{'env_name': 'Hopper-v3', 'x': open('f')}", "only literals and dict(key=value"),
    ("{'env_name': 'Hopper-v3',", "not a Python dict literal"),
    ("['env_name']", "must hold one dict literal"),
    ("{'env_name': 'Pogo-v1'}", "env_name='Pogo-v1': no fastmbrl task"),
    ("{'env_name': 'Hopper-v3', 'reward_file': 'my/reward.py'}", "reward_file='my/reward.py'"),
    ("{'env_name': 'Hopper-v3', 'npg_hp': dict(kl_dist=0.1)}", "npg_hp.kl_dist"),
    ("{'env_name': 'Hopper-v3', 'init_policy': 'p.pickle'}", "init_policy='p.pickle'"),
    ("{'seed': 1}", "env_name is missing"),
])
def test_bad_config_files_are_named(text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        to_overrides(parse_config(text))


def test_cli_prints_the_command_runs_it_and_reports_bad_files(tmp_path):
    small = (DATA / "hopper_v3_pal.txt").read_text()
    for key, value in [("'num_iter'      :   50", "'num_iter': 1"),
                       ("'init_samples'  :   4000", "'init_samples': 60"),
                       ("'eval_rollouts' :   5", "'eval_rollouts': 1"),
                       ("'hidden_size'   :   (512, 512)", "'hidden_size': (16,)"),
                       ("'fit_epochs'    :   25", "'fit_epochs': 1"),
                       ("'horizon'       :   500", "'horizon': 20"),
                       ("'update_paths'  :   50", "'update_paths': 3"),
                       ("'inner_steps'   :   5", "'inner_steps': 1"),
                       ("'policy_size'   :   (64, 64)", "'policy_size': (8,)"),
                       ("'iters': 25", "'iters': 3")]:
        assert key in small
        small = small.replace(key, value)
    cfg_file = tmp_path / "small.txt"
    cfg_file.write_text(small)
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "fastmbrl", "model-based-npg", "--output",
                          str(out), "--config", str(cfg_file), "--device", "cpu",
                          "progress=false", "use_tensorboard=false"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("fastmbrl train algorithm=mbnpg overrides=npg_hopper_pal")
    assert (out / "results.csv").exists()
    bad = tmp_path / "bad.txt"
    bad.write_text("{'env_name': 'Hopper-v3', 'num_itr': 3}")
    res = subprocess.run([sys.executable, "-m", "fastmbrl", "model-based-npg", "--output",
                          str(tmp_path / "bad_run"), "--config", str(bad)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 2
    assert "unknown mjrl config key 'num_itr'" in res.stderr
    assert not (tmp_path / "bad_run").exists()
