"""The value-expansion seed's SAC and DDPG (Palenicek et al., ICLR 2023,
``model_based_rl/soft_actor_critic.py``, ``policies.py``), read top to bottom.

Networks (``hidden`` = (256, 256) ReLU, biases initialised at 0.1, weights Xavier-uniform):

* twin critics Q_j(s, a), j = 1, 2, as ONE E=2 ensemble through ``fastmbrl.ops.ensemble_mlp``
  (``agents.sac.TwinCritic``, shared with the MBPO SAC), with Polyak targets Q̄ (τ_q = 0.005);
* an actor with two heads ``[loc, raw]`` per action dimension (an E=1 ensemble MLP):
  ``u ~ N(loc, σ²)``, ``σ = softplus(raw) + 1e-3`` (no clamp), ``a = tanh(u)`` rescaled to the
  action bounds; ``log π(a|s) = Σ [log N(u; loc, σ) − log(1 − tanh(u)² + 1e-6)]`` — the density
  of the tanh action in [−1, 1]^A, the seed's convention (``agents.sac.squashed_gaussian_log_prob``
  with scale 1); a target actor, Polyak-averaged with τ_π (SAC: 1.0, the current policy;
  DDPG: 0.005).
* every network input is the observation normalised by running statistics (mean and
  ``var = M2/(n+1)`` clipped to [1e-6, 1e6]), clipped to ±``obs_clip`` (5); the caller updates
  them with the pre-step observations (warm-up included).

Losses of one :meth:`VEAgent.update` on a batch ``(s, a, y)`` (``y`` the critic target, built by
the algorithm: one step, MVE or Retrace), all from the same old state, applied together, then
Polyak::

    critic       ½ · mean_{j,b} (Q_j(s, a) − y)²
    actor (SAC)  mean(α log π(ã|s) − min_j Q_j(s, ã)),  ã ~ π(·|s) reparameterised, online Q
    actor (DDPG) mean(− min_j Q_j(s, tanh(loc(s))))
    temperature  α · sg(−log π(ã|s) − H̄),  H̄ = target_entropy_per_dim · |A|  (SAC; log α is
                 the parameter, α₀ = 1.0, Adam 5e-5; DDPG: α = 0)

V(s) = min_j Q̄_j(s, ã) − α log π̄(ã|s) with ã fresh from the target policy (DDPG: the target
policy's mean action, α = 0). DDPG acts with ``tanh(loc + 0.1·ε)``; SAC samples (also when
evaluating, as the seed does).

Behaviour log-probabilities (Retrace's μ) of DDPG: by default the density of the exploration
Gaussian really used, ``N(u; loc, 0.1²)``, and the target policy's density of a stored u is
``N(u; loc̄, 0.1²)`` (c ≈ 1 while the policies are close). ``ddpg_original_trace=True``
reproduces the seed: μ with σ = softplus(0.1) + 1e-3 ≈ 0.745 at u = loc + 0.1ε, and π with the
network's scale head σ = softplus(raw) + 1e-3 (whose last layer gets no gradient), which cuts
traces by a state-dependent factor (the notes measured c ∈ [0.3, 1]).

The update reads nothing back to the host and never branches on a tensor's value; its noise
comes from ``generator`` (or the global generator).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import ensemble_mlp
from .sac import TwinCritic, _ensemble_linear_params, polyak_update, squashed_gaussian_log_prob

STD_MIN = 1e-3  # σ = softplus(raw) + 1e-3


@dataclass
class VEAgentConfig:
    """Settings of :class:`VEAgent` (``algorithm=value_expansion`` keys)."""

    kind: str = "sac"                      # sac | ddpg
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    lr: float = 3e-4
    alpha_init: float = 1.0
    alpha_lr: float = 5e-5
    target_entropy_per_dim: float = -0.5
    tau_q: float = 0.005
    tau_pi: float | None = None            # None: SAC 1.0, DDPG 0.005
    ddpg_noise: float = 0.1
    obs_clip: float = 5.0
    gamma: float = 0.99
    bias_init: float = 0.1
    ddpg_original_trace: bool = False

    def validate(self) -> None:
        bad = []
        if self.kind not in ("sac", "ddpg"):
            bad.append(f"kind={self.kind!r} (allowed: sac, ddpg)")
        for name in ("lr", "alpha_init", "tau_q", "ddpg_noise", "obs_clip"):
            if not getattr(self, name) > 0:
                bad.append(f"{name}={getattr(self, name)!r} (must be > 0)")
        if self.tau_pi is not None and not 0 < self.tau_pi <= 1:
            bad.append(f"tau_pi={self.tau_pi!r} (must be in (0, 1])")
        if not 0 < self.gamma <= 1:
            bad.append(f"gamma={self.gamma!r} (must be in (0, 1])")
        if not self.hidden or min(self.hidden) < 1:
            bad.append(f"hidden={self.hidden!r} (positive widths)")
        if bad:
            raise ValueError("VEAgentConfig: invalid " + ", ".join(bad))

    @property
    def policy_tau(self) -> float:
        if self.tau_pi is not None:
            return float(self.tau_pi)
        return 1.0 if self.kind == "sac" else 0.005


class RunningNormalizer(nn.Module):
    """Running mean/variance of observations (Chan et al.'s batched update), applied as
    ``clip((x − mean)/sqrt(var), ±clip)`` with ``var = M2/(n+1)`` clipped to [1e-6, 1e6]."""

    def __init__(self, size: int, clip: float = 5.0):
        super().__init__()
        self.clip = float(clip)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(size, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(size, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Add the rows of ``x [N, O]``."""
        x = x.reshape(-1, self.mean.shape[0]).to(self.mean)
        n = x.shape[0]
        batch_mean = x.mean(0)
        batch_m2 = ((x - batch_mean) ** 2).sum(0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta.pow(2) * self.count * n / total
        self.count.copy_(total)

    @property
    def var(self) -> torch.Tensor:
        return (self.m2 / (self.count + 1)).clamp(1e-6, 1e6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean.to(x.dtype)) / self.var.sqrt().to(x.dtype)
        return z.clamp(-self.clip, self.clip)


class SquashedGaussianActor(nn.Module):
    """``s ↦ (loc [B, A], raw [B, A])``: an E=1 ensemble MLP with two heads per dimension."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], bias_init: float,
                 gen: torch.Generator | None = None):
        super().__init__()
        sizes = [obs_dim, *hidden, 2 * act_dim]
        self.weights, self.biases = _ensemble_linear_params(1, sizes, gen, last_heads=2,
                                                            bias_init=bias_init)
        self.act_dim = act_dim

    def forward(self, obs_n: torch.Tensor):
        out = ensemble_mlp(obs_n, list(self.weights), list(self.biases), activation="relu")[0]
        return out[..., : self.act_dim], out[..., self.act_dim:]


class VEAgent(nn.Module):
    """The seed's SAC (``cfg.kind="sac"``) or DDPG (``"ddpg"``); see the module docstring.

    Args:
        obs_dim, act_dim: O and A.
        action_low, action_high: the action box (actions are ``bias + scale·tanh(u)``).
        cfg: :class:`VEAgentConfig`.
        device: where the networks live.
        generator: the default random stream of acting and updates.
    """

    def __init__(self, obs_dim: int, act_dim: int, action_low, action_high,
                 cfg: VEAgentConfig | None = None, device: str | torch.device = "cpu",
                 generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg = cfg or VEAgentConfig()
        cfg.validate()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.sac = cfg.kind == "sac"
        self.generator = generator
        init = torch.Generator().manual_seed(int(torch.randint(2**31, ()).item())) \
            if generator is None else torch.Generator().manual_seed(
                int(torch.randint(2**31, (), generator=generator, device=generator.device)))
        low = torch.as_tensor(action_low, dtype=torch.float32).reshape(act_dim)
        high = torch.as_tensor(action_high, dtype=torch.float32).reshape(act_dim)
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_bias", (high + low) / 2)
        self.normalizer = RunningNormalizer(obs_dim, cfg.obs_clip)
        self.critic = TwinCritic(obs_dim, act_dim, list(cfg.hidden), len(cfg.hidden), init,
                                 bias_init=cfg.bias_init)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor = SquashedGaussianActor(obs_dim, act_dim, list(cfg.hidden), cfg.bias_init,
                                           init)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.alpha_init)),
                                      requires_grad=self.sac)
        self.target_entropy = float(cfg.target_entropy_per_dim * act_dim)
        self.to(device)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.num_updates = 0

    # ---- the policy --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.log_alpha.device

    @property
    def alpha(self) -> torch.Tensor:
        """α as a constant (0 for DDPG)."""
        return self.log_alpha.detach().exp() if self.sac else self.log_alpha.new_zeros(())

    def _dist(self, obs: torch.Tensor, target: bool):
        loc, raw = (self.actor_target if target else self.actor)(self.normalizer(obs))
        return loc, F.softplus(raw) + STD_MIN

    def _to_env(self, u: torch.Tensor) -> torch.Tensor:
        return self.action_bias + self.action_scale * torch.tanh(u)

    def _noise(self, like: torch.Tensor, generator) -> torch.Tensor:
        g = generator if generator is not None else self.generator
        return torch.randn(like.shape, generator=g, device=like.device, dtype=like.dtype)

    def _behaviour_std(self, loc: torch.Tensor, raw_std: torch.Tensor, stored: bool):
        """σ of DDPG's log-probabilities (module docstring): of the stored behaviour (``stored``)
        or of the target policy at a stored u."""
        if not self.cfg.ddpg_original_trace:
            return torch.full_like(loc, self.cfg.ddpg_noise)
        if stored:
            return torch.full_like(loc, F.softplus(torch.tensor(self.cfg.ddpg_noise)).item()
                                   + STD_MIN)
        return raw_std

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False,
            generator: torch.Generator | None = None):
        """Actions for the environment: ``(action [N, A] in the bounds, log μ [N], u [N, A])``
        with ``u`` the pre-tanh value and ``log μ`` its behaviour log-probability."""
        obs = torch.as_tensor(obs, dtype=self.log_alpha.dtype, device=self.device)
        obs = obs.reshape(-1, self.obs_dim)
        loc, std = self._dist(obs, target=False)
        if deterministic:
            u = loc
            log_p = squashed_gaussian_log_prob(u, std.log(), mean=loc)
        elif self.sac:
            z = self._noise(loc, generator)
            u = loc + std * z
            log_p = squashed_gaussian_log_prob(u, std.log(), z=z)
        else:
            z = self._noise(loc, generator)
            u = loc + self.cfg.ddpg_noise * z
            log_p = squashed_gaussian_log_prob(u, self._behaviour_std(loc, std, True).log(),
                                               mean=loc)
        return self._to_env(u), log_p, u

    def sample(self, obs: torch.Tensor, target: bool = False,
               generator: torch.Generator | None = None, noise: torch.Tensor | None = None):
        """``(action [B, A], log π [B])``: SAC a reparameterised sample (``noise`` or fresh),
        DDPG the mean action (its log π at u = loc, for completeness)."""
        loc, std = self._dist(obs, target)
        if self.sac:
            z = self._noise(loc, generator) if noise is None else noise
            u = loc + std * z
            return self._to_env(u), squashed_gaussian_log_prob(u, std.log(), z=z)
        s = self._behaviour_std(loc, std, False)
        return self._to_env(loc), squashed_gaussian_log_prob(loc, s.log(), mean=loc)

    def log_prob_u(self, obs: torch.Tensor, u: torch.Tensor, target: bool = True) -> torch.Tensor:
        """``log π(tanh(u)|s)`` ``[B]`` of stored pre-tanh actions ``u [B, A]`` (Retrace's π)."""
        loc, std = self._dist(obs, target)
        if not self.sac:
            std = self._behaviour_std(loc, std, False)
        return squashed_gaussian_log_prob(u, std.log(), mean=loc)

    # ---- values ------------------------------------------------------------------------------
    def q(self, obs: torch.Tensor, act: torch.Tensor, target: bool = False) -> torch.Tensor:
        """``Q_j(s, a)`` ``[2, B]`` (online or target critics)."""
        return (self.critic_target if target else self.critic)(self.normalizer(obs), act)

    @torch.no_grad()
    def value(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``V(s) = min_j Q̄_j(s, ã) − α log π̄(ã|s)`` ``[B]``, ã fresh from the target policy."""
        a, log_p = self.sample(obs, target=True, generator=generator)
        v = self.q(obs, a, target=True).min(0).values
        return v - self.alpha * log_p if self.sac else v

    def q_pi(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``min_j Q_j(s, a)`` ``[B]`` of the online critics with gradients to ``obs`` and
        ``act`` only (the actor's objective; the critics' parameters get none)."""
        return self.critic(self.normalizer(obs), act, detach_params=True).min(0).values

    def soft_value(self, obs: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """``V(s) = min_j Q_j(s, ã) − α log π(ã|s)`` ``[B]`` with the online actor and critics
        and gradients to ``obs`` and the actor (ã reparameterised, fresh): the value-gradient
        actor's V."""
        a, log_p = self.sample(obs, generator=generator)
        v = self.q_pi(obs, a)
        return v - self.alpha * log_p if self.sac else v

    # ---- the update --------------------------------------------------------------------------
    def losses(self, obs: torch.Tensor, act: torch.Tensor, y: torch.Tensor,
               noise: torch.Tensor, actor_return=None, actor_scale: float = 1.0):
        """``(critic, actor, temperature)`` losses and metrics at the current parameters
        (``noise [B, A]``: the actor's reparameterisation noise).

        ``actor_return(obs, a0) -> G₀ [B]``: the actor's return of its action ``a0`` at
        ``obs`` with gradients to ``a0`` (value-gradient actors roll it through a model);
        default ``min_j Q_j(s, a0)``. The actor loss is ``actor_scale · mean(α log π(a0|s) −
        G₀)`` (the seed's VG divides by H + 1)."""
        q = self.q(obs, act)                                           # [2, B]
        critic_loss = 0.5 * (q - y.detach()).pow(2).mean()
        ret = actor_return if actor_return is not None else self.q_pi
        if self.sac:
            a, log_p = self.sample(obs, noise=noise)
            actor_loss = actor_scale * (self.alpha * log_p - ret(obs, a)).mean()
            alpha = self.log_alpha.exp()
            alpha_loss = (alpha * (-log_p.detach() - self.target_entropy)).mean()
            entropy = -log_p.detach().mean()
        else:
            loc, _ = self._dist(obs, target=False)
            actor_loss = -actor_scale * ret(obs, self._to_env(loc)).mean()
            alpha_loss = torch.zeros((), device=obs.device)
            entropy = torch.zeros((), device=obs.device)
        metrics = {"q_mean": q.detach().mean(), "target_mean": y.detach().mean(),
                   "entropy": entropy}
        return critic_loss, actor_loss, alpha_loss, metrics

    def update(self, obs: torch.Tensor, act: torch.Tensor, y: torch.Tensor,
               generator: torch.Generator | None = None, actor_return=None,
               actor_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """One update on ``obs [B, O]``, ``act [B, A]`` (env actions), ``y [B]``: the three
        gradients from the same old state, applied together, then Polyak. Metrics as tensors.
        ``actor_return``, ``actor_scale``: as :meth:`losses`."""
        noise = self._noise(act, generator)
        critic_loss, actor_loss, alpha_loss, metrics = self.losses(
            obs, act, y, noise, actor_return, actor_scale)
        for opt in (self.critic_optim, self.actor_optim, self.alpha_optim):
            opt.zero_grad(set_to_none=True)
        (critic_loss + actor_loss + alpha_loss).backward()
        self.critic_optim.step()
        self.actor_optim.step()
        if self.sac:
            self.alpha_optim.step()
        polyak_update(self.critic_target, self.critic, self.cfg.tau_q)
        polyak_update(self.actor_target, self.actor, self.cfg.policy_tau)
        self.num_updates += 1
        return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(),
                "alpha_loss": alpha_loss.detach(), "alpha": self.alpha, **metrics}

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self, *args, **kwargs):  # networks, targets, normaliser + optimisers
        if args or kwargs:
            return super().state_dict(*args, **kwargs)
        return {"module": super().state_dict(), "critic_optim": self.critic_optim.state_dict(),
                "actor_optim": self.actor_optim.state_dict(),
                "alpha_optim": self.alpha_optim.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state, strict: bool = True):
        if "module" not in state:
            return super().load_state_dict(state, strict)
        super().load_state_dict(state["module"])
        self.critic_optim.load_state_dict(state["critic_optim"])
        self.actor_optim.load_state_dict(state["actor_optim"])
        self.alpha_optim.load_state_dict(state["alpha_optim"])
        self.num_updates = int(state["num_updates"])
        return None
