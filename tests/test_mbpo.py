"""MBPO end to end on tiny configs (CPU, seconds), resume after a kill, config errors."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from fastmbrl.algorithms import mbpo
from fastmbrl.algorithms.common import truncated_linear
from fastmbrl.config import ConfigError
from fastmbrl.train import run

TINY = [
    "overrides.num_steps=80",
    "overrides.epoch_length=40",
    "overrides.freq_train_model=20",
    "overrides.effective_model_rollouts_per_step=5",
    "overrides.num_sac_updates_per_step=2",
    "overrides.sac_hidden_size=32",
    "overrides.sac_batch_size=32",
    "overrides.model_batch_size=32",
    "overrides.patience=1",
    "+overrides.num_epochs_train_model=2",
    "overrides.rollout_schedule=[1,2,1,3]",
    "algorithm.initial_exploration_steps=60",
    "dynamics_model.model.hid_size=16",
    "dynamics_model.model.num_layers=2",
    "dynamics_model.model.ensemble_size=3",
    "overrides.num_elites=2",
    "device=cpu",
    "progress=false",
    "use_tensorboard=false",
    "log_frequency_agent=10",
]


def tiny_cfg(*extra: str):
    with initialize_config_module("fastmbrl.conf", version_base="1.3"):
        return compose("main", overrides=[*TINY, *extra])


def run_killed_at_evaluation(cfg, run_dir, monkeypatch, call: int = 3) -> None:
    """Run ``cfg`` in ``run_dir`` and kill it (KeyboardInterrupt) at its ``call``-th evaluation,
    i.e. during that epoch, after the checkpoint of the epoch before."""
    real_evaluate = mbpo.evaluate
    calls = {"n": 0}

    def dying_evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt("killed")
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(mbpo, "evaluate", dying_evaluate)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, run_dir)
    monkeypatch.setattr(mbpo, "evaluate", real_evaluate)


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_truncated_linear_schedule():
    assert truncated_linear(20, 150, 1, 15, 1) == 1
    assert truncated_linear(20, 150, 1, 15, 20) == 1
    assert truncated_linear(20, 150, 1, 15, 85) == pytest.approx(8.0)
    assert truncated_linear(20, 150, 1, 15, 150) == 15
    assert truncated_linear(20, 150, 1, 15, 400) == 15


@pytest.mark.parametrize("task", ["mbpo_inverted_pendulum", "mbpo_hopper"])
def test_tiny_run_finishes_and_writes_results(task, tmp_path):
    cfg = tiny_cfg(f"overrides={task}")
    best = run(cfg, tmp_path)
    assert math.isfinite(best)
    rows = read_csv(tmp_path / "results.csv")
    assert [int(r["env_step"]) for r in rows] == [40, 80]
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert all(int(r["sac_updates"]) > 0 for r in rows[1:])
    assert all(math.isfinite(float(r["episode_return"])) for r in rows)
    assert (tmp_path / "config.yaml").exists()
    assert list((tmp_path / "checkpoints").glob("*.pt"))


def test_killed_run_resumes_and_loses_nothing(tmp_path, monkeypatch):
    full, killed = tmp_path / "full", tmp_path / "killed"
    cfg = tiny_cfg("overrides=mbpo_inverted_pendulum", "overrides.num_steps=120")
    run(cfg, full)

    # the same run, killed during its third epoch (after the epoch-2 checkpoint)
    run_killed_at_evaluation(cfg, killed, monkeypatch)
    rows = read_csv(killed / "results.csv")
    assert [int(r["env_step"]) for r in rows] == [40, 80]

    # a restart without resume=true refuses to overwrite the run
    with pytest.raises(ConfigError, match="resume=true"):
        run(cfg, killed)
    resumed_cfg = tiny_cfg("overrides=mbpo_inverted_pendulum", "overrides.num_steps=120",
                           "resume=true")
    run(resumed_cfg, killed)

    a, b = read_csv(full / "results.csv"), read_csv(killed / "results.csv")
    assert [int(r["env_step"]) for r in b] == [40, 80, 120]  # no row lost, none duplicated
    for key in ("epoch", "env_step", "total_env_steps", "sac_updates", "rollout_length"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    from fastmbrl.runs.checkpoint import latest_checkpoint, load_checkpoint

    sa = load_checkpoint(latest_checkpoint(full))
    sb = load_checkpoint(latest_checkpoint(killed))
    for key in ("epoch", "env_steps", "updates_made"):
        assert sa[key] == sb[key], key
    # every real transition is kept: the same number, and identical up to the checkpoint
    ra, rb = sa["real_buffer"], sb["real_buffer"]
    assert ra["num_added"] == rb["num_added"] == 60 + 120
    n = 60 + 80
    for field in ("obs", "act", "reward"):
        torch.testing.assert_close(ra["data"][field][:n], rb["data"][field][:n])


@pytest.mark.parametrize(
    "override, message",
    [
        ("overrides.env=pogo", "unknown task 'pogo'"),
        ("+overrides.num_stpes=5", "did you mean overrides.num_steps"),
        ("overrides.num_steps=-5", "overrides.num_steps=-5: must be >= 1"),
        ("overrides.model_batch_size=0", "overrides.model_batch_size=0: must be >= 1"),
        ("overrides.num_elites=9", "exceeds dynamics_model.model.ensemble_size=3"),
        ("overrides.rollout_schedule=[1,2,0,3]", "rollout_schedule=[1, 2, 0, 3]: expected"),
        ("overrides.validation_ratio=1.5", "validation_ratio=1.5: must be >= 0.0 and < 1.0"),
        ("backend=fast", "backend='fast': allowed values are"),
        ("device=tpu", "is not a device"),
    ],
)
def test_bad_configuration_is_reported_before_work(override, message, tmp_path):
    cfg = tiny_cfg(override)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # no work was started


@pytest.mark.skipif(torch.cuda.is_available(), reason="machine has a GPU")
def test_device_cuda_without_gpu_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="device=cuda requested but torch sees no GPU"):
        run(tiny_cfg("device=cuda"), tmp_path)


def test_unknown_key_without_plus_is_rejected_by_hydra():
    with pytest.raises(Exception, match="num_stpes"):
        tiny_cfg("overrides.num_stpes=5")


def test_cli_train_runs_and_reports_bad_config(tmp_path):
    """`fastmbrl train` through Hydra: a run directory per seed; config errors exit with 2."""
    import subprocess
    import sys

    base = [sys.executable, "-m", "fastmbrl", "train", *TINY, "overrides.num_steps=40",
            f"root_dir={tmp_path}"]
    res = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    run_dir = tmp_path / "mbpo" / "default" / "inverted_pendulum" / "seed0"
    assert [int(r["env_step"]) for r in read_csv(run_dir / "results.csv")] == [40]
    assert (run_dir / ".hydra" / "config.yaml").exists()
    res = subprocess.run(base, capture_output=True, text=True, timeout=600)  # same dir again
    assert res.returncode == 2 and "resume=true" in res.stderr
    res = subprocess.run([*base, "overrides.env=pogo", "experiment=bad"], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 2
    assert "configuration error: overrides.env='pogo': unknown task 'pogo'" in res.stderr
