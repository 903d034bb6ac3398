"""Soft actor-critic as mbrl-lib runs it (its ``pytorch_sac_pranz24`` default), read top to bottom.

* Twin Q critics, evaluated as ONE ensemble of E=2 MLPs through ``fastmbrl.ops.ensemble_mlp``
  (ReLU, ``num_layers`` hidden layers of ``hidden_size``, Xavier-uniform weights, zero biases).
* Tanh-squashed Gaussian policy (log σ clamped to [-20, 2]); actions rescaled to the action
  bounds; log-prob correction ``log(scale·(1 − tanh(u)²) + 1e-6)``.
* Critic target ``r + γ (1 − terminated) (min Q̄(s', a') − α log π(a'|s'))``; critic loss
  ``MSE(Q1) + MSE(Q2)``. Update order: critic, actor (with the just-updated critic), temperature
  (when automatic), then a soft target update every ``target_update_interval`` updates.
* One Adam learning rate for all three optimisers.

The update never reads a value back to the host (metrics are returned as tensors), so it can be
wrapped by ``torch.compile`` / CUDA graphs (``SACConfig.compile``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..ops import ensemble_mlp

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
EPS = 1e-6


@dataclass
class SACConfig:
    gamma: float = 0.99
    tau: float = 0.005
    alpha: float = 0.2  # initial temperature (fixed when automatic_entropy_tuning is False)
    lr: float = 3e-4
    hidden_size: int = 256
    num_layers: int = 2  # hidden layers of the critics and of the policy
    target_update_interval: int = 1
    automatic_entropy_tuning: bool = True
    target_entropy: float | None = None  # None: −dim(A), as the SAC paper
    batch_size: int = 256
    grad_clip_norm: float | None = None  # VA-MBPO clips critic and actor at 2.0
    compile: bool = False  # torch.compile the update step

    def validate(self) -> None:
        checks = {
            "gamma": 0.0 <= self.gamma <= 1.0,
            "tau": 0.0 < self.tau <= 1.0,
            "lr": self.lr > 0,
            "hidden_size": self.hidden_size > 0,
            "num_layers": self.num_layers > 0,
            "target_update_interval": self.target_update_interval > 0,
            "batch_size": self.batch_size > 0,
            "alpha": self.alpha > 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            shown = ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            raise ValueError(f"SACConfig: invalid {shown}")


def _ensemble_linear_params(E: int, sizes: list[int], gen: torch.Generator | None):
    """Xavier-uniform weights ``[E, in, out]`` and zero biases ``[E, out]`` per layer."""
    weights, biases = nn.ParameterList(), nn.ParameterList()
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = (torch.rand(E, fan_in, fan_out, generator=gen) * 2 - 1) * bound
        weights.append(nn.Parameter(w))
        biases.append(nn.Parameter(torch.zeros(E, fan_out)))
    return weights, biases


class TwinCritic(nn.Module):
    """``Q_k(s, a)`` for k = 1, 2, as one E=2 ensemble MLP: ``q(obs, act) -> [2, B]``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, num_layers: int,
                 gen: torch.Generator | None = None, num_q: int = 2):
        super().__init__()
        sizes = [obs_dim + act_dim] + [hidden] * num_layers + [1]
        self.weights, self.biases = _ensemble_linear_params(num_q, sizes, gen)

    def forward(self, obs: torch.Tensor, act: torch.Tensor, detach_params: bool = False):
        x = torch.cat([obs, act], dim=-1)  # [B, O+A] shared by both critics
        ws, bs = list(self.weights), list(self.biases)
        if detach_params:  # gradients reach the inputs only (the actor's loss)
            ws, bs = [w.detach() for w in ws], [b.detach() for b in bs]
        return ensemble_mlp(x, ws, bs, activation="relu").squeeze(-1)  # [2, B]


