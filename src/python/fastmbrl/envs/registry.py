"""Task registry and ``make_env``.

A task is a short name (``"hopper"``) for one gymnasium environment with fixed options, plus
what model-based algorithms need to know about it without stepping it: observation/action sizes,
episode length, the termination rule (as data and as a torch function) and, where it can be
computed from observations, the reward function.

``ant`` and ``humanoid`` are MBPO's truncated-observation variants (mbrl-lib's
``ant_truncated_obs.py`` / ``humanoid_truncated_obs.py``): positions without x, y and the
velocities, nothing else. In v5 this is done by the environments' own options::

    Ant-v5       include_cfrc_ext_in_observation=False                      -> 27 dims
    Humanoid-v5  include_cinert/cvel/qfrc_actuator/cfrc_ext_in_observation
                 = False                                                     -> 45 dims

(Ant-v5 keeps its contact cost in the reward either way; see ``reward_fns``.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import torch

from fastmbrl.envs import reward_fns as _rf
from fastmbrl.envs import termination_fns as _tf
from fastmbrl.envs.distractor import DistractorWrapper
from fastmbrl.ops.termination import TerminationRule

TermFn = Callable[[torch.Tensor], torch.Tensor]
RewardFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class TaskSpec:
    """What is known about a task without stepping it.

    Attributes:
        name: task name (registry key).
        gym_id: gymnasium id.
        obs_dim: observation size O (without distractors).
        act_dim: action size A; for a discrete action space (cartpole), the number of actions.
        discrete: whether actions are indices (``Discrete``) rather than a ``Box``.
        max_episode_steps: the gymnasium time limit (truncation).
        env_kwargs: options passed to ``gymnasium.make`` (the rule and reward assume them).
        frame_skip: physics steps per env step of a MuJoCo task (None otherwise);
            ``make_env(..., action_repeat=k)`` multiplies it by k.
        rule: termination rule as data (``TerminationRule.never`` for never-terminating tasks).
        term_fn: ``term_fn(next_obs [..., O]) -> done [...]`` bool.
        reward_fn: ``reward_fn(obs, act, next_obs) -> [...]`` or None (see ``reward_fns``).
        reward_exact: whether ``reward_fn`` reproduces the env's reward from observations alone.
    """

    name: str
    gym_id: str
    obs_dim: int
    act_dim: int
    discrete: bool
    max_episode_steps: int
    rule: TerminationRule
    term_fn: TermFn
    reward_fn: RewardFn | None
    reward_exact: bool
    env_kwargs: dict = field(default_factory=dict)
    frame_skip: int | None = None


def _spec(name, gym_id, obs_dim, act_dim, max_steps, discrete=False, frame_skip=None,
          **env_kwargs) -> TaskSpec:
    return TaskSpec(
        name=name,
        gym_id=gym_id,
        obs_dim=obs_dim,
        act_dim=act_dim,
        discrete=discrete,
        max_episode_steps=max_steps,
        rule=_tf.RULES[name],
        term_fn=_tf.TERM_FNS[name],
        reward_fn=_rf.REWARD_FNS[name],
        reward_exact=name in _rf.EXACT_REWARD,
        env_kwargs=env_kwargs,
        frame_skip=frame_skip,
    )


SWINGUP_ID = "fastmbrl/CartpoleSwingup-v0"  # envs/cartpole_swingup.py

_HUMANOID_TRUNCATED = dict(
    include_cinert_in_observation=False,
    include_cvel_in_observation=False,
    include_qfrc_actuator_in_observation=False,
    include_cfrc_ext_in_observation=False,
)

TASKS: dict[str, TaskSpec] = {
    s.name: s
    for s in (
        _spec("hopper", "Hopper-v5", 11, 3, 1000, frame_skip=4),
        _spec("walker2d", "Walker2d-v5", 17, 6, 1000, frame_skip=4),
        _spec("halfcheetah", "HalfCheetah-v5", 17, 6, 1000, frame_skip=5),
        _spec("ant", "Ant-v5", 27, 8, 1000, frame_skip=5, include_cfrc_ext_in_observation=False),
        _spec("humanoid", "Humanoid-v5", 45, 17, 1000, frame_skip=5, **_HUMANOID_TRUNCATED),
        _spec("inverted_pendulum", "InvertedPendulum-v5", 4, 1, 1000, frame_skip=2),
        _spec("cartpole_swingup", SWINGUP_ID, 5, 1, 1000, frame_skip=2),
        _spec("cartpole", "CartPole-v1", 4, 2, 500, discrete=True),
        _spec("pendulum", "Pendulum-v1", 3, 1, 200),
    )
}


def _register_swingup() -> None:
    if SWINGUP_ID not in gym.registry:
        gym.register(id=SWINGUP_ID, max_episode_steps=1000,
                     entry_point="fastmbrl.envs.cartpole_swingup:CartpoleSwingupEnv")


_register_swingup()


def get_task(task: str) -> TaskSpec:
    """The :class:`TaskSpec` of ``task``; a ``ValueError`` naming the known tasks otherwise."""
    try:
        return TASKS[task]
    except KeyError:
        raise ValueError(
            f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}"
        ) from None


def termination_rule(task: str, distraction_dimensions: int = 0) -> TerminationRule | None:
    """The task's rule as data, over ``obs_dim + distraction_dimensions`` dimensions.

    Every supported task has a box rule (``TerminationRule.never`` for halfcheetah and
    pendulum); ``None`` is reserved for future tasks whose rule is not a box.
    """
    spec = get_task(task)
    return spec.rule.padded(spec.obs_dim + int(distraction_dimensions))


def term_fn(task: str) -> TermFn:
    """``term_fn(next_obs [..., O]) -> done [...]`` of ``task`` (distractor dims ignored)."""
    return get_task(task).term_fn


def reward_fn(task: str) -> RewardFn | None:
    """``reward_fn(obs, act, next_obs) -> [...]`` of ``task``, or None (humanoid)."""
    return get_task(task).reward_fn


def make_env(
    task: str,
    seed: int | None = None,
    distraction_dimensions: int = 0,
    pure_noise_distraction: bool = False,
    action_repeat: int = 1,
    **kwargs,
) -> gym.Env:
    """Build the environment of ``task``.

    Args:
        task: a key of ``TASKS``.
        seed: if given, the env is reset once with it (seeding its ``np_random``; later
            ``reset()`` calls continue that stream), its action and observation spaces are
            seeded, and the distractor parameters are drawn from it. Two envs made with the same
            seed (e.g. train and test) therefore have the same distractor dynamics.
        distraction_dimensions: D > 0 wraps the env in :class:`DistractorWrapper` (VaGraM).
        pure_noise_distraction: the distractor dims are N(0, 1) noise.
        action_repeat: k > 1 multiplies a MuJoCo task's ``frame_skip`` by k: one step is k
            times as long, with one reward computed by the env over the whole step (the
            value-expansion seed's brax fork does likewise), and the time limit is
            ``ceil(max_episode_steps / k)`` steps. Other tasks accept only 1.
        **kwargs: passed to ``gymnasium.make`` over the task's options (e.g. ``render_mode``).
            Options that change the termination rule or the reward (``healthy_z_range``,
            weights, observation options) make the spec's functions wrong for this env.

    Returns:
        The environment, with gymnasium's usual ``TimeLimit`` (``max_episode_steps``).
    """
    spec = get_task(task)
    k = int(action_repeat)
    if k < 1:
        raise ValueError(f"make_env: action_repeat must be >= 1, got {action_repeat}")
    if k > 1:
        if spec.frame_skip is None:
            raise ValueError(f"make_env: action_repeat={k} needs a MuJoCo task; {task!r} is not "
                             "one (its steps cannot be lengthened)")
        kwargs = {"frame_skip": spec.frame_skip * k,
                  "max_episode_steps": -(-spec.max_episode_steps // k), **kwargs}
    env = gym.make(spec.gym_id, **{**spec.env_kwargs, **kwargs})
    if distraction_dimensions:
        env = DistractorWrapper(
            env, int(distraction_dimensions), pure_noise=pure_noise_distraction, seed=seed
        )
    elif pure_noise_distraction:
        raise ValueError("pure_noise_distraction=True needs distraction_dimensions > 0")
    if seed is not None:
        env.reset(seed=int(seed))
        env.action_space.seed(int(seed))
        env.observation_space.seed(int(seed))
    return env
