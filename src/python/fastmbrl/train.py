"""``fastmbrl train``: Hydra entry point of every training run.

    fastmbrl train algorithm=mbpo overrides=mbpo_hopper dynamics_model=gaussian_mlp_ensemble \\
        seed=0 device=cuda

The run directory (``root_dir/algorithm/experiment/env/seedN``) holds the resolved config
(``config.yaml``, and ``.hydra/``), the results CSVs, checkpoints and TensorBoard logs;
``resume=true`` continues it from its last intact checkpoint. Nothing is written before the
config is checked (a Hydra callback checks it before Hydra creates the directory, and Hydra's
own ``.hydra/`` output is off: ``run`` writes it after the checks); the directory is locked
while a process uses it. See docs/runs.md.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from . import _native
from ._io import atomic_write
from .config import ConfigError, resolve_device, validate
from .runs.checkpoint import CheckpointError
from .runs.logger import run_log, run_log_file, write_config
from .runs.rundir import RunDirError, RunLock, prepare_run_dir

# algorithm.name -> the module that runs it. Each module has ``validate(cfg)`` (its config
# groups against their schemas; raises ConfigError) and ``train(cfg, run_dir, device)``.
ALGORITHMS = {
    "mbpo": "fastmbrl.algorithms.mbpo",
    "omd": "fastmbrl.algorithms.omd",
    "mbnpg": "fastmbrl.algorithms.mbnpg",
    "value_expansion": "fastmbrl.algorithms.value_expansion",
}


def algorithm_module(cfg: DictConfig):
    """The module of ``cfg.algorithm.name`` (a ConfigError names the available ones)."""
    name = cfg.get("algorithm", {}).get("name")
    if name not in ALGORITHMS:
        raise ConfigError(f"algorithm.name={name!r}: available {', '.join(ALGORITHMS)}")
    return importlib.import_module(ALGORITHMS[name])


class TimeLimitReached(BaseException):
    """Raised in the training loop when ``time_limit_min`` has passed (a BaseException, like
    KeyboardInterrupt, so no ``except Exception`` in an algorithm swallows it)."""


@contextlib.contextmanager
def wall_clock_limit(minutes: float | None):
    """Raise TimeLimitReached in this (the main) thread once ``minutes`` have passed.

    The stop is what a kill is to the run directory (the last checkpoint and the CSV rows
    logged so far stay; ``resume=true`` continues from the checkpoint), but the process ends
    normally: the run log says why, and a sweep's launcher sees the job finish.
    """
    if not minutes:
        yield
        return

    def expire(signum, frame):
        raise TimeLimitReached(f"time_limit_min={minutes:g} reached")

    before = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, float(minutes) * 60.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, before)


def run(cfg: DictConfig, run_dir: str | Path,
        extra_files: dict[str, DictConfig | ListConfig] | None = None) -> float:
    """Validate ``cfg`` and run its algorithm in ``run_dir``; returns the best eval return.

    The rules every algorithm gets (docs/runs.md): the config is checked before anything is
    written; the run directory is locked for the whole run; a restart resumes from the newest
    intact checkpoint with the CSVs cut back to it, or refuses/starts afresh (runs.rundir);
    the resolved config (``config.yaml``, ``.hydra/config.yaml`` and ``extra_files``,
    relative paths -> configs) is written only after that; ``train.log`` gets what the run
    reports (start, resume, evaluations, the error that stopped it).
    """
    algo = algorithm_module(cfg)
    validate(cfg)
    if cfg.get("time_limit_min") and threading.current_thread() is not threading.main_thread():
        raise ConfigError(f"time_limit_min={cfg.time_limit_min}: needs the run in the main "
                          "thread of its process (it uses SIGALRM)")
    device = resolve_device(cfg.device)
    run_dir = Path(run_dir)
    with RunLock(run_dir):
        start = prepare_run_dir(run_dir, resume=bool(cfg.resume))
        _native.set_backend(str(cfg.backend))
        if cfg.get("torch_threads"):
            torch.set_num_threads(int(cfg.torch_threads))
        for name in ("config.yaml", ".hydra/config.yaml"):
            write_config(run_dir, cfg, name)
        for name, node in (extra_files or {}).items():  # as Hydra writes them: unresolved
            path = run_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f, n=node: f.write(OmegaConf.to_yaml(n)), binary=False)
        with run_log_file(run_dir):
            run_log.info("%s %s in %s (pid %d)", "resume" if start.checkpoint else "start",
                         cfg.algorithm.name, run_dir, os.getpid())
            for msg in start.messages:
                run_log.info(msg)
            t0 = time.monotonic()
            try:
                with wall_clock_limit(cfg.get("time_limit_min")):
                    best = algo.train(cfg, run_dir, device)
            except TimeLimitReached as exc:
                msg = (f"stopped: {exc} after {(time.monotonic() - t0) / 60:.1f} min; the run "
                       "continues from its last checkpoint with resume=true")
                run_log.info(msg)
                print(msg, flush=True)
                return float("nan")
            run_log.info("finished: best evaluation return %s", best)
            return best


def _job_config(cfg: DictConfig) -> DictConfig:
    """The task config of a composed Hydra config (without its ``hydra`` node)."""
    task = copy.deepcopy(cfg)
    with open_dict(task):
        task.pop("hydra", None)
    return task


def _validate_job(cfg: DictConfig) -> None:
    """validate() a composed job config with HydraConfig set to it, as Hydra sets it when the
    job runs: interpolations such as ``${hydra:runtime.choices.GROUP}`` then resolve."""
    hc = HydraConfig.instance()
    before = hc.cfg
    hc.set_config(cfg)
    try:
        validate(_job_config(cfg))
    finally:
        if before is not None:
            hc.cfg = before


def _refuse(exc: Exception) -> None:
    kind = "configuration error" if isinstance(exc, ConfigError) else "error"
    print(f"fastmbrl train: {kind}: {exc}", file=sys.stderr)
    raise SystemExit(2) from None


class CheckBeforeWriting(Callback):
    """Hydra callback (conf/main.yaml ``hydra.callbacks``): checks every job's config before
    Hydra creates a run or sweep directory, so a bad invocation writes nothing (exit 2)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            _validate_job(config)
        except ConfigError as exc:
            _refuse(exc)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser

        loader = GlobalHydra.instance().config_loader()
        parser = OverridesParser.create(config_loader=loader)
        overrides = parser.parse_overrides(list(config.hydra.overrides.task))
        swept = {o.get_key_element() for o in overrides if o.is_sweep_override()}
        for batch in BasicSweeper.split_arguments(overrides, None):
            for job in batch:
                try:
                    _validate_job(loader.load_sweep_config(config, list(job)))
                except ConfigError as exc:
                    which = " ".join(j for j in job if j.split("=", 1)[0] in swept)
                    _refuse(ConfigError(f"{exc} (in the sweep job {which})"))


