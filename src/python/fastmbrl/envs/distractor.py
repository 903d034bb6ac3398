"""VaGraM's distracting observation dimensions (``mbrl/env/distractor_dimensions.py``).

The observation becomes ``[obs, d]`` with ``d`` in R^D, evolving independently of the task
(VaGraM's ``linear=False, switching=True, correlated=False``). On every observation, the reset's
included::

    d <- A d                          A [D, D] ~ N(0, 1)
    d <- d + 0.1 * sin(P d)           P [D, D] = N(0, 10)^2 elementwise (so P >= 0)
    d_i <- c_i  where |d_i| > 20      c [D] ~ N(0, 1), fixed ("switching" reset)

and at reset ``d ~ N(0, 0.1^2)`` *before* that update, so the first observed ``d`` is one update
of it (as in the original, whose ``reset`` calls ``observation``). The original writes the sine
term as ``0.1 * sum(sin(P[None] @ d), axis=0)``; that sum runs over a size-1 axis, so it is the
plain elementwise ``0.1 * sin(P d)`` above. With ``pure_noise=True``, ``d ~ N(0, 1)`` afresh on
every observation (the dynamics above are not used).

Random streams (the fix of the original's train/test bug). The original draws A, P and c from
numpy's *global* RNG at construction; MBPO's ``main.py`` builds the train env before
``np.random.seed`` and the test env after it, so the two envs had *different* distractor
dynamics. Here:

- A, P, c come from ``numpy.random.default_rng([seed, 0])``, with ``seed`` the wrapper's
  argument (``make_env`` passes its own seed), so two wrappers built with the same seed have the
  same dynamics. With ``seed=None`` they are drawn at the first ``reset(seed=s)`` from ``s``
  (from fresh entropy if that reset has no seed either).
- the initial ``d`` and the pure noise come from a separate generator, reseeded by
  ``reset(seed=s)`` from ``[s, 1]`` and left running by ``reset()``; the base environment's own
  ``np_random`` is never touched, so the task part of the observation is exactly the base
  environment's.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from fastmbrl.ops.termination import TerminationRule

SWITCH_THRESHOLD = 20.0


class DistractorWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Append ``dimensions`` distracting dimensions to a Box observation.

    Args:
        env: base environment with a 1-D ``Box`` observation space.
        dimensions: D >= 1, the number of extra dimensions.
        pure_noise: ``d ~ N(0, 1)`` i.i.d. on every observation instead of the dynamics.
        seed: seeds A, P and the switching reset vector (see the module docstring).

    Attributes:
        parameter_seed: the seed A, P and the reset vector were drawn from (None: entropy).
        A [D, D], P [D, D], reset_vector [D]: the dynamics' parameters (float64 numpy arrays).
        distractor_state [D]: the current ``d``.
    """

    def __init__(
        self,
        env: gym.Env,
        dimensions: int,
        pure_noise: bool = False,
        seed: int | None = None,
    ):
        gym.utils.RecordConstructorArgs.__init__(
            self, dimensions=dimensions, pure_noise=pure_noise, seed=seed
        )
        gym.Wrapper.__init__(self, env)
        if int(dimensions) < 1:
            raise ValueError(f"DistractorWrapper: dimensions must be >= 1, got {dimensions}")
        base = env.observation_space
        if not isinstance(base, spaces.Box) or len(base.shape) != 1:
            raise TypeError(f"DistractorWrapper: needs a 1-D Box observation space, got {base}")
        self.dimensions = int(dimensions)
        self.pure_noise = bool(pure_noise)
        self.base_obs_dim = base.shape[0]
        dtype = base.dtype
        inf = np.full(self.dimensions, np.inf, dtype=dtype)
        self.observation_space = spaces.Box(
            low=np.concatenate([base.low, -inf]).astype(dtype),
            high=np.concatenate([base.high, inf]).astype(dtype),
            dtype=dtype,
        )
        self.A: np.ndarray | None = None
        self.P: np.ndarray | None = None
        self.reset_vector: np.ndarray | None = None
        self.parameter_seed = seed
        if seed is not None:
            self._draw_parameters(seed)
            self._noise_rng = np.random.default_rng([int(seed), 1])
        else:
            self._noise_rng = np.random.default_rng()
        self.distractor_state = np.zeros(self.dimensions)

    def _draw_parameters(self, seed: int | None) -> None:
        rng = np.random.default_rng(None if seed is None else [int(seed), 0])
        D = self.dimensions
        self.A = rng.normal(0.0, 1.0, size=(D, D))
        self.P = rng.normal(0.0, 10.0, size=(D, D)) ** 2
        self.reset_vector = rng.normal(size=(D,))

    def _update(self) -> None:
        if self.pure_noise:
            self.distractor_state = self._noise_rng.normal(0.0, 1.0, size=(self.dimensions,))
            return
        d = self.A @ self.distractor_state
        d = d + 0.1 * np.sin(self.P @ d)
        self.distractor_state = np.where(np.abs(d) > SWITCH_THRESHOLD, self.reset_vector, d)

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        self._update()
        dtype = self.observation_space.dtype
        return np.concatenate([np.asarray(obs, dtype=dtype), self.distractor_state.astype(dtype)])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if self.A is None:
            self.parameter_seed = seed
            self._draw_parameters(seed)
        if seed is not None:
            self._noise_rng = np.random.default_rng([int(seed), 1])
        self.distractor_state = self._noise_rng.normal(0.0, 0.1, size=(self.dimensions,))
        return self._observe(obs), info

    def step(self, action):
        if self.A is None:
            raise RuntimeError("DistractorWrapper: call reset() before step()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observe(obs), reward, terminated, truncated, info

    def termination_rule(self, base_rule: TerminationRule) -> TerminationRule:
        """The base task's rule over the extended observation (distractors unconstrained)."""
        return base_rule.padded(self.observation_space.shape[0])