class TanhGaussianPolicy(nn.Module):
    """``π(a|s)``: MLP trunk, mean and log σ heads, tanh squashing rescaled to the bounds."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, num_layers: int,
                 action_low: torch.Tensor, action_high: torch.Tensor,
                 gen: torch.Generator | None = None):
        super().__init__()
        sizes = [obs_dim] + [hidden] * num_layers + [2 * act_dim]
        self.weights, self.biases = _ensemble_linear_params(1, sizes, gen)
        self.act_dim = act_dim
        self.register_buffer("action_scale", (action_high - action_low) / 2.0)
        self.register_buffer("action_bias", (action_high + action_low) / 2.0)

    def forward(self, obs: torch.Tensor):
        out = ensemble_mlp(obs, list(self.weights), list(self.biases), activation="relu")[0]
        mean, log_std = out[..., : self.act_dim], out[..., self.act_dim :]
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None):
        """Reparameterised sample: ``(action, log_prob [B, 1], mean_action)``."""
        mean, log_std = self(obs)
        std = log_std.exp()
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        u = mean + std * noise
        y = torch.tanh(u)
        action = y * self.action_scale + self.action_bias
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi))
        log_prob = log_prob - torch.log(self.action_scale * (1 - y.pow(2)) + EPS)
        mean_action = torch.tanh(mean) * self.action_scale + self.action_bias
        return action, log_prob.sum(-1, keepdim=True), mean_action


class SAC(nn.Module):
    """The agent: networks, optimisers, temperature and the update step."""

    def __init__(self, obs_dim: int, act_dim: int, action_low, action_high,
                 cfg: SACConfig | None = None, device: str | torch.device = "cpu",
                 seed: int | None = None):
        super().__init__()
        self.cfg = cfg = cfg or SACConfig()
        cfg.validate()
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        low = torch.as_tensor(action_low, dtype=torch.float32)
        high = torch.as_tensor(action_high, dtype=torch.float32)
        self.critic = TwinCritic(obs_dim, act_dim, cfg.hidden_size, cfg.num_layers, gen)
        self.critic_target = TwinCritic(obs_dim, act_dim, cfg.hidden_size, cfg.num_layers, gen)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.policy = TanhGaussianPolicy(obs_dim, act_dim, cfg.hidden_size, cfg.num_layers,
                                         low, high, gen)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.alpha)),
                                      requires_grad=cfg.automatic_entropy_tuning)
        self.target_entropy = float(-act_dim if cfg.target_entropy is None else cfg.target_entropy)
        self.to(device)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)
        self.policy_optim = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=cfg.lr)
        self.num_updates = 0
        self._update_fn = torch.compile(self._update) if cfg.compile else self._update

    @property
    def device(self) -> torch.device:
        return self.log_alpha.device

    @torch.no_grad()
    def act(self, obs: torch.Tensor, sample: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions for ``obs [B, O]`` (or ``[O]``): a sample, or the mean action (mbrl-lib's
        default when stepping the real environment and when evaluating)."""
        single = obs.dim() == 1
        obs = obs.to(self.device, torch.float32)
        obs = obs.unsqueeze(0) if single else obs
        action, _, mean_action = self.policy.sample(obs, generator)
        out = action if sample else mean_action
        return out[0] if single else out

    def _clip(self, params) -> None:
        if self.cfg.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip_norm)

    def _update(self, obs, act, reward, next_obs, terminated):
        cfg = self.cfg
        alpha = self.log_alpha.detach().exp()
        # ---- critic ---------------------------------------------------------------------
        with torch.no_grad():
            next_action, next_log_pi, _ = self.policy.sample(next_obs)
            q_next = self.critic_target(next_obs, next_action).min(0).values  # [B]
            v_next = q_next - alpha * next_log_pi.squeeze(-1)
            target = reward + (1.0 - terminated) * cfg.gamma * v_next  # [B]
        q = self.critic(obs, act)  # [2, B]
        critic_loss = ((q - target) ** 2).mean(-1).sum()  # MSE(Q1) + MSE(Q2)
        self.critic_optim.zero_grad(set_to_none=True)
        critic_loss.backward()
        self._clip(self.critic.parameters())
        self.critic_optim.step()
        # ---- actor (gradients reach the policy only) -------------------------------------
        pi, log_pi, _ = self.policy.sample(obs)
        q_pi = self.critic(obs, pi, detach_params=True).min(0).values
        actor_loss = (alpha * log_pi.squeeze(-1) - q_pi).mean()
        self.policy_optim.zero_grad(set_to_none=True)
        actor_loss.backward()
        self._clip(self.policy.parameters())
        self.policy_optim.step()
        # ---- temperature -----------------------------------------------------------------
        if cfg.automatic_entropy_tuning:
            alpha_loss = -(self.log_alpha * (log_pi.detach() + self.target_entropy)).mean()
            self.alpha_optim.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_optim.step()
        else:
            alpha_loss = torch.zeros((), device=obs.device)
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "alpha_loss": alpha_loss.detach(),
            "alpha": self.log_alpha.detach().exp(),
            "entropy": -log_pi.detach().mean(),
        }

    @torch.no_grad()
    def soft_update_target(self) -> None:
        tau = self.cfg.tau
        for p, tp in zip(self.critic.parameters(), self.critic_target.parameters(), strict=True):
            tp.lerp_(p, tau)

    def update(self, obs, act, reward, next_obs, terminated) -> dict[str, torch.Tensor]:
        """One SAC update from a batch (``reward``, ``terminated``: ``[B]``); metrics as tensors."""
        metrics = self._update_fn(obs, act, reward.reshape(-1), next_obs,
                                  terminated.reshape(-1).to(obs.dtype))
        self.num_updates += 1
        if self.num_updates % self.cfg.target_update_interval == 0:
            self.soft_update_target()
        return metrics

    def full_state_dict(self) -> dict:
        """Networks, optimisers and counters: everything a resumed run needs."""
        return {
            "cfg": asdict(self.cfg),
            "module": self.state_dict(),
            "critic_optim": self.critic_optim.state_dict(),
            "policy_optim": self.policy_optim.state_dict(),
            "alpha_optim": self.alpha_optim.state_dict(),
            "num_updates": self.num_updates,
        }

    def load_full_state_dict(self, state: dict) -> None:
        self.load_state_dict(state["module"])
        self.critic_optim.load_state_dict(state["critic_optim"])
        self.policy_optim.load_state_dict(state["policy_optim"])
        self.alpha_optim.load_state_dict(state["alpha_optim"])
        self.num_updates = int(state["num_updates"])
