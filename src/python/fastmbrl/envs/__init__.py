"""Environments: task registry, ``make_env``, termination and reward functions, distractors.

Conventions: ``term_fn(next_obs [..., O]) -> done [...]`` (bool) and
``reward_fn(obs, act, next_obs) -> reward [...]``, batched torch on any device. See
``termination_fns`` and ``reward_fns`` for the exact rule of each task.
"""

from fastmbrl.envs import reward_fns, termination_fns
from fastmbrl.envs.distractor import DistractorWrapper
from fastmbrl.envs.registry import (
    TASKS,
    TaskSpec,
    get_task,
    make_env,
    reward_fn,
    term_fn,
    termination_rule,
)

__all__ = [
    "TASKS",
    "DistractorWrapper",
    "TaskSpec",
    "get_task",
    "make_env",
    "reward_fn",
    "reward_fns",
    "term_fn",
    "termination_fns",
    "termination_rule",
]
