"""``fastmbrl train``: Hydra entry point of every training run.

    fastmbrl train algorithm=mbpo overrides=mbpo_hopper dynamics_model=gaussian_mlp_ensemble \\
        seed=0 device=cuda

The run directory (``root_dir/algorithm/experiment/env/seedN``) holds the resolved config
(``config.yaml``, and Hydra's ``.hydra/``), the results CSVs, checkpoints and TensorBoard logs;
``resume=true`` continues it from its last checkpoint. See docs/runs.md.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from . import _native
from .config import ConfigError, resolve_device, validate
from .runs.checkpoint import latest_checkpoint

# algorithm.name -> the module that runs it. Each module has ``validate(cfg)`` (its config
# groups against their schemas; raises ConfigError) and ``train(cfg, run_dir, device)``.
ALGORITHMS = {
    "mbpo": "fastmbrl.algorithms.mbpo",
    "mbnpg": "fastmbrl.algorithms.mbnpg",
}


def algorithm_module(cfg: DictConfig):
    """The module of ``cfg.algorithm.name`` (a ConfigError names the available ones)."""
    name = cfg.get("algorithm", {}).get("name")
    if name not in ALGORITHMS:
        raise ConfigError(f"algorithm.name={name!r}: available {', '.join(ALGORITHMS)}")
    return importlib.import_module(ALGORITHMS[name])


def run(cfg: DictConfig, run_dir: str | Path) -> float:
    """Validate ``cfg`` and run its algorithm in ``run_dir``; returns the best eval return."""
    algo = algorithm_module(cfg)
    validate(cfg)
    run_dir = Path(run_dir)
    existing = latest_checkpoint(run_dir) if run_dir.exists() else None
    if existing is not None and not cfg.resume:
        raise ConfigError(
            f"run directory {run_dir} already holds a checkpoint ({existing.name}); pass "
            "resume=true to continue it, or choose another experiment=, seed= or root_dir=")
    if cfg.resume and existing is None:
        print(f"resume=true: no checkpoint in {run_dir}, starting a new run")
    device = resolve_device(cfg.device)
    _native.set_backend(str(cfg.backend))
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return algo.train(cfg, run_dir, device)


@hydra.main(config_path="conf", config_name="main", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float:
    try:
        return run(cfg, HydraConfig.get().runtime.output_dir)
    except ConfigError as exc:
        print(f"fastmbrl train: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def main(overrides: list[str]) -> int:
    """Run ``fastmbrl train OVERRIDES...`` (Hydra's own flags such as ``-m`` work too)."""
    sys.argv = ["fastmbrl train", *overrides]
    _hydra_main()
    return 0
