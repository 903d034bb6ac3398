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
        self._x = np.concatenate([self._qpos, self._qvel])      # x = [qpos, qvel]
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
    def _arrays(self, states, actions) -> tuple[np.ndarray, np.ndarray]:
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
        return s, a

    def _run(self, s: np.ndarray, a: np.ndarray):
        """Step rows ``s [N, S]`` with ``a [N, A]`` (float64 arrays): ``(next_states [N, S],
        obs [N, O], reward [N], terminated [N])`` as arrays."""
        full = np.ascontiguousarray(s[:, : self.nfull])
        warm = np.ascontiguousarray(s[:, self.nfull:])
        out, _ = rollout.rollout(self.model, self._datas, full, a[:, None, :],
                                 nstep=self.frame_skip, initial_warmstart=warm)
        nxt = out[:, -1, :]
        qpos, qvel = nxt[:, self._qpos], nxt[:, self._qvel]
        obs = self._obs_fn(qpos, qvel)
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
        return (np.concatenate([nxt, warm], 1), obs, reward.numpy().reshape(-1),
                term.numpy().reshape(-1))

    def step(self, states, actions) -> OracleStep:
        """Step every row: ``states [N, S]`` (from :meth:`get_state` or an earlier step) and
        ``actions [N, A]`` (tensors or arrays). Returns tensors in the dtype and on the device of
        ``actions`` (float64 kept for states)."""
        like = actions if torch.is_tensor(actions) else None
        s, a = self._arrays(states, actions)
        next_states, obs, reward, term = self._run(s, a)
        dtype = like.dtype if like is not None else torch.float64
        device = like.device if like is not None else torch.device("cpu")

        def t(x, dt=dtype):
            return torch.as_tensor(x).to(device=device, dtype=dt)

        return OracleStep(t(obs), t(reward), t(term, torch.bool), t(next_states, torch.float64))

    # ---- gradients: finite differences of the whole environment step -------------------------
    @property
    def x_size(self) -> int:
        """Size of the differentiable part of a state: ``x = [qpos, qvel]``."""
        return self.nq + self.nv

    def positions(self, states: torch.Tensor) -> torch.Tensor:
        """``x = [qpos, qvel]`` ``[N, nq + nv]`` of states ``[N, S]`` (float64)."""
        return states[:, self._x].to(torch.float64)

    def with_positions(self, states: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``states`` with their qpos and qvel replaced by ``x [N, nq + nv]``."""
        s = states.copy()
        s[:, self._x] = x
        return s

    def _outputs(self, next_states: np.ndarray, obs: np.ndarray, reward: np.ndarray):
        """``y = [x' (nq + nv), obs' (O), reward (1)]`` ``[N, P]`` of stepped rows."""
        return np.concatenate([next_states[:, self._x], obs, reward[:, None]], 1)

    def jacobians(self, states, actions, eps: float = 1e-6, centered: bool = True):
        """The step of every row and its Jacobian, by finite differences of the whole
        environment step (``frame_skip`` physics steps, observation and reward functions).

        Every row is stepped ``1 + K`` (one-sided) or ``1 + 2K`` (centred) times in one batched
        ``mujoco.rollout`` call, K = nq + nv + nu: the state's qpos and qvel and the action
        perturbed by ``±eps`` one coordinate at a time (the solver's warm start kept).

        Returns ``(next_states [N, S], y [N, P], terminated [N], J [N, P, K])``, all numpy
        float64, with ``y = [x' (nq + nv), obs' (O), reward (1)]`` and ``J = ∂y/∂[x, a]``.
        """
        if self.nq != self.nv:
            raise ValueError(f"MujocoOracle({self.task}).jacobians: qpos and qvel differ in size "
                             "(ball or free joints); finite differences in qpos coordinates "
                             "need nq == nv")
        s, a = self._arrays(states, actions)
        N, nx, K = s.shape[0], self.x_size, self.x_size + self.nu
        x = s[:, self._x]
        signs = (1.0, -1.0) if centered else (1.0,)
        R = 1 + len(signs) * K
        dx = np.zeros((R, K))
        for j, sign in enumerate(signs):
            dx[1 + j * K + np.arange(K), np.arange(K)] = sign * eps
        xb = (x[:, None, :] + dx[None, :, :nx]).reshape(N * R, nx)
        ab = (a[:, None, :] + dx[None, :, nx:]).reshape(N * R, self.nu)
        sb = self.with_positions(np.repeat(s, R, axis=0), xb)
        nxt, obs, reward, term = self._run(sb, ab)
        y = self._outputs(nxt, obs, reward).reshape(N, R, -1)
        if centered:
            J = (y[:, 1: 1 + K] - y[:, 1 + K:]) / (2 * eps)        # [N, K, P]
        else:
            J = (y[:, 1:] - y[:, :1]) / eps
        centre = np.arange(N) * R
        return nxt[centre], y[:, 0], term[centre], np.ascontiguousarray(J.transpose(0, 2, 1))

    def differentiable_step(self, states: torch.Tensor, x: torch.Tensor, actions: torch.Tensor,
                            eps: float = 1e-6, centered: bool = True,
                            jac_clip: float | None = None):
        """One step of every row with gradients (:class:`OracleStepFunction`): ``states [N, S]``
        supply what is not differentiated (time, warm start), ``x [N, nq + nv]`` float64 the
        positions and velocities, ``actions [N, A]``. Returns ``(next_x [N, nq + nv] float64,
        next_obs [N, O], reward [N] in the actions' dtype, terminated [N] bool,
        next_states [N, S])``; backward applies the finite-difference Jacobians of
        :meth:`jacobians`, each entry clipped to ``±jac_clip`` when given."""
        return OracleStepFunction.apply(x, actions, self, states, float(eps), bool(centered),
                                        jac_clip)


class OracleStepFunction(torch.autograd.Function):
    """``(x, a) -> (x', obs', r, terminated, next_states)`` through MuJoCo, differentiable in
    ``x`` and ``a`` by finite differences (MujocoOracle.differentiable_step)."""

    @staticmethod
    def forward(ctx, x, actions, oracle, states, eps, centered, jac_clip):
        s = oracle.with_positions(states.detach().cpu().numpy().astype(np.float64),
                                  x.detach().cpu().numpy().astype(np.float64))
        a = actions.detach().cpu().numpy().astype(np.float64)
        nx = oracle.x_size
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            nxt, y, term, J = oracle.jacobians(s, a, eps, centered)
            J = torch.from_numpy(J).to(x.device)
            if jac_clip is not None:
                J = J.clamp(-float(jac_clip), float(jac_clip))
            ctx.save_for_backward(J)
        else:
            nxt, obs, reward, term = oracle._run(*oracle._arrays(s, a))
            y = oracle._outputs(nxt, obs, reward)
        ctx.nx, ctx.a_dtype = nx, actions.dtype
        y = torch.from_numpy(y).to(x.device)
        next_x = y[:, :nx].to(torch.float64)
        next_obs = y[:, nx:-1].to(actions.dtype)
        reward = y[:, -1].to(actions.dtype)
        terminated = torch.from_numpy(term).to(device=x.device, dtype=torch.bool)
        next_states = torch.from_numpy(nxt).to(x.device)
        ctx.mark_non_differentiable(terminated, next_states)
        return next_x, next_obs, reward, terminated, next_states

    @staticmethod
    def backward(ctx, g_x, g_obs, g_r, _g_term, _g_states):
        (J,) = ctx.saved_tensors
        g = torch.cat([g_x.to(J.dtype), g_obs.to(J.dtype), g_r.to(J.dtype)[:, None]], 1)
        g_in = torch.einsum("np,npk->nk", g, J)
        return (g_in[:, : ctx.nx], g_in[:, ctx.nx:].to(ctx.a_dtype), None, None, None, None,
                None)
