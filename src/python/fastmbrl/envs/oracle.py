"""MuJoCo as the model: the value-expansion seed's "analytic" oracle, without brax.

The seed's oracle stepped its brax environment from simulator states stored in the replay
buffer. Here the buffer stores each transition's MuJoCo state and :class:`MujocoOracle` steps a
batch of them with ``mujoco.rollout`` (a thread pool over rows, one ``MjData`` per thread),
then computes the next observation, reward and termination from the new states exactly as the
gymnasium v5 environment's ``step`` does::

    state          [mjSTATE_FULLPHYSICS (time, qpos, qvel, act, ...), qacc_warmstart]   S floats
    step           ctrl = action, k · frame_skip mj_steps (k = action_repeat)
    next_obs       the task's observation of (qpos, qvel) after the step
    reward         the env's reward: reward_fns with the exact x-velocity (x_after − x_before)/dt
    terminated     termination_fns on the observation (hopper: on the unclipped velocities,
                   as the env's health check)

One step from a state read off the environment reproduces ``env.step`` (tests/test_oracle.py:
observations bitwise, rewards to 1e-12 — the sums of squared actions are added in another
order than numpy's — terminations exactly). The warm start of the constraint solver is part of
the state; ``mujoco.rollout`` does not return it, so the states after an oracle step carry the
warm start they started from (a chained step then differs from the env's by the solver's
tolerance, where constraints are active).

Supported tasks: inverted_pendulum, cartpole_swingup, hopper, walker2d, halfcheetah.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import mujoco
import numpy as np
import torch
from mujoco import rollout

from . import registry
from . import reward_fns as rf

_FULL = mujoco.mjtState.mjSTATE_FULLPHYSICS


class OracleStep(NamedTuple):
    """``next_obs [N, O]``, ``reward [N]``, ``terminated [N]`` bool, ``next_states [N, S]``."""

    next_obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    next_states: torch.Tensor


def _obs_qpos1_clipped_qvel(qpos, qvel):     # hopper, walker2d: clip(qvel, -10, 10)
    return np.concatenate([qpos[:, 1:], np.clip(qvel, -10.0, 10.0)], 1)


def _obs_qpos1_qvel(qpos, qvel):             # halfcheetah
    return np.concatenate([qpos[:, 1:], qvel], 1)


def _obs_qpos_qvel(qpos, qvel):              # inverted_pendulum
    return np.concatenate([qpos, qvel], 1)


def _obs_swingup(qpos, qvel):                # cartpole_swingup: x, cos θ, sin θ, ẋ, θ̇
    return np.stack([qpos[:, 0], np.cos(qpos[:, 1]), np.sin(qpos[:, 1]), qvel[:, 0],
                     qvel[:, 1]], 1)


# task -> (observation of (qpos, qvel), uses the x-velocity in its reward)
_TASKS = {
    "inverted_pendulum": (_obs_qpos_qvel, False),
    "cartpole_swingup": (_obs_swingup, False),
    "hopper": (_obs_qpos1_clipped_qvel, True),
    "walker2d": (_obs_qpos1_clipped_qvel, True),
    "halfcheetah": (_obs_qpos1_qvel, True),
}


def _unwrap_mujoco(env):
    e = env.unwrapped
    if not hasattr(e, "model") or not hasattr(e, "data"):
        raise ValueError(f"MujocoOracle: {type(e).__name__} is not a MuJoCo environment")
    return e


class MujocoOracle:
    """Batched MuJoCo steps from stored states (module docstring).

    Args:
        task: one of ``inverted_pendulum``, ``cartpole_swingup``, ``hopper``, ``walker2d``,
            ``halfcheetah``.
        action_repeat: as ``make_env(..., action_repeat=k)``: k · frame_skip physics steps.
        num_threads: threads of ``mujoco.rollout`` (default: the CPU count, at most 8).
    """

    def __init__(self, task: str, action_repeat: int = 1, num_threads: int | None = None):
        if task not in _TASKS:
            raise ValueError(f"MujocoOracle: no oracle for task {task!r}; supported: "
                             f"{', '.join(_TASKS)}")
        self.task = task
        env = registry.make_env(task, action_repeat=action_repeat)
        e = env.unwrapped
        self.model = e.model
        self.frame_skip = int(e.frame_skip)
        self.dt = float(e.dt)
        env.close()
        m = self.model
        self.nq, self.nv, self.nu = m.nq, m.nv, m.nu
        self.nfull = mujoco.mj_stateSize(m, _FULL)
        self.state_size = self.nfull + m.nv                     # + qacc_warmstart
        self._qpos = 1 + np.arange(m.nq)                         # after time
        self._qvel = 1 + m.nq + np.arange(m.nv)
        n = num_threads or min(os.cpu_count() or 1, 8)
        self.num_threads = max(1, int(n))
        self._datas = [mujoco.MjData(m) for _ in range(self.num_threads)]
        self._obs_fn, self._uses_x_vel = _TASKS[task]
        self.obs_dim = registry.get_task(task).obs_dim
        self.act_dim = m.nu

    # ---- states ------------------------------------------------------------------------------
    def get_state(self, env) -> np.ndarray:
        """The full simulator state ``[S]`` float64 of a (possibly wrapped) env of this task."""
        e = _unwrap_mujoco(env)
        if e.model.nq != self.nq or e.model.nv != self.nv:
            raise ValueError(f"MujocoOracle({self.task}).get_state: the env's model (nq="
                             f"{e.model.nq}, nv={e.model.nv}) is not this task's (nq={self.nq}, "
                             f"nv={self.nv})")
        out = np.empty(self.state_size)
        mujoco.mj_getState(e.model, e.data, out[: self.nfull], _FULL)
        out[self.nfull:] = e.data.qacc_warmstart
        return out

    def get_states(self, envs) -> np.ndarray:
        """``[N, S]`` of a list of envs (e.g. a vector env's ``envs``)."""
        return np.stack([self.get_state(e) for e in envs])

    # ---- stepping ----------------------------------------------------------------------------
    def step(self, states, actions) -> OracleStep:
        """Step every row: ``states [N, S]`` (from :meth:`get_state` or an earlier step) and
        ``actions [N, A]`` (tensors or arrays). Returns tensors in the dtype and on the device of
        ``actions`` (float64 kept for states)."""
        like = actions if torch.is_tensor(actions) else None
        s = (states.detach().cpu().numpy() if torch.is_tensor(states)
             else np.asarray(states)).astype(np.float64, copy=False)
        a = (actions.detach().cpu().numpy() if torch.is_tensor(actions)
             else np.asarray(actions)).astype(np.float64, copy=False)
        if s.ndim != 2 or s.shape[1] != self.state_size:
            raise ValueError(f"MujocoOracle.step: states must be [N, {self.state_size}], got "
                             f"{list(s.shape)}")
        if a.ndim != 2 or a.shape != (s.shape[0], self.nu):
            raise ValueError(f"MujocoOracle.step: actions must be [{s.shape[0]}, {self.nu}] "
                             f"(one row per state), got {list(a.shape)}")
        N = s.shape[0]
        nstep = self.frame_skip
        full, warm = np.ascontiguousarray(s[:, : self.nfull]), np.ascontiguousarray(
            s[:, self.nfull:])
        out, _ = rollout.rollout(self.model, self._datas, full, a[:, None, :], nstep=nstep,
                                 initial_warmstart=warm)
        nxt = out[:, -1, :]
        qpos, qvel = nxt[:, self._qpos], nxt[:, self._qvel]
        obs = self._obs_fn(qpos, qvel)
        next_states = np.concatenate([nxt, warm], 1)
        # reward and termination: the task's functions in float64 on the exact state
        obs_t, act_t = torch.from_numpy(obs), torch.from_numpy(a)
        # the env's health check reads the unclipped velocities (hopper): the reward and
        # termination functions get the observation with unclipped velocities where that differs
        health_obs = (torch.from_numpy(_obs_qpos1_qvel(qpos, qvel)) if self.task == "hopper"
                      else obs_t)
        term = registry.term_fn(self.task)(health_obs)
        if self._uses_x_vel:
            x_vel = torch.from_numpy((qpos[:, 0] - full[:, self._qpos[0]]) / self.dt)
            reward = rf.REWARD_FNS[self.task](obs_t, act_t, health_obs, x_velocity=x_vel)
        else:
            reward = rf.REWARD_FNS[self.task](obs_t, act_t, health_obs)
        dtype = like.dtype if like is not None else torch.float64
        device = like.device if like is not None else torch.device("cpu")

        def t(x, dt=dtype):
            return torch.as_tensor(x).to(device=device, dtype=dt)

        return OracleStep(t(obs), t(reward), t(term, torch.bool),
                          t(next_states, torch.float64).reshape(N, self.state_size))
