"""Run-directory infrastructure: results logging, checkpoints and resume, plotting, progress.

A run directory (see ``docs/runs.md``) holds::

    .lock                                   the run-directory lock (rundir.RunLock)
    config.yaml, .hydra/config.yaml         the resolved config
    train.log                               what the run reported (runs.logger.say)
    results.csv                             evaluation rows: env_step, episode_return, ...
    train.csv (and other <group>.csv)       training scalars: losses, ...
    checkpoints/ckpt_<step>.pt              atomic, checksummed checkpoints
    tb/                                     TensorBoard event files
    wandb/                                  only when wandb is enabled

``RunLogger`` writes the CSVs, TensorBoard and (optionally) wandb; ``save_checkpoint`` /
``load_checkpoint`` / ``latest_checkpoint`` and ``rng_state`` / ``set_rng_state`` make a killed
run resumable; ``RunLock`` and ``prepare_run_dir`` (``runs.rundir``) are the lock and the
restart rules ``fastmbrl.train.run`` applies to every algorithm; ``fastmbrl plot``
(``runs.plot``) draws mean and spread across seeds.
"""

from .checkpoint import (
    CheckpointError,
    checkpoint_info,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    save_run_checkpoint,
    set_rng_state,
)
from .logger import RunLogger, read_csv, write_config
from .progress import StepProgress
from .rundir import RunDirError, RunLock, prepare_run_dir

__all__ = [
    "CheckpointError",
    "RunDirError",
    "RunLock",
    "RunLogger",
    "StepProgress",
    "checkpoint_info",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "prepare_run_dir",
    "prune_checkpoints",
    "read_csv",
    "rng_state",
    "save_checkpoint",
    "save_run_checkpoint",
    "set_rng_state",
    "write_config",
]
