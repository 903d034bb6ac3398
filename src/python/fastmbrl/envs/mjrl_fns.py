"""mjrl's reward and termination files for model-based NPG (``projects/model_based_npg/utils/
reward_functions/gym_hopper.py``), on fastmbrl's (unmasked) observations.

mjrl scales the Hopper velocities by ``obs_mask`` (×0.02) in its paths; the formulas below undo
that, so they read the environment's own observations. Both functions read the state ``s_t``
*before* step t (mjrl paths store the states before each step)::

    hopper reward       r_t = v_x(s_t) + 1[h_t > 0.7 ∧ |ang_t| ≤ 0.2] - 1e-3 |clip(a_t, ±1)|²
    hopper termination  done_t = ¬(all |obs_mask ⊙ s_t| < 10 ∧ h_t > 0.7 ∧ |ang_t| < 0.15)

The termination's 0.15 (mjrl v2 @15bf3c0) is stricter than the environment's 0.2. With the
mask, ``|obs_mask ⊙ s| < 10`` tests positions against 10 and velocities against 500.

``REWARD_FNS[task](obs, act) -> [...]`` and ``TERM_FNS[task](obs) -> [...] bool``.
"""

from __future__ import annotations

import torch

HOPPER_OBS_MASK = (1.0,) * 5 + (0.02,) * 6
HOPPER_TERMINATION_ANGLE = 0.15


def hopper_reward(obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """mjrl's Hopper reward of ``obs [..., 11]`` (state before the step), ``act [..., 3]``."""
    # mjrl clips the masked obs to ±10: positions at ±10, velocities at ±10/0.02
    o = torch.cat([obs[..., :5].clamp(-10.0, 10.0), obs[..., 5:11].clamp(-500.0, 500.0)], -1)
    power = act.to(obs.dtype).clamp(-1.0, 1.0).square().sum(-1)
    alive = ((o[..., 0] > 0.7) & (o[..., 1].abs() <= 0.2)).to(obs.dtype)
    return o[..., 5] + alive - 1e-3 * power


def hopper_termination(obs: torch.Tensor) -> torch.Tensor:
    """mjrl's (stricter) Hopper termination of the state ``obs [..., 11]``."""
    mask = torch.tensor(HOPPER_OBS_MASK, dtype=obs.dtype, device=obs.device)
    ok = ((obs[..., :11] * mask).abs() < 10).all(-1) & (obs[..., 0] > 0.7) & (
        obs[..., 1].abs() < HOPPER_TERMINATION_ANGLE)
    return ~ok


REWARD_FNS = {"hopper": hopper_reward}
#: the files' ``obs_mask``: mjrl's environment multiplies observations by it, so its policy and
#: baseline see velocities ×0.02 (fastmbrl applies it as the policy's input scale instead)
OBS_MASKS = {"hopper": HOPPER_OBS_MASK}
TERM_FNS = {"hopper": hopper_termination}
