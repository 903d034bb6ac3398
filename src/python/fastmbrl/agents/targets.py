"""Multi-step critic targets of the value-expansion seed (``model_based_rl/targets.py`` →
rlax ``general_off_policy_returns_from_q_and_v``), batched over rows, looping only over the
K steps of a trajectory.

For a K-step trajectory ``(s_k, a_k, r_k, d_k)``, k = 0..K-1, followed by ``s_K``::

    G_{K-1} = r_{K-1} + γ_{K-1} V(s_K)
    G_k     = r_k + γ_k [ V(s_{k+1}) − c_{k+1} Q̄(s_{k+1}, a_{k+1}) + c_{k+1} G_{k+1} ]

    γ_k = γ · Π_{i≤k} (1 − d_i)          (masked_discounts: nothing after a termination counts)
    c_k = λ · min(1, π(a_k|s_k) / μ(a_k|s_k)) · (1 − cut_k)   (retrace_traces; stop-gradient)

With c ≡ 1 and Q̄(s_{k+1}, a_{k+1}) = V(s_{k+1}) the recursion is the (K)-step return
``Σ_k Γ_k r_k + Γ_K V(s_K)`` (Γ the products of the masked discounts); with c ≡ 0 every G_k is the
one-step target ``r_k + γ_k V(s_{k+1})``.
"""

from __future__ import annotations

import torch


def masked_discounts(gamma: float, terminated: torch.Tensor,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``γ_k = γ·Π_{i≤k}(1 − d_i)`` ``[B, K]`` from ``terminated [B, K]`` (bool or 0/1):
    the step that terminates has discount 0, and so has every later step."""
    alive = (~terminated.bool()).to(dtype).cumprod(dim=-1)
    return gamma * alive


def multistep_returns(rewards: torch.Tensor, discounts: torch.Tensor, v_next: torch.Tensor,
                      q_next: torch.Tensor, c_next: torch.Tensor) -> torch.Tensor:
    """``G [B, K]`` of the recursion in the module docstring.

    Args (all ``[B, K]``, one dtype):
        rewards: r_k.
        discounts: γ_k (from :func:`masked_discounts`).
        v_next: V(s_{k+1}).
        q_next: Q̄(s_{k+1}, a_{k+1}) (the last column is unused).
        c_next: c_{k+1}, used as a constant (detached; the last column is unused).
    """
    shapes = {t.shape for t in (rewards, discounts, v_next, q_next, c_next)}
    if len(shapes) != 1 or rewards.dim() != 2:
        raise ValueError("multistep_returns: rewards, discounts, v_next, q_next and c_next must "
                         f"all be [B, K]; got {[tuple(s) for s in shapes]}")
    c_next = c_next.detach()
    K = rewards.shape[1]
    out = [None] * K
    g = rewards[:, K - 1] + discounts[:, K - 1] * v_next[:, K - 1]
    out[K - 1] = g
    for k in range(K - 2, -1, -1):
        g = rewards[:, k] + discounts[:, k] * (v_next[:, k] - c_next[:, k] * q_next[:, k]
                                               + c_next[:, k] * g)
        out[k] = g
    return torch.stack(out, dim=1)


def retrace_traces(log_pi: torch.Tensor, log_mu: torch.Tensor, lam: float = 1.0,
                   cut: torch.Tensor | None = None) -> torch.Tensor:
    """``c = λ·min(1, exp(log π − log μ))·(1 − cut)`` ``[B, K]``, detached. ``cut [B, K]``
    (bool) zeroes the trace where the trajectory must not continue (truncation, window end)."""
    c = lam * torch.exp(torch.clamp(log_pi.detach() - log_mu.detach(), max=0.0))
    if cut is not None:
        c = torch.where(cut.bool(), torch.zeros_like(c), c)
    return c
