"""Checks of a training configuration, run before any work starts: every problem is reported
with the key, the value and what is expected."""

from __future__ import annotations

import difflib

import torch
from omegaconf import DictConfig

from . import envs
from ._native import BACKENDS
from .algorithms.value_aware import value_aware_config
from .schema import ConfigError  # noqa: F401  (re-exported: fastmbrl.config.ConfigError)

# Keys an `overrides` file may hold. The seeds add some with `+overrides.KEY=...`, so keys not
# in the YAML files are read with defaults; a misspelt one is an error, not silently ignored.
KNOWN_OVERRIDE_KEYS = {
    "env", "term_fn", "num_steps", "epoch_length", "num_elites", "patience", "model_lr",
    "model_wd", "model_batch_size", "validation_ratio", "freq_train_model",
    "effective_model_rollouts_per_step", "rollout_schedule", "num_sac_updates_per_step",
    "sac_updates_every_steps", "num_epochs_to_retain_sac_buffer", "distraction_dimensions",
    "pure_noise_distraction", "sac_gamma", "sac_tau", "sac_alpha", "sac_policy",
    "sac_target_update_interval", "sac_automatic_entropy_tuning", "sac_target_entropy",
    "sac_hidden_size", "sac_lr", "sac_batch_size", "num_epochs_train_model",
    # VA-MBPO (read with defaults, so `+overrides.model_loss_type=va` works on any override)
    "model_loss_type", "value_update_interval", "num_v_updates_in_model", "v_update_batch_size",
}


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


def _positive(cfg: DictConfig, path: str, allow_zero: bool = False) -> None:
    node = cfg
    for part in path.split("."):
        node = node.get(part) if hasattr(node, "get") else None
    if node is None:
        raise ConfigError(f"{path} is missing")
    ok = node >= 0 if allow_zero else node > 0
    if not isinstance(node, (int, float)) or isinstance(node, bool) or not ok:
        bound = "at least 0" if allow_zero else "positive"
        raise ConfigError(f"{path} must be {bound}, got {node!r}")


def validate_root(cfg: DictConfig) -> None:
    """The root keys every algorithm shares (main.yaml)."""
    if str(cfg.backend) not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {cfg.backend!r}")
    _positive(cfg, "log_frequency_agent")
    _positive(cfg, "checkpoint_every_epochs", allow_zero=True)
    _positive(cfg, "keep_checkpoints")
    resolve_device(cfg.device)


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first problem found in a training config: the root
    keys, then the groups of ``algorithm.name`` (its module's ``validate``)."""
    from .train import algorithm_module

    validate_root(cfg)
    algorithm_module(cfg).validate(cfg)


def validate_mbpo(cfg: DictConfig) -> None:
    """MBPO's config groups (overrides, dynamics_model, algorithm)."""
    o = cfg.overrides
    unknown = sorted(set(o.keys()) - KNOWN_OVERRIDE_KEYS)
    for key in unknown:
        close = difflib.get_close_matches(key, KNOWN_OVERRIDE_KEYS, n=1)
        hint = f" (did you mean overrides.{close[0]}?)" if close else ""
        raise ConfigError(f"unknown key overrides.{key}{hint}")
    try:
        envs.get_task(o.env)
    except ValueError as exc:
        raise ConfigError(f"overrides.env: {exc}") from None
    if o.get("term_fn") not in (None, o.env, "no_termination"):
        raise ConfigError(f"overrides.term_fn={o.term_fn!r} does not match overrides.env="
                          f"{o.env!r}; the termination function follows the task")
    for key in ("num_steps", "epoch_length", "num_elites", "model_batch_size",
                "freq_train_model", "effective_model_rollouts_per_step",
                "sac_updates_every_steps", "num_epochs_to_retain_sac_buffer", "sac_batch_size",
                "sac_hidden_size", "sac_lr", "model_lr", "sac_target_update_interval"):
        _positive(cfg, f"overrides.{key}")
    for key in ("patience", "num_sac_updates_per_step", "model_wd"):
        _positive(cfg, f"overrides.{key}", allow_zero=True)
    if o.get("distraction_dimensions", 0) < 0:
        raise ConfigError(f"overrides.distraction_dimensions must be at least 0, got "
                          f"{o.distraction_dimensions}")
    if not 0.0 <= o.validation_ratio < 1.0:
        raise ConfigError(f"overrides.validation_ratio must be in [0, 1), got "
                          f"{o.validation_ratio}")
    sched = list(o.rollout_schedule)
    if len(sched) != 4 or sched[2] < 1 or sched[3] < 1 or sched[0] > sched[1]:
        raise ConfigError("overrides.rollout_schedule must be [min_epoch, max_epoch, "
                          f"min_length >= 1, max_length >= 1] with min_epoch <= max_epoch, got "
                          f"{sched}")
    m = cfg.dynamics_model.model
    for key in ("num_layers", "ensemble_size", "hid_size"):
        _positive(cfg, f"dynamics_model.model.{key}")
    if o.num_elites > m.ensemble_size:
        raise ConfigError(f"overrides.num_elites={o.num_elites} exceeds "
                          f"dynamics_model.model.ensemble_size={m.ensemble_size}")
    if m.propagation_method not in ("random_model", "fixed_model", "expectation"):
        raise ConfigError("dynamics_model.model.propagation_method must be random_model, "
                          f"fixed_model or expectation, got {m.propagation_method!r}")
    try:
        value_aware_config(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for key in ("value_update_interval", "num_v_updates_in_model"):
        if key in o:
            _positive(cfg, f"overrides.{key}", allow_zero=True)
    if "v_update_batch_size" in o:
        _positive(cfg, "overrides.v_update_batch_size")
    a = cfg.algorithm
    _positive(cfg, "algorithm.initial_exploration_steps", allow_zero=True)
    _positive(cfg, "algorithm.num_eval_episodes")
    if not 0.0 <= a.real_data_ratio <= 1.0:
        raise ConfigError(f"algorithm.real_data_ratio must be in [0, 1], got {a.real_data_ratio}")
    if o.sac_policy != "Gaussian":
        raise ConfigError(f"overrides.sac_policy={o.sac_policy!r}: only 'Gaussian' is supported")