@hydra.main(config_path="conf", config_name="main", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    extra = {".hydra/hydra.yaml": OmegaConf.create({"hydra": hc}),
             ".hydra/overrides.yaml": hc.overrides.task}
    try:
        return run(cfg, hc.runtime.output_dir, extra_files=extra)
    except (ConfigError, RunDirError, CheckpointError) as exc:
        _refuse(exc)


# hydra/launcher=NAME -> (the plugin module it needs, the extra that installs it); docs/sweeps.md
LAUNCHER_EXTRAS = {
    "ray": ("hydra_plugins.hydra_ray_launcher", "ray"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
}


def _has_module(name: str) -> bool:
    try:  # find_spec of a submodule raises when its parent package is absent
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _missing_launcher(overrides: list[str]) -> str | None:
    """The error for a ``hydra/launcher=`` whose optional plugin is not installed, else None."""
    for item in overrides:
        key, _, name = item.partition("=")
        if key.lstrip("+~") == "hydra/launcher" and name in LAUNCHER_EXTRAS:
            module, extra = LAUNCHER_EXTRAS[name]
            if not _has_module(module):
                return (f"hydra/launcher={name} needs the {module.split('.')[-1].replace('_', '-')}"
                        f" plugin: pip install \"fastmbrl[{extra}]\" (see docs/sweeps.md)")
    return None


def command_line(overrides: list[str]) -> str:
    """The ``fastmbrl train ...`` command of ``overrides``, quoted for a shell."""
    return "fastmbrl train " + " ".join(shlex.quote(o) for o in overrides)


def run_translated(overrides: list[str], dry_run: bool = False) -> int:
    """What every seed translator ends with (``fastmbrl model-based-npg``, ``omd cartpole``,
    ``value-expansion``): print the equivalent ``fastmbrl train`` command, then run it
    (``dry_run``: only print it)."""
    print(command_line(overrides), flush=True)
    return 0 if dry_run else main(overrides)


def main(overrides: list[str]) -> int:
    """Run ``fastmbrl train OVERRIDES...`` (Hydra's own flags such as ``-m`` work too)."""
    missing = _missing_launcher(overrides)
    if missing:
        print(f"fastmbrl train: configuration error: {missing}", file=sys.stderr)
        return 2
    sys.argv = ["fastmbrl train", *overrides]
    _hydra_main()
    return 0
