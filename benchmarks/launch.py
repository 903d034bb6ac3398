"""How every experiment script of benchmarks/ runs its grid: as Hydra multiruns
(``fastmbrl train -m``) sent to the launcher that ``--launcher`` names (docs/sweeps.md), never a
job pool of its own.

    basic           Hydra's own: one run after another in one process (no extra needed)
    ray             Ray tasks: a Ray started here (``--jobs`` CPUs, one per run), or a cluster
                    with ``hydra.launcher.ray.init.address=...``    (pip install "fastmbrl[ray]")
    submitit_local  every run at once, as local processes          (pip install "fastmbrl[slurm]")
    submitit_slurm  one SLURM job array (``--jobs``: its parallelism)

A wall-clock budget per run is the root key ``time_limit_min`` (the run stops itself, keeps its
checkpoint and CSVs, and ``resume=true`` continues it), so it holds under every launcher.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

LAUNCHERS = ("basic", "ray", "submitit_local", "submitit_slurm")
# every run of a sweep: no progress bar in a log file, re-running continues killed runs
RUN_KEYS = ["progress=false", "resume=true", "use_tensorboard=false"]


def add_launcher_args(p: argparse.ArgumentParser, default: str = "basic") -> None:
    p.add_argument("--launcher", default=default, choices=LAUNCHERS,
                   help="Hydra launcher of the sweep (docs/sweeps.md): basic (one run after "
                   "another), ray, submitit_local (every run at once), submitit_slurm")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs at once: ray (a local Ray's CPUs, one per run) and "
                   "submitit_slurm (the array's parallelism)")


def check_launcher_args(p: argparse.ArgumentParser, args) -> None:
    if args.jobs and args.launcher in ("basic", "submitit_local"):
        p.error(f"--jobs does not apply to --launcher {args.launcher} (see --help)")


def launcher_overrides(args) -> list[str]:
    """The Hydra overrides that send a multirun to ``args.launcher``."""
    out = [] if args.launcher == "basic" else [f"hydra/launcher={args.launcher}"]
    if args.launcher == "ray" and args.jobs:
        out.append(f"hydra.launcher.ray.init.num_cpus={args.jobs}")
    if args.launcher == "submitit_slurm" and args.jobs:
        out.append(f"hydra.launcher.array_parallelism={args.jobs}")
    return out


def quoted(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def run_multirun(cmd: list[str], log: Path) -> tuple[int, float]:
    """Run ``cmd`` (``fastmbrl train -m ...``) with this Python, appending its output to
    ``log``; returns its exit status and wall time."""
    assert cmd[:3] == ["fastmbrl", "train", "-m"], cmd
    print(quoted(cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with open(log, "a") as f:
        rc = subprocess.call([sys.executable, "-m", "fastmbrl", *cmd[1:]], stdout=f,
                             stderr=subprocess.STDOUT)
    if rc:
        print(f"the sweep exited with {rc}, see {log}", flush=True)
    return rc, time.perf_counter() - t


def stopped_by_limit(run_dir: Path) -> bool:
    """Whether the run's last stop was its ``time_limit_min`` (fastmbrl.train.run logs it)."""
    log = run_dir / "train.log"
    if not log.exists():
        return False
    lines = [ln for ln in log.read_text().splitlines() if "] stopped" in ln or "finished" in ln]
    return bool(lines) and "time_limit_min" in lines[-1]
