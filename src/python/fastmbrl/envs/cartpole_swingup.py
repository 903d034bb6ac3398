"""``cartpole_swingup``: the value-expansion seed's cart-pole swing-up on gymnasium MuJoCo.

The seed (Palenicek et al., ICLR 2023) used a brax fork's cartpole: the pole starts hanging down
(θ = π), a DeepMind-Control-style smooth reward, and the episode ends when the cart leaves
|x| ≤ 1. gymnasium has no MuJoCo swing-up, so this task takes the model of
``InvertedPendulum-v5`` (the same cart, pole, actuator with gear 100 and ctrlrange ±3, RK4 at
0.02 s, frame_skip 2: 0.04 s per step) with both joints unlimited (the XML is gymnasium's own,
patched when the env is built), and:

    reset        qpos = (0, π) + U(±0.01), qvel = U(±0.01)
    observation  (x, cos θ, sin θ, ẋ, θ̇)                             (as the brax cartpole)
    reward       upright · centered · small_control · small_velocity   (dm_control's smooth
                 swing-up reward) with
                   upright        = (cos θ + 1) / 2
                   centered       = (1 + tol(x, margin 2)) / 2
                   small_control  = (4 + tol(a / 3, margin 1, quadratic, 0 at the margin)) / 5
                   small_velocity = (1 + tol(θ̇, margin 5)) / 2
                 tol(v, margin) = exp(−½ (|v|/margin · √(−2 ln 0.1))²)  (gaussian, 0.1 at the
                 margin), on the state after the step
    termination  |x| > 1 or a non-finite observation
    time limit   1000 steps (40 s)

Differences from the seed's brax task: MuJoCo physics (the brax fork's is position-based, with
its own masses and a thruster of strength 100 on actions in [−1, 1]); the reward's exact
constants in the brax fork were not available to check, dm_control's are used.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from gymnasium import utils
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
from gymnasium.spaces import Box

from fastmbrl.envs.reward_fns import cartpole_swingup as reward
from fastmbrl.envs.termination_fns import cartpole_swingup as terminated


def _patched_xml() -> str:
    """gymnasium's inverted_pendulum.xml with unlimited slider and hinge, written once to a
    cache file (MujocoEnv loads models from files)."""
    import gymnasium

    src = Path(gymnasium.__file__).parent / "envs/mujoco/assets/inverted_pendulum.xml"
    xml = src.read_text()
    for old, new in (
        ('limited="true" name="slider" pos="0 0 0" range="-1 1"',
         'limited="false" name="slider" pos="0 0 0"'),
        ('name="hinge" pos="0 0 0" range="-90 90"', 'limited="false" name="hinge" pos="0 0 0"'),
    ):
        if old not in xml:
            raise RuntimeError(f"cartpole_swingup: {src} has changed; expected {old!r} in it")
        xml = xml.replace(old, new)
    digest = hashlib.sha256(xml.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"fastmbrl-cartpole-swingup-{digest}.xml"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(xml)
        os.replace(tmp, path)
    return str(path)


class CartpoleSwingupEnv(MujocoEnv, utils.EzPickle):
    """The swing-up task (module docstring); registered with gymnasium as
    ``fastmbrl/CartpoleSwingup-v0`` (envs/registry.py). Reward and termination are
    ``reward_fns.cartpole_swingup`` and ``termination_fns.cartpole_swingup``."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array", "rgbd_tuple"]}

    def __init__(self, frame_skip: int = 2, reset_noise_scale: float = 0.01, **kwargs):
        utils.EzPickle.__init__(self, frame_skip, reset_noise_scale, **kwargs)
        self._reset_noise_scale = reset_noise_scale
        MujocoEnv.__init__(self, _patched_xml(), frame_skip,
                           observation_space=Box(-np.inf, np.inf, (5,), np.float64), **kwargs)
        self.metadata = {**self.metadata, "render_fps": int(np.round(1.0 / self.dt))}

    def _get_obs(self) -> np.ndarray:
        x, theta = self.data.qpos
        return np.array([x, np.cos(theta), np.sin(theta), *self.data.qvel])

    def step(self, action):
        self.do_simulation(action, self.frame_skip)
        obs = self._get_obs()
        o = torch.as_tensor(obs).unsqueeze(0)
        r = float(reward(o, torch.as_tensor(np.asarray(action, dtype=np.float64)).reshape(1, -1),
                         o)[0])
        done = bool(terminated(o)[0])
        if self.render_mode == "human":
            self.render()
        return obs, r, done, False, {}

    def reset_model(self) -> np.ndarray:
        lo, hi = -self._reset_noise_scale, self._reset_noise_scale
        qpos = np.array([0.0, math.pi]) + self.np_random.uniform(lo, hi, self.model.nq)
        qvel = self.np_random.uniform(lo, hi, self.model.nv)
        self.set_state(qpos, qvel)
        return self._get_obs()
