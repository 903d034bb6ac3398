"""Batched termination functions for the supported tasks, in two equivalent forms.

Convention: ``term_fn(next_obs) -> done``, with ``next_obs [..., O]`` (any float dtype, any
device) and ``done [...]`` bool. Only the observation after the step is read (every supported
rule depends on nothing else), which is also the convention of
:class:`fastmbrl.ops.termination.TerminationRule` and of the rollout kernel.

Each function reads only the task's own leading observation dimensions, so it also works on
observations extended by :class:`fastmbrl.envs.DistractorWrapper` (extra trailing dimensions are
unconstrained; only their finiteness is checked where the rule checks finiteness).

The rules are those of the gymnasium 1.x **v5** environments (and ``CartPole-v1``), read from the
gymnasium sources, with observations in their default layout (x, and for ant/humanoid also y,
excluded). ``RULES`` holds the same rules as data (:class:`TerminationRule`); the test suite checks
that both forms agree with the environment's ``terminated`` flag on random-policy transitions.

Per task (``z`` is the torso height, the first observation entry of every locomotion task)::

    hopper             alive iff 0.7 < z  and  -0.2 < obs[1] < 0.2  and  -100 < obs[1:11] < 100
                       and all finite                                       (strict, as v5)
    walker2d           alive iff 0.8 < z < 2.0  and  -1 < obs[1] < 1  and all finite  (strict)
    ant                alive iff 0.2 <= z <= 1.0  and all finite             (inclusive, as v5)
    humanoid           alive iff 1.0 < z < 2.0  and all finite               (strict, as v5)
    inverted_pendulum  alive iff |obs[1]| <= 0.2  and all finite             (inclusive, as v5)
    halfcheetah        never done
    cartpole_swingup   alive iff |x| <= 1 (obs[0]) and all finite         (envs/cartpole_swingup.py)
    cartpole           alive iff |x| <= 2.4 and |theta| <= 12 deg (obs[0], obs[2]) and all
                       finite                                       (inclusive, as v1)
    pendulum           never done

Differences from the environment (only on non-finite or unobservable states):

- hopper: v5 applies the (-100, 100) range to the *unclipped* joint velocities, the observation
  holds velocities clipped to [-10, 10], so a joint speed above 100 ends the env's episode but is
  invisible here (mbrl-lib's rule has the same blind spot).
- walker2d, humanoid, cartpole: the environment has no finiteness test (a NaN height already
  makes it unhealthy, a NaN velocity does not); here any non-finite entry ends the episode,
  which is what a model rollout wants.

Differences from mbrl-lib 0.2.0's ``mbrl/env/termination_fns.py`` (gym v2 rules, torch,
signature ``(act, next_obs) -> done [N, 1]``; here ``(next_obs) -> done [...]``):

- hopper: the same rule. (VaGraM's fork, pairlab/vagram, carries mbrl-lib's earlier numpy file,
  which writes ``np.abs(next_obs[:, 1:] < 100)``, the absolute value of a boolean, so only the
  upper bound 100 is checked there; mbrl-lib 0.2.0 writes ``(next_obs[:, 1:].abs() < 100)``, as
  v5 and this rule do.)
- humanoid: mbrl-lib's MBPO env ends iff ``z < 1 or z > 2`` (inclusive alive interval, no
  finiteness test); v5 is strict.
- cartpole: mbrl-lib's rule is strict (``-2.4 < x < 2.4``, ``|theta| < 12 deg``); gymnasium's
  CartPole-v1 terminates only *beyond* the thresholds (inclusive alive interval), as here.
- walker2d: no finiteness test in mbrl-lib.
- ant, inverted_pendulum, halfcheetah: the same formulas.

All these differences are on measure-zero boundaries or non-finite/out-of-range states.
"""

from __future__ import annotations

import math

import torch

from fastmbrl.ops.termination import TerminationRule

CARTPOLE_X_THRESHOLD = 2.4
CARTPOLE_SWINGUP_X_LIMIT = 1.0  # envs/cartpole_swingup.py: the episode ends when |x| > 1
CARTPOLE_THETA_THRESHOLD = 12 * 2 * math.pi / 360

_INF = math.inf


