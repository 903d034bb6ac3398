"""The experiment scripts of benchmarks/ send their grids through a Hydra launcher as multiruns
(benchmarks/launch.py): value_aware_experiments.py as one multirun over the config groups
va_setting x va_method (each cell's config must be exactly the config of the cell's own
`fastmbrl train` command, and a tiny grid runs through the basic launcher); the learning checks
of NPG, OMD and value expansion the same way, their wall budget as ``time_limit_min``."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    """benchmarks/<name>.py as a module (the scripts import benchmarks/launch.py)."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_script():
    return load("value_aware_experiments")


def resolved(overrides: list[str]) -> dict:
    with initialize_config_module("fastmbrl.conf", version_base="1.3"):
        cfg = compose("main", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # for ${hydra:runtime.choices...}
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True)


def test_every_cell_of_the_sweep_is_the_cells_own_command(tmp_path):
    vae = load_script()
    args = vae.main.__globals__["argparse"].Namespace(
        seed=3, root=str(tmp_path), steps=700, short=True, extra=["device=cpu"],
        launcher="basic", jobs=None)
    vae.write_groups(tmp_path / "conf")
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    assert len(vae.commands(args)) == 18
    for name, cmd in vae.commands(args).items():
        setting, method = name.split("-", 1)
        direct = resolved(cmd[2:])
        # cmd: fastmbrl train <setting's> <method's> experiment=NAME <the rest>
        rest = cmd[2 + len(vae.SETTINGS[setting]) + len(vae.METHODS[method]) + 1:]
        swept = resolved([search, f"+va_setting={setting}", f"+va_method={method}", *rest])
        assert swept == direct, name
        assert direct["experiment"] == name


def test_sweep_command_names_the_launcher(tmp_path):
    vae = load_script()
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "value_aware_experiments.py"),
                          "--print", "--launcher", "ray", "--jobs", "4", "--root",
                          str(tmp_path)], capture_output=True, text=True, check=True).stdout
    sweep = out.strip().splitlines()[-1]
    assert sweep.startswith("fastmbrl train -m ")
    assert "hydra/launcher=ray" in sweep and "hydra.launcher.ray.init.num_cpus=4" in sweep
    assert f"+va_setting={','.join(vae.SETTINGS)}" in sweep
    assert f"+va_method={','.join(vae.METHODS)}" in sweep
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "value_aware_experiments.py"),
                          "--print", "--launcher", "submitit_local", "--jobs", "2"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--jobs does not apply" in bad.stderr


TINY = ["overrides.epoch_length=40", "overrides.freq_train_model=20",
        "overrides.effective_model_rollouts_per_step=5", "overrides.num_sac_updates_per_step=1",
        "overrides.sac_hidden_size=32", "overrides.sac_batch_size=32", "overrides.patience=1",
        "+overrides.num_epochs_train_model=2", "algorithm.initial_exploration_steps=60",
        "dynamics_model.model.hid_size=16", "dynamics_model.model.ensemble_size=3",
        "overrides.num_elites=2", "device=cpu", "torch_threads=1", "algorithm.num_eval_episodes=1",
        "+overrides.v_update_batch_size=32"]


@pytest.mark.slow
def test_tiny_grid_runs_through_the_basic_launcher(tmp_path):
    cells = ["distraction0-mle", "distraction0-ma_l1"]
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "value_aware_experiments.py"), "--steps",
         "40", "--root", str(tmp_path / "exp"), "--only", *cells, "--out", str(tmp_path / "out"),
         *TINY, "overrides.model_batch_size=32"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["cell"] for r in summary["runs"]] == cells
    assert all(r["status"] == "ok" and r["env_steps"] == 40 for r in summary["runs"])
    assert summary["launcher"] == "basic"
    for cell in cells:
        run = tmp_path / "exp" / "mbpo" / cell / "hopper" / "seed0"
        with open(run / "results.csv") as f:
            assert len(list(csv.DictReader(f))) == 1
        assert f"experiment: {cell}\n" in (run / "config.yaml").read_text()
    assert (tmp_path / "out" / "curves.png").exists()


# ------------------------------------------- the other experiment scripts go the same way
def printed_sweeps(script: str, *args: str) -> list[list[str]]:
    import shlex

    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--print", *args],
                         capture_output=True, text=True, check=True).stdout
    return [shlex.split(line) for line in out.strip().splitlines()]


