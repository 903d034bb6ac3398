"""Sweeps through Hydra launchers (docs/sweeps.md): a 3-job multirun of tiny MBPO runs through
the Ray launcher (a local Ray) and through submitit_local, each job's run directory complete
and `fastmbrl plot` aggregating the sweep; a sweep sent to a running Ray head by address; the
SLURM launcher's sbatch file, submitted to a stand-in `sbatch` that records it and runs the
array's tasks on this machine; a launcher whose extra is missing is a one-line error.

The launchers are optional extras (`pip install "fastmbrl[ray]"`, `"fastmbrl[slurm]"`); without
them these tests skip and say which extra is missing.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from fastmbrl.runs.plot import DEFAULT_IGNORE_KEYS, aggregate


def _has_plugin(name: str) -> bool:
    # find_spec of a submodule raises when the parent package (hydra_plugins) is absent
    try:
        return importlib.util.find_spec(f"hydra_plugins.{name}") is not None
    except ModuleNotFoundError:
        return False


HAS_RAY = _has_plugin("hydra_ray_launcher")
HAS_SUBMITIT = _has_plugin("hydra_submitit_launcher")
needs_ray = pytest.mark.skipif(not HAS_RAY, reason='hydra-ray-launcher not installed: '
                               'pip install "fastmbrl[ray]"')
needs_submitit = pytest.mark.skipif(not HAS_SUBMITIT, reason='hydra-submitit-launcher not '
                                    'installed: pip install "fastmbrl[slurm]"')

# tests/test_mbpo.py's tiny run, one 40-step epoch
TINY = [
    "overrides=mbpo_inverted_pendulum", "overrides.num_steps=40", "overrides.epoch_length=40",
    "overrides.freq_train_model=20", "overrides.effective_model_rollouts_per_step=5",
    "overrides.num_sac_updates_per_step=2", "overrides.sac_hidden_size=32",
    "overrides.sac_batch_size=32", "overrides.model_batch_size=32", "overrides.patience=1",
    "+overrides.num_epochs_train_model=2", "algorithm.initial_exploration_steps=60",
    "dynamics_model.model.hid_size=16", "dynamics_model.model.num_layers=2",
    "dynamics_model.model.ensemble_size=3", "overrides.num_elites=2", "device=cpu",
    "progress=false", "use_tensorboard=false", "torch_threads=1",
    "time_limit_min=30",  # never reached: the launchers run jobs where SIGALRM works
]
SEEDS = (0, 1, 2)


def sweep(tmp_path: Path, *launcher: str, env: dict | None = None,
          seeds=SEEDS) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "fastmbrl", "train", "-m", *launcher, *TINY,
           f"seed={','.join(map(str, seeds))}", f"root_dir={tmp_path / 'exp'}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path,
                         env={**os.environ, **(env or {})})
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    return res


def check_sweep(tmp_path: Path, launcher_target: str, seeds=SEEDS) -> list[str]:
    """Every job's run directory is complete; returns the jobs' hydra.job.id values."""
    sweep_dir = tmp_path / "exp" / "mbpo" / "default"
    assert (sweep_dir / "multirun.yaml").exists()
    ids = []
    for seed in seeds:
        run = sweep_dir / "inverted_pendulum" / f"seed{seed}"
        with open(run / "results.csv") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["env_step"]) for r in rows] == [40], run
        assert float(rows[0]["episode_return"]) > 0
        for name in ("config.yaml", "model.csv", "train.log", ".hydra/config.yaml",
                     ".hydra/overrides.yaml"):
            assert (run / name).exists(), run / name
        assert list((run / "checkpoints").glob("ckpt_*.pt")), run
        assert f"seed: {seed}\n" in (run / "config.yaml").read_text()
        hydra_yaml = (run / ".hydra" / "hydra.yaml").read_text()
        assert f"_target_: {launcher_target}" in hydra_yaml  # the job went through it
        ids.append(re.search(r"\n    id: (\S+)\n", hydra_yaml).group(1).strip("'\""))

    # `fastmbrl plot` on the sweep folder: the seeds form one curve
    (curve,) = aggregate([sweep_dir], "env_step", "episode_return", None, "results.csv",
                         DEFAULT_IGNORE_KEYS)
    assert curve.n == len(seeds)
    png = tmp_path / "sweep.png"
    res = subprocess.run([sys.executable, "-m", "fastmbrl", "plot", str(sweep_dir), "--out",
                          str(png)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert png.stat().st_size > 1000
    return ids


@pytest.mark.slow
@needs_ray
def test_ray_launcher_runs_a_three_seed_sweep(tmp_path):
    res = sweep(tmp_path, "hydra/launcher=ray", "hydra.launcher.ray.init.num_cpus=2")
    assert "Ray Launcher is launching 3 jobs" in res.stdout + res.stderr
    ids = check_sweep(tmp_path, "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher")
    assert ids == ["job_id_for_0", "job_id_for_1", "job_id_for_2"]


@pytest.mark.slow
@needs_ray
def test_ray_launcher_joins_a_running_ray(tmp_path):
    """A Ray started as a cluster head (`ray start --head --block`, in its own temp dir, ended
    by terminating that process: its reaper stops the node) runs the sweep's jobs."""
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths are long
    ray_exe = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen([ray_exe, "start", "--head", "--block", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false",
                             "--disable-usage-stats", f"--temp-dir={temp_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        address, seen = None, []
        for line in head.stdout:
            seen.append(line)
            if m := re.search(r"--address='([^']+)'", line):
                address = m.group(1)
            if "will now block" in line:
                break
        assert address and address.endswith(f":{port}"), "".join(seen)
        # `ray start` turns on Ray's token authentication (ray >= 2.5x); a driver joining by
        # address must then use it too (the token is this user's ~/.ray/auth_token)
        res = sweep(tmp_path, "hydra/launcher=ray", f"hydra.launcher.ray.init.address={address}",
                    seeds=(0, 1), env={"RAY_AUTH_MODE": "token"})
        assert f"Connecting to existing Ray cluster at address: {address}" in (res.stdout
                                                                             + res.stderr)
        check_sweep(tmp_path, "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
                    seeds=(0, 1))
    finally:
        head.terminate()
        head.wait(timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
@needs_submitit
def test_submitit_local_launcher_runs_a_three_seed_sweep(tmp_path):
    res = sweep(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20")
    assert "Submitit 'local' sweep output dir" in res.stdout + res.stderr
    ids = check_sweep(tmp_path,
                      "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher")
    assert len(set(ids)) == 3 and all(i.isdigit() for i in ids)  # submitit's job ids (pids)
    assert list((tmp_path / "exp" / "mbpo" / "default" / ".submitit").glob("*/*_result.pkl"))


def test_a_launcher_without_its_extra_is_a_clear_error():
    """`hydra/launcher=ray` without hydra-ray-launcher: one line naming the extra, exit 2."""
    code = ("import sys; sys.modules['hydra_plugins.hydra_ray_launcher'] = None; "
            "from fastmbrl.cli import main; "
            "sys.exit(main(['train', '-m', 'hydra/launcher=ray', 'seed=0,1']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2
    assert res.stderr.strip() == (
        'fastmbrl train: configuration error: hydra/launcher=ray needs the hydra-ray-launcher '
        'plugin: pip install "fastmbrl[ray]" (see docs/sweeps.md)')


# A stand-in for a SLURM cluster's commands: `sbatch` records the script it is given, answers
# like SLURM and runs the array's tasks in the background (after submitit has moved each task's
# pickle into place) with the SLURM_* variables a task sees; `srun` runs its command; `sacct`
# knows no job (submitit then waits for the result files).
FAKE_SLURM = textwrap.dedent('''\
    #!{python}
    import os, re, shlex, subprocess, sys, time
    from pathlib import Path
    tool, args, log = Path(sys.argv[0]).name, sys.argv[1:], Path({log!r})
    if tool == "sbatch":
        script = Path(args[-1]).read_text()
        log.mkdir(exist_ok=True)
        (log / "sbatch_args.txt").write_text(" ".join(args))
        (log / "job.sh").write_text(script)
        first, last = map(int, re.search(r"--array=(\\d+)-(\\d+)", script).groups())
        folder = shlex.split(script.strip().splitlines()[-1])[-1]
        print("Submitted batch job 4242", flush=True)
        if os.fork() == 0:  # the "cluster": run the tasks once submitit is done submitting
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):  # let go of submitit's pipe, or it waits for us
                os.dup2(null, fd)
            for task in range(first, last + 1):
                jid = f"4242_{{task}}"
                pkl = Path(folder.replace("%j", jid)) / f"{{jid}}_submitted.pkl"
                while not pkl.exists():
                    time.sleep(0.1)
                env = dict(os.environ, SLURM_JOB_ID=str(5000 + task), SLURM_ARRAY_JOB_ID="4242",
                           SLURM_ARRAY_TASK_ID=str(task), SLURM_NTASKS="1", SLURM_PROCID="0",
                           SLURM_LOCALID="0", SLURM_NODEID="0", SLURM_JOB_NUM_NODES="1",
                           SLURM_JOB_NODELIST="localhost")
                subprocess.run(["bash", str(log / "job.sh")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            os._exit(0)
    elif tool == "srun":
        while args and args[0].startswith("--"):
            args = args[2:] if args[0] in ("--output", "--error") else args[1:]
        os.execvp(args[0], args)
    elif tool == "sacct":
        print("JobID|State|NodeList")
    ''')


@pytest.mark.slow
@needs_submitit
def test_submitit_slurm_launcher_submits_the_configured_sbatch_job(tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    (bin_dir / "slurm_tool").write_text(FAKE_SLURM.format(python=sys.executable, log=str(log)))
    (bin_dir / "slurm_tool").chmod(0o755)
    for tool in ("sbatch", "srun", "sacct", "scancel"):
        (bin_dir / tool).symlink_to(bin_dir / "slurm_tool")
    sweep(tmp_path, "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
          "hydra.launcher.timeout_min=600", "hydra.launcher.gpus_per_node=1",
          "hydra.launcher.cpus_per_task=4", "hydra.launcher.mem_gb=16",
          "hydra.launcher.array_parallelism=2", "+hydra.launcher.additional_parameters.account=rl",
          env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    script = (log / "job.sh").read_text()
    sbatch = dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", script, flags=re.M))
    assert sbatch["partition"] == "gpu"
    assert sbatch["time"] == "600"  # minutes
    assert sbatch["gpus-per-node"] == "1"
    assert sbatch["cpus-per-task"] == "4"
    assert sbatch["mem"] == "16GB"
    assert sbatch["array"] == "0-2%2"  # three jobs, at most two at once
    assert sbatch["account"] == "rl"
    assert sbatch["job-name"] == "train"
    assert "submitit.core._submit" in script.splitlines()[-1]
    ids = check_sweep(tmp_path,
                      "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher")
    assert ids == ["4242_0", "4242_1", "4242_2"]  # SLURM's array job ids reached each job