def _finite(next_obs: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(next_obs).all(-1)


def hopper(next_obs: torch.Tensor) -> torch.Tensor:
    """Hopper-v5: ``next_obs [..., >=11]`` -> ``done [...]``."""
    z, angle = next_obs[..., 0], next_obs[..., 1]
    alive = (
        _finite(next_obs)
        & (next_obs[..., 1:11].abs() < 100).all(-1)
        & (z > 0.7)
        & (angle > -0.2)
        & (angle < 0.2)
    )
    return ~alive


def walker2d(next_obs: torch.Tensor) -> torch.Tensor:
    """Walker2d-v5: ``next_obs [..., >=17]`` -> ``done [...]``."""
    z, angle = next_obs[..., 0], next_obs[..., 1]
    alive = _finite(next_obs) & (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~alive


def ant(next_obs: torch.Tensor) -> torch.Tensor:
    """Ant-v5 (any observation options): ``next_obs [..., >=27]`` -> ``done [...]``."""
    z = next_obs[..., 0]
    alive = _finite(next_obs) & (z >= 0.2) & (z <= 1.0)
    return ~alive


def humanoid(next_obs: torch.Tensor) -> torch.Tensor:
    """Humanoid-v5 (any observation options): ``next_obs [..., >=45]`` -> ``done [...]``."""
    z = next_obs[..., 0]
    alive = _finite(next_obs) & (z > 1.0) & (z < 2.0)
    return ~alive


def inverted_pendulum(next_obs: torch.Tensor) -> torch.Tensor:
    """InvertedPendulum-v5: ``next_obs [..., >=4]`` -> ``done [...]``."""
    alive = _finite(next_obs) & (next_obs[..., 1].abs() <= 0.2)
    return ~alive


def cartpole(next_obs: torch.Tensor) -> torch.Tensor:
    """CartPole-v1: ``next_obs [..., >=4]`` (x, x_dot, theta, theta_dot) -> ``done [...]``."""
    x, theta = next_obs[..., 0], next_obs[..., 2]
    alive = (
        _finite(next_obs)
        & (x.abs() <= CARTPOLE_X_THRESHOLD)
        & (theta.abs() <= CARTPOLE_THETA_THRESHOLD)
    )
    return ~alive


def cartpole_swingup(next_obs: torch.Tensor) -> torch.Tensor:
    """cartpole_swingup (envs/cartpole_swingup.py): ``next_obs [..., >=5]`` (x, cos θ, sin θ,
    ẋ, θ̇) -> ``done [...]``: the cart left ``|x| <= 1``, or a non-finite entry."""
    alive = _finite(next_obs) & (next_obs[..., 0].abs() <= CARTPOLE_SWINGUP_X_LIMIT)
    return ~alive


def no_termination(next_obs: torch.Tensor) -> torch.Tensor:
    """HalfCheetah, Pendulum: ``next_obs [..., O]`` -> all-False ``done [...]``."""
    return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)


halfcheetah = no_termination
pendulum = no_termination


RULES: dict[str, TerminationRule] = {
    "hopper": TerminationRule(
        lower=(0.7, -0.2) + (-100.0,) * 9,
        upper=(_INF, 0.2) + (100.0,) * 9,
        inclusive=False,
        check_finite=True,
        name="hopper",
    ),
    "walker2d": TerminationRule(
        lower=(0.8, -1.0), upper=(2.0, 1.0), inclusive=False, check_finite=True, name="walker2d"
    ),
    "ant": TerminationRule(
        lower=(0.2,), upper=(1.0,), inclusive=True, check_finite=True, name="ant"
    ),
    "humanoid": TerminationRule(
        lower=(1.0,), upper=(2.0,), inclusive=False, check_finite=True, name="humanoid"
    ),
    "inverted_pendulum": TerminationRule(
        lower=(-_INF, -0.2),
        upper=(_INF, 0.2),
        inclusive=True,
        check_finite=True,
        name="inverted_pendulum",
    ),
    "cartpole": TerminationRule(
        lower=(-CARTPOLE_X_THRESHOLD, -_INF, -CARTPOLE_THETA_THRESHOLD),
        upper=(CARTPOLE_X_THRESHOLD, _INF, CARTPOLE_THETA_THRESHOLD),
        inclusive=True,
        check_finite=True,
        name="cartpole",
    ),
    "cartpole_swingup": TerminationRule(
        lower=(-CARTPOLE_SWINGUP_X_LIMIT,), upper=(CARTPOLE_SWINGUP_X_LIMIT,), inclusive=True,
        check_finite=True, name="cartpole_swingup",
    ),
    "halfcheetah": TerminationRule.never("halfcheetah"),
    "pendulum": TerminationRule.never("pendulum"),
}

TERM_FNS = {
    "hopper": hopper,
    "walker2d": walker2d,
    "ant": ant,
    "humanoid": humanoid,
    "inverted_pendulum": inverted_pendulum,
    "cartpole": cartpole,
    "cartpole_swingup": cartpole_swingup,
    "halfcheetah": halfcheetah,
    "pendulum": pendulum,
}