def sweep_jobs(cmd: list[str]) -> list[tuple[dict, str]]:
    """Each job of the multirun ``cmd`` as Hydra's basic sweeper splits it: (its resolved
    config, its run directory)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert cmd[:3] == ["fastmbrl", "train", "-m"]
    overrides = OverridesParser.create().parse_overrides(cmd[3:])
    jobs = []
    for batch in BasicSweeper.split_arguments(overrides, None):
        for job in batch:
            with initialize_config_module("fastmbrl.conf", version_base="1.3"):
                cfg = compose("main", overrides=list(job), return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            run_dir = f"{cfg.hydra.sweep.dir}/{cfg.hydra.sweep.subdir}"
            with open_dict(cfg):
                del cfg["hydra"]
            jobs.append((OmegaConf.to_container(cfg, resolve=True), run_dir))
    return jobs


def test_npg_learning_check_is_one_multirun_over_the_seeds(tmp_path):
    (cmd,) = printed_sweeps("npg_learning_check.py", "--seeds", "4", "5", "--minutes", "2",
                            "--root", str(tmp_path), "--launcher", "ray", "--jobs", "2")
    assert "hydra/launcher=ray" in cmd and "hydra.launcher.ray.init.num_cpus=2" in cmd
    cmd = [c for c in cmd if "launcher" not in c]  # composing needs no Ray
    jobs = sweep_jobs(cmd)
    assert [(c["seed"], d) for c, d in jobs] == [
        (s, f"{tmp_path}/npg_inverted_pendulum/seed{s}") for s in (4, 5)]
    assert all(c["algorithm"]["name"] == "mbnpg" and c["time_limit_min"] == 2.0
               and c["resume"] is True for c, _ in jobs)


def test_omd_learning_is_one_multirun_over_agents_and_seeds(tmp_path):
    (cmd,) = printed_sweeps("omd_learning.py", "--task", "cartpole", "--agents", "omd", "mle",
                            "--seeds", "0", "1", "--steps", "500", "--minutes", "3", "--out",
                            str(tmp_path))
    assert not any("launcher" in c for c in cmd)  # basic: Hydra's default
    jobs = sweep_jobs(cmd)
    got = {(c["overrides"]["agent_type"], c["seed"]): (c, d) for c, d in jobs}
    assert len(jobs) == 4 and set(got) == {(a, s) for a in ("omd", "mle") for s in (0, 1)}
    omd = load("omd_learning")
    a = omd.argparse.Namespace(task="cartpole", steps=500, minutes=3.0, extra=[])
    for (agent, seed), (cfg, run_dir) in got.items():
        # the job is the run's own command, in the directory the summary reads
        own = resolved(omd.command(a, agent, seed, tmp_path / "runs")[2:])
        assert cfg == own, (agent, seed)
        assert run_dir == f"{tmp_path}/runs/omd/{agent}/cartpole/seed{seed}"


def test_ve_learning_check_runs_h0_once_and_the_rest_over_models(tmp_path):
    sweeps = printed_sweeps("ve_learning_check.py", "--horizons", "0", "1", "3", "--seeds", "0",
                            "1", "--root", str(tmp_path), "--", "algorithm.model_batch_size=64")
    jobs = [j for cmd in sweeps for j in sweep_jobs(cmd)]
    got = sorted((c["H"], c["expansion"], c["model_type"], c["seed"], d) for c, d in jobs)
    base = f"{tmp_path}/ve_inverted_pendulum"
    want = sorted([(0, "none", "network", s, f"{base}/H0-none/seed{s}") for s in (0, 1)]
                  + [(h, "mve", m, s, f"{base}/H{h}-{m}/seed{s}") for h in (1, 3)
                     for m in ("analytic", "network") for s in (0, 1)])
    assert got == want
    assert all(c["algorithm"]["model_batch_size"] == 64 and c["time_limit_min"] == 20.0
               for c, _ in jobs)
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ve_learning_check.py"),
                          "--print", "--jobs", "2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--jobs does not apply to --launcher basic" in bad.stderr


@pytest.mark.slow
def test_npg_learning_check_runs_through_the_launcher_under_its_time_limit(tmp_path):
    """Two seeds through the basic launcher, each stopped by time_limit_min (the budget the
    script's --minutes sets): both run directories hold their rows and say they were stopped."""
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "npg_learning_check.py"), "--seeds", "0", "1",
         "--minutes", "0.12", "--root", str(tmp_path / "exp"), "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    for seed in ("0", "1"):
        run = summary["runs"][seed]
        assert run["iterations"] >= 1 and run["stopped_by_budget"] is True, run
        assert (out / f"seed{seed}-results.csv").exists()
    assert summary["sweep"].startswith("fastmbrl train -m algorithm=mbnpg")
    assert (out / "curves.png").exists()


def test_value_expansion_experiments_sweeps_are_the_grid_of_its_own_commands(tmp_path):
    """The horizon study (issue 14): every job of the printed sweeps is one cell x seed of the
    grid, with the config of that run's own `fastmbrl train` command and its run directory;
    H = 0 once per agent, Retrace once per H."""
    args = ["--root", str(tmp_path), "--agents", "sac", "ddpg", "--horizons", "0", "1", "3",
            "--seeds", "1", "2", "--minutes", "30"]
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" /
                                              "value_expansion_experiments.py"), "--print",
                          *args], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    at = lines.index("# the same grid as sweeps:")
    import shlex

    singles, sweeps = [shlex.split(x) for x in lines[:at]], [shlex.split(x) for x in
                                                              lines[at + 1:]]
    jobs = [j for cmd in sweeps for j in sweep_jobs(cmd)]
    key = lambda c: (c["agent"], c["expansion"], c["H"], c["model_type"], c["seed"])  # noqa: E731
    by_key = {key(c): (c, d) for c, d in jobs}
    assert len(by_key) == len(jobs) == len(singles)
    # 2 agents x (H0 + 2 horizons x (MVE, VG) x 2 models + 2 horizons x Retrace) x 2 seeds
    assert len(jobs) == 2 * (1 + 2 * 2 * 2 + 2) * 2
    for cmd in singles:
        own = resolved(cmd[2:])
        cfg, run_dir = by_key[key(own)]
        assert cfg == own, cmd
        assert run_dir == (f"{tmp_path}/inverted_pendulum/{own['agent']}-{own['expansion']}-"
                           f"H{own['H']}-{own['model_type']}/seed{own['seed']}")
    assert {k[1] for k in by_key if k[2] == 0} == {"none"}
    assert {k[3] for k in by_key if k[1] == "retrace"} == {"analytic"}
