"""Batched reward functions ``reward_fn(obs, act, next_obs) -> reward [...]``.

Shapes: ``obs [..., O]``, ``act [..., A]`` (cartpole: ``[...]`` or ``[..., 1]`` action index,
unused), ``next_obs [..., O]``, result ``[...]`` in the dtype of ``next_obs``. Extra trailing
observation dimensions (distractors) are ignored.

Exact (equal to the environment's reward up to float rounding):

- ``cartpole`` (CartPole-v1, default reward): ``+1`` on every step, the terminating one included.
- ``pendulum`` (Pendulum-v1): ``-(theta^2 + 0.1 theta_dot^2 + 0.001 u^2)`` with ``theta =
  atan2(sin, cos)`` of the *current* observation ``obs`` and ``u = clip(act, -2, 2)``.
- ``inverted_pendulum`` (InvertedPendulum-v5): ``1`` while alive after the step, else ``0``.
- ``cartpole_swingup`` (envs/cartpole_swingup.py, the value-expansion seed's swing-up):
  dm_control's smooth reward of the state after the step (the env computes it with this
  function).

Locomotion (v5 formulas, weights of the v5 defaults)::

    halfcheetah  r = v_x - 0.1 |a|^2
    hopper       r = v_x + 1[alive'] - 1e-3 |a|^2
    walker2d     r = v_x + 1[alive'] - 1e-3 |a|^2
    ant          r = v_x + 1[alive'] - 0.5 |a|^2 - 5e-4 |clip(cfrc_ext, -1, 1)|^2

``v_x`` is the environment's ``(x_after - x_before) / dt``. The x position is not observed, so
``v_x`` is exact only when passed in (``x_velocity=info["x_velocity"]``, shape ``[...]``);
otherwise it is approximated by the trapezoid ``(qvel_x(obs) + qvel_x(next_obs)) / 2`` of the
observed root x-velocities (hopper and walker2d observe velocities clipped to [-10, 10]).
On random-policy data the trapezoid's mean absolute error is about 0.002 (hopper), 0.008
(walker2d), 0.06 (ant) and 0.14 (halfcheetah, Euler integrator) per step, against 0.04, 0.11,
0.16 and 0.22 for the end-of-step velocity alone (which is what mbrl-lib's and mjrl's reward
files use).

Ant's contact cost needs ``cfrc_ext``, which MBPO's truncated observation (the ``ant`` task)
does not hold: pass ``contact_cost=-info["reward_contact"]`` for the exact reward, otherwise it is
left out (it is at most 5e-4 * 78 = 0.039 per step, and usually far smaller).

Humanoid has no reward function: its forward term is the velocity of the centre of mass, which
is not observed (use ``info["x_velocity"]`` and the env's own reward).
"""

from __future__ import annotations

import math

import torch

from fastmbrl.envs import termination_fns as tf


