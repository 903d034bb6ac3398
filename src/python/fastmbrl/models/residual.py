"""mjrl's dynamics model (``algos/mbrl/nn_dynamics.py::WorldModel``) as one ensemble of E
deterministic residual MLPs evaluated by :func:`fastmbrl.ops.ensemble_mlp`, with an optional
learned reward per member.

Dynamics (statistics recomputed over the whole buffer at every :meth:`fit`; "scale" is the mean
absolute deviation, not the std)::

    x_s = (s - s_shift)/(s_scale + 1e-8),  x_a = (a - a_shift)/(a_scale + 1e-8)
    s'  = s + mask ⊙ ((out_scale + 1e-8) · f_e([x_s, x_a]) + out_shift)
    target Y = (s' - s - out_shift)/(out_scale + 1e-8),  loss MSE,  mask_d = [out_scale_d ≥ 1e-8]

Learned reward (``learn_reward``; mjrl ``RewardNet``): ``r_e = (r_scale + 1e-8)·g_e([x_s, x_a,
x_s'']) + r_shift`` with ``x_s''`` the (stop-gradient) model prediction normalised with the
*state* statistics, an MLP (100, 100) per member trained with MSE against the raw reward.

Fits are warm-started (parameters and Adam state persist); each member draws its own
minibatch order; ``N mod batch`` rows are dropped per epoch and the ``max_steps`` cap is checked at
the end of an epoch (mjrl's rules).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..ops.mlp import ACTIVATIONS, ensemble_mlp


def _ensemble_params(E: int, sizes: list[int], gen: torch.Generator):
    """``nn.Linear``-style U(±1/√fan_in) weights ``[E, in, out]`` and biases ``[E, out]``."""
    ws, bs = [], []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        bound = 1.0 / math.sqrt(a)
        ws.append(nn.Parameter((torch.rand(E, a, b, generator=gen) * 2 - 1) * bound))
        bs.append(nn.Parameter((torch.rand(E, b, generator=gen) * 2 - 1) * bound))
    return nn.ParameterList(ws), nn.ParameterList(bs)


def _shift_scale(x: torch.Tensor):
    shift = x.mean(0)
    return shift, (x - shift).abs().mean(0)


class ResidualEnsemble(nn.Module):
    """E mjrl world models; see the module docstring.

    Args:
        obs_dim, act_dim: O and A.
        ensemble_size: E (mjrl ``num_models``, 4).
        hidden_sizes: hidden widths (mjrl ``hidden_size``, (512, 512)).
        activation: ``relu`` (mjrl), ``tanh`` or ``silu``.
        learn_reward: also learn ``r(s, a, s')`` with a (100, 100) MLP per member.
        lr, weight_decay: Adam's (mjrl ``fit_lr``, ``fit_wd``).
        seed: initialisation seed.
    """

    def __init__(self, obs_dim: int, act_dim: int, ensemble_size: int = 4,
                 hidden_sizes=(512, 512), activation: str = "relu", learn_reward: bool = False,
                 reward_hidden_sizes=(100, 100), lr: float = 1e-3, weight_decay: float = 0.0,
                 seed: int = 0, device=None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.obs_dim, self.act_dim, self.ensemble_size = obs_dim, act_dim, ensemble_size
        self.activation, self.learn_reward = activation, learn_reward
        gen = torch.Generator().manual_seed(int(seed))
        self.weights, self.biases = _ensemble_params(
            ensemble_size, [obs_dim + act_dim, *hidden_sizes, obs_dim], gen)
        if learn_reward:
            self.r_weights, self.r_biases = _ensemble_params(
                ensemble_size, [2 * obs_dim + act_dim, *reward_hidden_sizes, 1], gen)
        for name, size in (("s_shift", obs_dim), ("s_scale", obs_dim), ("a_shift", act_dim),
                           ("a_scale", act_dim), ("out_shift", obs_dim), ("out_scale", obs_dim)):
            self.register_buffer(name, torch.zeros(size) if "shift" in name else torch.ones(size))
        self.register_buffer("mask", torch.ones(obs_dim))
        self.register_buffer("r_shift", torch.zeros(1))
        self.register_buffer("r_scale", torch.ones(1))
        self.to(device)
        self.optimizer = torch.optim.Adam(self.dynamics_parameters(), lr=lr,
                                          weight_decay=weight_decay)
        self.reward_optimizer = (torch.optim.Adam(self.reward_parameters(), lr=lr,
                                                  weight_decay=weight_decay)
                                 if learn_reward else None)

    def dynamics_parameters(self):
        return [*self.weights, *self.biases]

    def reward_parameters(self):
        return [*self.r_weights, *self.r_biases] if self.learn_reward else []

    # ---- normalisation ------------------------------------------------------------------------
    @torch.no_grad()
    def set_statistics(self, s: torch.Tensor, a: torch.Tensor, sp: torch.Tensor,
                       r: torch.Tensor | None = None) -> None:
        """mjrl's shift (mean) and scale (mean absolute deviation) of the buffer."""
        self.s_shift, self.s_scale = _shift_scale(s)
        self.a_shift, self.a_scale = _shift_scale(a)
        self.out_shift, self.out_scale = _shift_scale(sp - s)
        self.mask = (self.out_scale >= 1e-8).to(s.dtype)
        if r is not None:
            shift, scale = _shift_scale(r.reshape(-1, 1))
            self.r_shift, self.r_scale = shift, scale

    def inputs(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Normalised ``[..., O + A]`` model inputs."""
        return torch.cat([(s - self.s_shift) / (self.s_scale + 1e-8),
                          (a - self.a_shift) / (self.a_scale + 1e-8)], -1)

    # ---- prediction ---------------------------------------------------------------------------
    def forward_normalized(self, s: torch.Tensor, a: torch.Tensor, backend: str | None = None):
        """Raw network outputs ``[E, B, O]`` for ``s, a`` of ``[E, B, ·]`` (row block e to
        member e) or ``[B, ·]`` (shared by all members)."""
        return ensemble_mlp(self.inputs(s, a), list(self.weights), list(self.biases),
                            self.activation, backend=backend)

    def predict(self, s: torch.Tensor, a: torch.Tensor, backend: str | None = None):
        """Next states ``[E, B, O]`` (see :meth:`forward_normalized` for the shapes)."""
        y = self.forward_normalized(s, a, backend)
        return s + self.mask * ((self.out_scale + 1e-8) * y + self.out_shift)

    def predict_reward(self, s, a, sp, backend: str | None = None) -> torch.Tensor:
        """Learned rewards ``[E, B]`` of ``s, a, sp`` (``[E, B, ·]`` or shared ``[B, ·]``; shared
        ``s, a`` with per-member ``sp [E, B, O]`` are broadcast)."""
        if sp.dim() == 3 and s.dim() == 2:
            s, a = s.expand(sp.shape[0], *s.shape), a.expand(sp.shape[0], *a.shape)
        x = torch.cat([self.inputs(s, a), (sp.detach() - self.s_shift) / (self.s_scale + 1e-8)],
                      -1)
        y = ensemble_mlp(x, list(self.r_weights), list(self.r_biases), self.activation,
                         backend=backend)
        return ((self.r_scale + 1e-8) * y + self.r_shift).squeeze(-1)

    # ---- fitting ------------------------------------------------------------------------------
    def _epochs(self, n: int, epochs: int, max_steps: int, batch_size: int,
                generator: torch.Generator | None):
        """Yields ``[E, batch]`` row indices: per member its own permutation per epoch, the last
        ``n mod batch`` rows dropped, stopping after the epoch that reaches ``max_steps``."""
        steps = 0
        nb = n // batch_size
        dev = self.s_shift.device
        gen_dev = generator.device if generator is not None else dev
        for _ in range(int(epochs)):
            perms = torch.stack([torch.randperm(n, generator=generator, device=gen_dev)
                                 for _ in range(self.ensemble_size)]).to(dev)
            for b in range(nb):
                yield perms[:, b * batch_size:(b + 1) * batch_size]
                steps += 1
            if steps >= max_steps:
                return

    def mse(self, s, a, sp) -> torch.Tensor:
        """Per-member MSE in normalised units ``[E]`` (mjrl's ``compute_loss``)."""
        with torch.no_grad():
            y = (sp - s - self.out_shift) / (self.out_scale + 1e-8)
            return (self.forward_normalized(s, a) - y).square().mean((1, 2))

    def fit(self, s, a, sp, epochs: int, max_steps: int, batch_size: int,
            generator: torch.Generator | None = None, backend: str | None = None) -> float:
        """Recompute the statistics, then warm-started MSE fits of every member; returns the
        last epoch's mean loss (normalised units)."""
        self.set_statistics(s, a, sp)
        x = self.inputs(s, a)
        y = (sp - s - self.out_shift) / (self.out_scale + 1e-8)
        ws, bs = list(self.weights), list(self.biases)
        total, count = 0.0, 0
        for idx in self._epochs(x.shape[0], epochs, max_steps, batch_size, generator):
            pred = ensemble_mlp(x[idx], ws, bs, self.activation, backend=backend)
            loss = (pred - y[idx]).square().mean((1, 2)).sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach()) / self.ensemble_size
            count += 1
        return total / max(count, 1)

    def fit_reward(self, s, a, sp, r, epochs: int, max_steps: int, batch_size: int,
                   generator: torch.Generator | None = None) -> float:
        """MSE fit of the reward nets on real ``(s, a, r)``, each member's input s' being its own
        (stop-gradient) prediction f_e(s, a), as at rollout time (mjrl)."""
        self.set_statistics(s, a, sp, r)
        with torch.no_grad():
            sp_hat = self.predict(s, a)  # [E, N, O]
        total, count = 0.0, 0
        for idx in self._epochs(s.shape[0], epochs, max_steps, batch_size, generator):
            sp_idx = sp_hat.gather(1, idx.unsqueeze(-1).expand(-1, -1, sp_hat.shape[-1]))
            pred = self.predict_reward(s[idx], a[idx], sp_idx)
            loss = (pred - r[idx]).square().mean(1).sum()
            self.reward_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.reward_optimizer.step()
            total += float(loss.detach()) / self.ensemble_size
            count += 1
        return total / max(count, 1)

    def full_state_dict(self) -> dict:
        return {"model": self.state_dict(), "optimizer": self.optimizer.state_dict(),
                "reward_optimizer": (self.reward_optimizer.state_dict()
                                     if self.reward_optimizer is not None else None)}

    def load_full_state_dict(self, state: dict) -> None:
        self.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.reward_optimizer is not None:
            self.reward_optimizer.load_state_dict(state["reward_optimizer"])
