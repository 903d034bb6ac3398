"""Checks of a training configuration, run before any work starts: every problem is reported
with the key, the value and what is expected."""

from __future__ import annotations

import importlib.resources
import importlib.util
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from ._native import BACKENDS
from .schema import ConfigError, check, spec  # ConfigError re-exported: fastmbrl.config


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if torch sees a GPU, else cpu; ``cuda`` without a GPU is an error."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device={name!r} is not a device (use auto, cpu, cuda or cuda:N)") \
            from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else "no CUDA device is visible")
            raise ConfigError(f"device={name} requested but torch sees no GPU ({why}); "
                              "use device=cpu or device=auto (run `fastmbrl info` for details)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device={name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ConfigError(f"device={name!r}: only cpu and cuda are supported")
    return dev


@dataclass(kw_only=True)
class RootConfig:
    """The root keys of conf/main.yaml, shared by every algorithm. The config groups
    (``algorithm``, ``overrides``, ...) are checked by the algorithm's ``validate``."""

    algorithm: Any = spec(help="config group: checked by the algorithm")
    dynamics_model: Any = spec(None, nullable=True, help="config group")
    overrides: Any = spec(None, nullable=True, help="config group")
    action_optimizer: Any = spec(None, nullable=True, help="config group")
    seed: int = spec(0, ge=0, le=2**32 - 1, help="numpy seeds are 32-bit")
    device: str = spec("auto", help="auto, cpu, cuda or cuda:N")
    backend: str = spec("auto", choices=BACKENDS)
    experiment: str = spec("default")
    root_dir: str = spec("./exp")
    resume: bool = spec(False)
    checkpoint_every_epochs: int = spec(1, ge=0)
    keep_checkpoints: int = spec(2, ge=1)
    checkpoint_model_buffer: bool = spec(False)
    log_frequency_agent: int = spec(1000, ge=1)
    use_tensorboard: bool = spec(True)
    use_wandb: bool = spec(False)
    wandb_project_name: str = spec("fastmbrl")
    wandb_group_name: str | None = spec(None, nullable=True)
    progress: Any = spec("auto", choices=("auto", True, False))
    debug_mode: bool = spec(False)
    torch_threads: int | None = spec(None, ge=1, nullable=True)
    time_limit_min: float | None = spec(
        None, gt=0.0, nullable=True,
        help="stop the run after this many minutes of wall clock (resume=true continues it)")


@dataclass(kw_only=True)
class CEMGroup:
    """``action_optimizer=cem`` (mbrl-lib's CEM planner settings)."""

    name: str = spec(choices=("cem",))
    num_iters: int = spec(5, ge=1)
    elite_ratio: float = spec(0.1, gt=0.0, le=1.0)
    population_size: int = spec(500, ge=1)
    alpha: float = spec(0.1, ge=0.0, le=1.0)
    return_mean_elites: bool = spec(True)


ACTION_OPTIMIZERS = {"cem": CEMGroup}


def config_groups() -> tuple[str, ...]:
    """The config groups of fastmbrl/conf (its subdirectories): root keys an algorithm's
    ``validate`` checks, so the root check lets them through."""
    conf = importlib.resources.files("fastmbrl.conf")
    return tuple(sorted(p.name for p in conf.iterdir()
                        if p.is_dir() and not p.name.startswith("_")))


def validate_root(cfg: DictConfig, extra_keys: tuple[str, ...] = ()) -> None:
    """The root keys every algorithm shares (main.yaml), and ``action_optimizer``;
    ``extra_keys`` are root keys of the algorithm (its ``ROOT_KEYS``), checked by it."""
    check(cfg, RootConfig, "", allow_unknown=config_groups() + tuple(extra_keys))
    ao = cfg.get("action_optimizer")
    if ao is not None:
        name = ao.get("name") if isinstance(ao, DictConfig) else ao
        if name not in ACTION_OPTIMIZERS:
            raise ConfigError(f"action_optimizer.name={name!r}: allowed values are "
                              f"{', '.join(ACTION_OPTIMIZERS)}")
        check(ao, ACTION_OPTIMIZERS[name], "action_optimizer")
    if cfg.use_wandb and importlib.util.find_spec("wandb") is None:
        raise ConfigError("use_wandb=true: wandb is not installed (pip install wandb, or "
                          "pip install 'fastmbrl[wandb]'); allowed without it: false")
    resolve_device(cfg.device)


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first problem found in a training config: the root
    keys, then the groups of ``algorithm.name`` (its module's ``validate``)."""
    from .train import algorithm_module

    module = algorithm_module(cfg)
    validate_root(cfg, getattr(module, "ROOT_KEYS", ()))
    module.validate(cfg)
