"""``fastmbrl value-expansion``: the value_expansion seed's run_experiment.py flags translated
onto ``fastmbrl train`` (ve_cli.py)."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from fastmbrl import train
from fastmbrl.cli import main as cli_main
from fastmbrl.ve_cli import translate


def test_defaults_are_the_seeds():
    out, dry = translate([])
    assert not dry
    assert out == ["algorithm=value_expansion", "overrides=ve_inverted_pendulum", "agent=sac",
                   "expansion=none", "H=0", "model_type=analytic", "seed=1", "device=auto",
                   "experiment=SAC-MVE_H0_analytic"]


@pytest.mark.parametrize("flags, expected", [
    (["-env", "cartpole"], "overrides=ve_cartpole"),
    (["-env", "halfcheetah"], "overrides=ve_halfcheetah"),
    (["-algo", "DDPG-MVE", "-H", "3"], "agent=ddpg"),
    (["-algo", "DDPG-MVE", "-H", "3"], "expansion=mve"),
    (["-algo", "SAC-RETRACE", "-H", "2"], "expansion=retrace"),
    (["-algo", "DDPG-RETRACE", "-H", "0"], "expansion=none"),
    (["-H", "5"], "H=5"),
    (["-H", "5"], "expansion=mve"),
    (["-model_type", "network"], "model_type=network"),
    (["-seed", "7"], "seed=7"),
    (["-gpu", "-1"], "device=cpu"),
    (["-gpu", "2"], "device=cuda:2"),
    (["-gpu", "0"], "device=cuda:0"),
    (["-algo", "SAC-VG", "-H", "5"], "expansion=vg"),
    (["-algo", "DDPG-VG", "-H", "1"], "agent=ddpg"),
    (["-algo", "DDPG-VG", "-H", "0"], "expansion=none"),
    (["-num_steps", "300"], "overrides.num_steps=300"),
    (["-wandb_mode", "online", "-wandb_project", "p"], "use_wandb=true"),
    (["-wandb_mode", "online", "-wandb_project", "p"], "wandb_project_name=p"),
    (["-algo", "SAC-RETRACE", "-H", "4", "-model_type", "network"],
     "experiment=SAC-RETRACE_H4_network"),
    (["root_dir=/tmp/x", "resume=true"], "resume=true"),
])
def test_each_flag_is_translated(flags, expected):
    out, _ = translate(flags)
    assert expected in out


def test_nparticles_and_wandb_entity_are_accepted(monkeypatch):
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    a, _ = translate(["-nparticles", "8"])
    b, _ = translate([])
    assert a == b  # unused, as in the seed
    translate(["-wandb_mode", "online", "-wandb_entity", "me"])
    import os

    assert os.environ["WANDB_ENTITY"] == "me"


@pytest.mark.parametrize("flags, message", [
    (["-algo", "SAC"], "argument -algo: invalid choice: 'SAC'"),
    (["-env", "pogo"], "argument -env: invalid choice: 'pogo'"),
    (["-H", "-2"], "argument -H: must be >= 0, got -2"),
    (["-H", "x"], "argument -H: invalid int value: 'x'"),
    (["-model_type", "brax"], "argument -model_type: invalid choice"),
    (["-gpu", "-3"], "argument -gpu: a GPU index or -1"),
    (["-num_steps", "0"], "argument -num_steps: must be >= 1"),
    (["-wandb_mode", "offline"], "argument -wandb_mode: invalid choice"),
    (["-bogus", "1"], "unrecognized arguments: -bogus"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_bad_flags_are_named_with_exit_status_2(flags, message, capsys):
    with pytest.raises(SystemExit) as exc:
        translate(flags)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_the_printed_command_is_the_one_run(monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(train, "main", lambda overrides: ran.append(overrides) or 0)
    rc = cli_main(["value-expansion", "-env", "hopper", "-algo", "DDPG-MVE", "-H", "3",
                   "-model_type", "network", "-gpu", "-1", "root_dir=/tmp/r"])
    assert rc == 0 and len(ran) == 1
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed == train.command_line(ran[0])
    assert printed.startswith("fastmbrl train algorithm=value_expansion overrides=ve_hopper ")
    assert cli_main(["value-expansion", "-dry_run"]) == 0 and len(ran) == 1


def test_seed_command_runs_end_to_end(tmp_path):
    cmd = [sys.executable, "-m", "fastmbrl", "value-expansion", "-env", "inverted_pendulum",
           "-algo", "SAC-MVE", "-H", "2", "-model_type", "analytic", "-seed", "0", "-gpu", "-1",
           "-num_steps", "200", f"root_dir={tmp_path}", "overrides.warmup_steps=100",
           "overrides.eval_every=100", "overrides.eval_episodes=1", "overrides.batch_size=16",
           "algorithm.hidden_sizes=[16,16]", "progress=false", "use_tensorboard=false"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "fastmbrl train algorithm=value_expansion" in res.stdout
    run_dir = tmp_path / "value_expansion" / "SAC-MVE_H2_analytic" / "inverted_pendulum" / "seed0"
    with open(run_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["env_step"] for r in rows] == ["100", "200"]
