"""benchmarks/value_aware_experiments.py sends its grid through a Hydra launcher as one multirun
over the config groups va_setting x va_method: each cell's config must be exactly the config of
the cell's own `fastmbrl train` command, and a tiny grid runs (basic launcher, no extras)."""

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


def load_script():
    spec = importlib.util.spec_from_file_location(
        "value_aware_experiments", ROOT / "benchmarks" / "value_aware_experiments.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
