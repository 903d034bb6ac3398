"""OMD on CartPole and HalfCheetah end to end (tiny settings), config errors, resume, and the
translators of the original command lines (`fastmbrl omd cartpole|mujoco`)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from fastmbrl import omd_cli
from fastmbrl.algorithms import omd
from fastmbrl.cli import main as cli_main
from fastmbrl.config import ConfigError, validate
from fastmbrl.train import run

COMMON = ["device=cpu", "progress=false", "use_tensorboard=false"]
CARTPOLE = ["algorithm=omd", "overrides=omd_cartpole", "overrides.num_steps=60",
            "overrides.init_steps=30", "overrides.eval_frequency=20",
            "overrides.num_eval_episodes=1", "overrides.batch_size=16", "overrides.hidden_dim=8",
            "overrides.model_hidden_dim=8", "overrides.log_frequency=10", *COMMON]
CHEETAH = ["algorithm=omd", "overrides=omd_halfcheetah", "overrides.num_steps=24",
           "overrides.start_training=12", "overrides.eval_interval=12",
           "overrides.eval_episodes=1", "overrides.batch_size=8", "overrides.hidden_dims=[16,16]",
           "overrides.model_hidden_dim=8", "overrides.log_interval=4", *COMMON]


def cfg_of(*overrides: str):
    with initialize_config_module("fastmbrl.conf", version_base="1.3"):
        return compose("main", overrides=list(overrides))


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("extra", [
    ["overrides.agent_type=omd"],
    ["overrides.agent_type=mle"],
    ["overrides.agent_type=vep"],
    ["overrides.agent_type=omd", "overrides.with_inv_jac=true", "algorithm.cg_maxiter=3"],
    ["overrides.agent_type=omd", "overrides.prob_model=true", "overrides.no_warm=true",
     "overrides.warm_opt=true", "overrides.no_double=true", "overrides.float64=false"],
    ["overrides.agent_type=mle", "overrides.hard=true", "overrides.no_learn_reward=true",
     "overrides.num_T_steps=2", "overrides.num_Q_steps=2"],
])
def test_cartpole_tiny_runs(extra, tmp_path):
    best = run(cfg_of(*CARTPOLE, *extra), tmp_path)
    assert math.isfinite(best)
    res = rows(tmp_path / "results.csv")
    assert [int(r["env_step"]) for r in res] == [0, 20, 40, 60]  # step 0 included, as the original
    upd = rows(tmp_path / "updates.csv")
    assert [int(r["env_step"]) for r in upd] == [30, 40, 50, 60]
    assert all(math.isfinite(float(r["loss_T"])) and math.isfinite(float(r["loss_Q"]))
               for r in upd)
    if "overrides.with_inv_jac=true" in extra:
        assert {r["inverse_iterations"] for r in upd} <= {"1", "2", "3"}
    from fastmbrl.runs.checkpoint import latest_checkpoint, load_checkpoint

    state = load_checkpoint(latest_checkpoint(tmp_path), weights_only=False)
    model_state = state["model_optim"]["state"][0]
    # one model step per env step from step 30 (= init_steps) to 60 (x num_T_steps for mle)
    steps = 31 * (2 if "overrides.num_T_steps=2" in extra else 1)
    assert int(model_state["step"]) == steps
    assert float(model_state["exp_avg"].abs().max()) > 0  # the (implicit) gradient is not zero


@pytest.mark.parametrize("extra", [
    ["overrides.algo=mle"],
    ["overrides.algo=omd", "algorithm.inverse=cg", "algorithm.cg_maxiter=2",
     "overrides.dim_distract=3"],
])
def test_halfcheetah_tiny_runs(extra, tmp_path):
    best = run(cfg_of(*CHEETAH, *extra), tmp_path)
    assert math.isfinite(best)
    res = rows(tmp_path / "results.csv")
    assert [int(r["env_step"]) for r in res] == [12, 24]
    assert all(math.isfinite(float(r["critic_loss"])) for r in res)
    if "overrides.dim_distract=3" in extra:
        from fastmbrl.runs.checkpoint import latest_checkpoint, load_checkpoint

        state = load_checkpoint(latest_checkpoint(tmp_path), weights_only=False)
        assert state["buffer"]["data"]["obs"].shape[1] == 17 + 3


@pytest.mark.parametrize("override,message", [
    ("overrides.agent_type=sac",
     "overrides.agent_type='sac': allowed values are 'omd', 'mle', 'vep'"),
    ("+overrides.num_stepz=3", "unknown key overrides.num_stepz"),
    ("overrides.eps=1.5", "overrides.eps=1.5: must be >= 0.0 and <= 1.0"),
    ("algorithm.inverse=lu", "algorithm.inverse='lu': allowed values are 'exact', 'cg'"),
    ("overrides.env=hopper", "overrides.env='hopper': the cartpole variant needs a discrete"),
])
def test_config_errors_before_any_work(override, message, tmp_path):
    cfg = cfg_of(*CARTPOLE, override)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="prob_model"):
        validate(cfg_of(*CARTPOLE, "overrides.agent_type=vep", "overrides.prob_model=true"))
    with pytest.raises(ConfigError, match="continuous-action"):
        validate(cfg_of(*CHEETAH, "overrides.env=cartpole"))
    with pytest.raises(ConfigError, match=r"overrides.hidden_dims=\[64, 32\]"):
        validate(cfg_of(*CHEETAH, "overrides.hidden_dims=[64,32]"))
    with pytest.raises(ConfigError, match="overrides.variant='x'"):
        validate(cfg_of(*CHEETAH, "overrides.variant=x"))


def test_config_error_exit_status_from_the_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["train", *CARTPOLE, "overrides.agent_type=sac", f"root_dir={tmp_path}"])
    assert exc.value.code == 2
    assert "overrides.agent_type='sac'" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*"))  # nothing is written: the check runs before Hydra's


def test_killed_cartpole_run_resumes(tmp_path, monkeypatch):
    full, killed = tmp_path / "full", tmp_path / "killed"
    cfg = cfg_of(*CARTPOLE, "overrides.agent_type=omd")
    run(cfg, full)
    real = omd.evaluate_q
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(omd, "evaluate_q", dying)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, killed)
    monkeypatch.setattr(omd, "evaluate_q", real)
    assert [int(r["env_step"]) for r in rows(killed / "results.csv")] == [0, 20]
    with pytest.raises(ConfigError, match="resume=true"):
        run(cfg, killed)
    run(cfg_of(*CARTPOLE, "overrides.agent_type=omd", "resume=true"), killed)
    a, b = rows(full / "results.csv"), rows(killed / "results.csv")
    assert [r["env_step"] for r in a] == [r["env_step"] for r in b]  # none lost or duplicated
    from fastmbrl.runs.checkpoint import latest_checkpoint, load_checkpoint

    sa = load_checkpoint(latest_checkpoint(full), weights_only=False)
    sb = load_checkpoint(latest_checkpoint(killed), weights_only=False)
    assert sa["step"] == sb["step"] == 60
    assert sa["buffer"]["data"]["obs"].shape == sb["buffer"]["data"]["obs"].shape  # every step
    # the model optimiser took every update across the kill
    assert int(sa["model_optim"]["state"][0]["step"]) == int(sb["model_optim"]["state"][0]["step"])


def test_killed_halfcheetah_run_resumes(tmp_path, monkeypatch):
    cfg = cfg_of(*CHEETAH, "overrides.num_steps=36")
    real = omd.evaluate_sac
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(omd, "evaluate_sac", dying)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path)
    monkeypatch.setattr(omd, "evaluate_sac", real)
    assert [int(r["env_step"]) for r in rows(tmp_path / "results.csv")] == [12]
    run(cfg_of(*CHEETAH, "overrides.num_steps=36", "resume=true"), tmp_path)
    assert [int(r["env_step"]) for r in rows(tmp_path / "results.csv")] == [12, 24, 36]


# ---- translators ------------------------------------------------------------------------------
CARTPOLE_VALUES = {"exp": "x1", "out_dir": "/tmp/o", "data_path": "b.pkl", "agent_path": "a.pkl",
                   "env_name": "CartPole-v1", "seed": "3", "num_train_steps": "500",
                   "hidden_dim": "16", "model_hidden_dim": "8", "batch_size": "64",
                   "init_steps": "10", "eval_frequency": "100", "log_frequency": "50",
                   "num_Q_steps": "2", "num_T_steps": "3", "num_ensemble_vep": "4",
                   "eps": "0.2", "discount": "0.95", "lr": "0.002", "inner_lr": "0.001",
                   "alpha": "0.05", "tau": "0.02", "agent_type": "vep"}
CARTPOLE_BOOLS = ["save_buf", "save_agent", "hard", "no_learn_reward", "prob_model", "no_warm",
                  "warm_opt", "no_double", "with_inv_jac"]


def test_cartpole_translator_covers_every_flag():
    assert set(CARTPOLE_VALUES) | set(CARTPOLE_BOOLS) == set(omd_cli.CARTPOLE_FLAGS)
    argv = [f"--{k}={v}" for k, v in CARTPOLE_VALUES.items()] + [f"--{b}" for b in
                                                                CARTPOLE_BOOLS]
    overrides, notes, dry = omd_cli.translate_cartpole(argv)
    assert not dry
    assert overrides[:2] == ["algorithm=omd", "overrides=omd_cartpole"]
    got = dict(o.split("=", 1) for o in overrides[2:])
    for name, flag in omd_cli.CARTPOLE_FLAGS.items():
        if flag.key is None:
            assert any(n.startswith(f"--{name}:") for n in notes), name
            continue
        if name in CARTPOLE_VALUES:
            want = "cartpole" if name == "env_name" else CARTPOLE_VALUES[name]
        else:
            want = "true"
        assert got[flag.key] == want, name
    # every translated key exists in the config (vep + prob_model is refused by validate)
    cfg = cfg_of(*[o for o in overrides if not o.startswith("overrides.prob_model")])
    validate(cfg)


def test_mujoco_translator_covers_every_flag():
    values = {"exp": "e", "env_name": "Hopper-v2", "save_dir": "/tmp/s", "seed": "42",
              "eval_episodes": "5", "log_interval": "10", "eval_interval": "100",
              "dim_distract": "4", "batch_size": "128", "max_steps": "1000",
              "start_training": "100", "config.algo": "mle", "config.model_lr": "0.001",
              "config.actor_lr": "0.002", "config.critic_lr": "0.003", "config.temp_lr": "0.004",
              "config.hidden_dims": "(64,64)", "config.model_hidden_dim": "32",
              "config.discount": "0.98", "config.outer_steps": "2", "config.inner_steps": "3",
              "config.tau": "0.01", "config.target_update_period": "2",
              "config.init_temperature": "0.5", "config.target_entropy": "-2.0",
              "config.replay_buffer_size": "5000"}
    bools = ["tqdm", "no_jit", "save_video"]
    assert set(values) | set(bools) == set(omd_cli.MUJOCO_FLAGS)
    argv = [f"--{k}={v}" for k, v in values.items()] + ["--notqdm", "--no_jit", "--save_video"]
    overrides, notes, _ = omd_cli.translate_mujoco(argv)
    got = dict(o.split("=", 1) for o in overrides[2:])
    assert got["overrides.env"] == "hopper" and got["overrides.algo"] == "mle"
    assert got["overrides.hidden_dims"] == "[64,64]" and got["progress"] == "false"
    assert got["overrides.num_steps"] == "1000" and got["root_dir"] == "/tmp/s"
    assert got["overrides.target_entropy"] == "-2.0"
    for name, flag in omd_cli.MUJOCO_FLAGS.items():
        if flag.key is None:
            assert any(n.startswith(f"--{name}:") for n in notes), name
        else:
            assert flag.key in got, name
    validate(cfg_of(*overrides))
    # ml_collections' None
    o2, _, _ = omd_cli.translate_mujoco(["--config.target_entropy=None"])
    assert "overrides.target_entropy=null" in o2


@pytest.mark.parametrize("fn,argv,message", [
    (omd_cli.translate_cartpole, ["--agent_typ=omd"], "unknown flag --agent_typ (did you mean "
                                                      "--agent_type?)"),
    (omd_cli.translate_cartpole, ["--agent_type=sac"], "--agent_type='sac': allowed values"),
    (omd_cli.translate_cartpole, ["--seed=abc"], "--seed='abc': expected int"),
    (omd_cli.translate_cartpole, ["--hard=maybe"], "--hard='maybe': expected true or false"),
    (omd_cli.translate_cartpole, ["--env_name=Pong-v5"], "--env_name='Pong-v5'"),
    (omd_cli.translate_mujoco, ["--config.algo=sac"], "--config.algo='sac': allowed values"),
    (omd_cli.translate_mujoco, ["--config.lr=1"], "unknown flag --config.lr"),
    (omd_cli.translate_mujoco, ["--max_steps"], "--max_steps needs a value"),
])
def test_translator_bad_flags_are_named(fn, argv, message):
    with pytest.raises(omd_cli.TranslateError) as exc:
        fn(argv)
    assert message in str(exc.value)


def test_translated_command_is_printed_and_runs(tmp_path, capsys):
    rc = cli_main(["omd", "cartpole", "--agent_type", "mle", "--num_train_steps=40",
                   "--init_steps=20", "--eval_frequency=20", "--batch_size=8", "--hidden_dim=8",
                   "--model_hidden_dim=8", f"--out_dir={tmp_path}", "--noprob_model",
                   "--progress=false", "use_tensorboard=false", "overrides.num_eval_episodes=1",
                   "--device=cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "fastmbrl train algorithm=omd overrides=omd_cartpole overrides.agent_type=mle" in out
    assert "overrides.prob_model=false" in out
    res = rows(tmp_path / "omd" / "default" / "cartpole" / "seed0" / "results.csv")
    assert [int(r["env_step"]) for r in res] == [0, 20, 40]
    assert cli_main(["omd", "mujoco", "--config.algo=omd", "--dry_run"]) == 0
    assert "overrides=omd_halfcheetah overrides.algo=omd" in capsys.readouterr().out
    assert cli_main(["omd", "cartpole", "--bogus"]) == 2
    assert "unknown flag --bogus" in capsys.readouterr().err