def _as_float(act: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return act.to(dtype=like.dtype)


def _ctrl(act: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return _as_float(act, like).square().sum(-1)


def _forward(obs, next_obs, index: int, x_velocity: torch.Tensor | None) -> torch.Tensor:
    if x_velocity is not None:
        return x_velocity.to(dtype=next_obs.dtype)
    return 0.5 * (obs[..., index] + next_obs[..., index])


def cartpole(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """CartPole-v1: ``+1`` per step (exact)."""
    return torch.ones(next_obs.shape[:-1], dtype=next_obs.dtype, device=next_obs.device)


def pendulum(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Pendulum-v1: ``obs = (cos th, sin th, th_dot)`` before the step, ``act [..., 1]`` (exact)."""
    theta = torch.atan2(obs[..., 1], obs[..., 0])
    u = _as_float(act, obs)[..., 0].clamp(-2.0, 2.0)
    return -(theta.square() + 0.1 * obs[..., 2].square() + 0.001 * u.square())


def inverted_pendulum(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """InvertedPendulum-v5: ``1`` if alive after the step, else ``0`` (exact)."""
    return (~tf.inverted_pendulum(next_obs)).to(next_obs.dtype)


_GAUSS = math.sqrt(-2.0 * math.log(0.1))  # dm_control's gaussian tolerance: 0.1 at the margin


def _tolerance(v: torch.Tensor, margin: float) -> torch.Tensor:
    return torch.exp(-0.5 * (v.abs() / margin * _GAUSS) ** 2)


def cartpole_swingup(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """cartpole_swingup: ``upright · centered · small_control · small_velocity`` of the state
    after the step (``next_obs`` = x, cos θ, sin θ, ẋ, θ̇; ``act [..., 1]`` in [−3, 3]); the
    factors are in envs/cartpole_swingup.py's docstring (exact: the env uses this function)."""
    x, cos, ang_vel = next_obs[..., 0], next_obs[..., 1], next_obs[..., 4]
    u = _as_float(act, next_obs)[..., 0] / 3.0
    upright = (cos + 1) / 2
    centered = (1 + _tolerance(x, 2.0)) / 2
    small_control = (4 + torch.clamp(1 - u.square(), min=0.0)) / 5
    small_velocity = (1 + _tolerance(ang_vel, 5.0)) / 2
    return upright * centered * small_control * small_velocity


def halfcheetah(obs, act, next_obs, x_velocity: torch.Tensor | None = None) -> torch.Tensor:
    """HalfCheetah-v5: ``v_x - 0.1 |a|^2``; root x-velocity is ``obs[..., 8]``."""
    return _forward(obs, next_obs, 8, x_velocity) - 0.1 * _ctrl(act, next_obs)


def hopper(obs, act, next_obs, x_velocity: torch.Tensor | None = None) -> torch.Tensor:
    """Hopper-v5: ``v_x + 1[alive] - 1e-3 |a|^2``; root x-velocity is ``obs[..., 5]``."""
    healthy = (~tf.hopper(next_obs)).to(next_obs.dtype)
    return _forward(obs, next_obs, 5, x_velocity) + healthy - 1e-3 * _ctrl(act, next_obs)


def walker2d(obs, act, next_obs, x_velocity: torch.Tensor | None = None) -> torch.Tensor:
    """Walker2d-v5: ``v_x + 1[alive] - 1e-3 |a|^2``; root x-velocity is ``obs[..., 8]``."""
    healthy = (~tf.walker2d(next_obs)).to(next_obs.dtype)
    return _forward(obs, next_obs, 8, x_velocity) + healthy - 1e-3 * _ctrl(act, next_obs)


def ant(
    obs,
    act,
    next_obs,
    x_velocity: torch.Tensor | None = None,
    contact_cost: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ant-v5: ``v_x + 1[alive] - 0.5 |a|^2 - contact_cost``; root x-velocity is ``obs[..., 13]``.

    ``contact_cost [...]`` (positive) is left out unless given: the truncated observation does
    not hold the contact forces.
    """
    healthy = (~tf.ant(next_obs)).to(next_obs.dtype)
    r = _forward(obs, next_obs, 13, x_velocity) + healthy - 0.5 * _ctrl(act, next_obs)
    if contact_cost is not None:
        r = r - contact_cost.to(dtype=next_obs.dtype)
    return r


REWARD_FNS = {
    "cartpole": cartpole,
    "pendulum": pendulum,
    "inverted_pendulum": inverted_pendulum,
    "cartpole_swingup": cartpole_swingup,
    "halfcheetah": halfcheetah,
    "hopper": hopper,
    "walker2d": walker2d,
    "ant": ant,
    "humanoid": None,
}

#: Reward functions that reproduce the environment's reward from ``(obs, act, next_obs)`` alone.
EXACT_REWARD = frozenset({"cartpole", "pendulum", "inverted_pendulum", "cartpole_swingup"})
