"""Termination rules given as data, so the rollout kernel can evaluate them on the device.

Every MuJoCo locomotion task's rule is "alive while each observation dimension lies in a box
(and, optionally, every entry is finite)"::

    alive = all_d (lower[d] <(=) obs[d] <(=) upper[d])  [and all_d isfinite(obs[d])]
    done  = not alive

An infinite bound is no constraint (that comparison is skipped, so an infinite observation is
only caught by ``check_finite``). ``inclusive`` picks ``<=`` (True) or ``<`` (False) for every
finite bound of the rule. A task whose rule is not of this form passes a Python callable
``term_fn(next_obs) -> done [N] bool`` instead, applied after the kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class TerminationRule:
    """Box termination rule on the first ``len(lower)`` observation dimensions.

    Attributes:
        lower, upper: per-dimension bounds (``-inf``/``inf`` for none), same length.
        inclusive: alive iff ``lower <= obs <= upper`` (True) or ``lower < obs < upper``.
        check_finite: a non-finite entry anywhere in the observation ends the episode.
        name: for messages.
    """

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    inclusive: bool = False
    check_finite: bool = True
    name: str = field(default="rule", compare=False)

    def __post_init__(self):
        if len(self.lower) != len(self.upper):
            raise ValueError(
                f"TerminationRule {self.name}: lower has {len(self.lower)} dimensions, upper "
                f"has {len(self.upper)}"
            )
        for d, (lo, hi) in enumerate(zip(self.lower, self.upper, strict=True)):
            if lo > hi:
                raise ValueError(f"TerminationRule {self.name}: lower[{d}]={lo} > upper[{d}]={hi}")

    @classmethod
    def never(cls, name: str = "never") -> TerminationRule:
        """No termination at all (HalfCheetah)."""
        return cls((), (), inclusive=False, check_finite=False, name=name)

    def padded(self, obs_dim: int) -> TerminationRule:
        """The same rule over ``obs_dim`` dimensions (extra dimensions unconstrained)."""
        n = len(self.lower)
        if obs_dim < n:
            raise ValueError(
                f"TerminationRule {self.name}: constrains {n} dimensions, obs has {obs_dim}"
            )
        pad = obs_dim - n
        return TerminationRule(
            self.lower + (-math.inf,) * pad,
            self.upper + (math.inf,) * pad,
            self.inclusive,
            self.check_finite,
            self.name,
        )

    def bounds(self, obs_dim: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lower, upper)`` as ``[obs_dim]`` tensors on ``like``'s device and dtype."""
        rule = self.padded(obs_dim)
        kw = dict(dtype=like.dtype, device=like.device)
        return torch.tensor(rule.lower, **kw), torch.tensor(rule.upper, **kw)

    def done(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Reference evaluation: ``next_obs [..., O]`` -> ``done [...]`` (bool)."""
        lower, upper = self.bounds(next_obs.shape[-1], next_obs)
        if self.inclusive:
            ok_lo, ok_hi = next_obs >= lower, next_obs <= upper
        else:
            ok_lo, ok_hi = next_obs > lower, next_obs < upper
        ok_lo = ok_lo | torch.isinf(lower)
        ok_hi = ok_hi | torch.isinf(upper)
        alive = (ok_lo & ok_hi).all(-1)
        if self.check_finite:
            alive = alive & torch.isfinite(next_obs).all(-1)
        return ~alive
