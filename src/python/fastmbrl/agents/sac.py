"""Soft actor-critic as mbrl-lib runs it (its ``pytorch_sac_pranz24`` default), read top to bottom.

* Twin Q critics, evaluated as ONE ensemble of E=2 MLPs through ``fastmbrl.ops.ensemble_mlp``
  (ReLU, ``num_layers`` hidden layers of ``hidden_size``, Xavier-uniform weights, zero biases).
* Tanh-squashed Gaussian policy (log σ clamped to [-20, 2]); actions rescaled to the action
  bounds; log-prob correction ``log(scale·(1 − tanh(u)²) + 1e-6)``. The mean and log σ heads are
  one layer of 2·dim(A) outputs, each half Xavier-initialised as its own ``Linear(hidden, A)``.
* Critic target ``y = r + γ (1 − terminated) (min_k Q̄_k(s', a') − α log π(a'|s'))``, ``a' ~ π(s')``,
  without gradient; critic loss ``MSE(Q1, y) + MSE(Q2, y)``.
* Update order (one :meth:`SAC.update`): critic step; actor step with the *just-updated* critic,
  ``J_π = mean(α log π(a|s) − min_k Q_k(s, a))`` (gradients reach the policy only); temperature
  step (when automatic), ``J_α = −mean(log α · (log π + H*))``; then a soft target update
  ``Q̄ ← (1 − τ) Q̄ + τ Q`` on updates 0, k, 2k, … (k = ``target_update_interval``; mbrl-lib passes
  its update counter *before* incrementing it). The critic loss and the actor loss of one update
  both use the α from before its temperature step.
* One Adam learning rate for all three optimisers; optional gradient-norm clipping of critic and
  actor (VA-MBPO clips both at 2.0).
* Target entropy ``H*``: ``SACConfig.target_entropy``, as mbrl-lib's ``sac_target_entropy``: a
  number is used as is (mbrl-lib's MBPO HalfCheetah uses −1), ``None`` means −dim(A).

Temperature: ``SAC.alpha`` (a buffer) is the α the next update uses; ``log_alpha`` is what the
temperature optimiser trains. By default ``log α`` starts at ``log(cfg.alpha)``. mbrl-lib's pranz24
code instead starts ``log α`` at 0 and uses ``cfg.alpha`` only in the first update (from the
second update on α ≈ 1); ``SACConfig.pranz24_log_alpha_init=True`` reproduces that.

The update never reads a value back to the host and never branches on a tensor's value (metrics
are returned as tensors; the Gaussian noise is drawn before the update, as inputs), so it can be
compiled (``SACConfig.compile``, see :class:`SACConfig`) or captured in a CUDA graph.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..ops import ensemble_mlp

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
EPS = 1e-6
COMPILE_MODES = ("optim", "losses", "losses+optim", "update")


@dataclass
class SACConfig:
    """SAC hyper-parameters (mbrl-lib ``overrides.sac_*`` names without the prefix).

    ``compile`` wraps the update in ``torch.compile``; ``compile_mode`` picks what is compiled:

    * ``"optim"`` (default): only each optimiser's clip-and-Adam-step (fused kernels instead
      of a loop of small ops); the losses and their backward stay eager.
    * ``"losses"``: the critic and actor losses (forward and, through AOTAutograd, backward);
      ``zero_grad``, clipping and the Adam steps stay eager.
    * ``"losses+optim"``: both of the above.
    * ``"update"``: the whole update method, graph breaks at each ``backward()``.

    Verdict on CPU (benchmarks/results/2026-11-21-cpu-sac.txt, 1 thread, hidden 512, batch
    256, a shared 2-core VM): ``"optim"`` is on par with eager (within the noise); every mode
    that compiles the losses is 25-45 % slower than eager (inductor's CPU code for the
    ensemble matmuls and their transposes loses to eager ``bmm``). So leave ``compile=False``
    on CPU. The first update pays seconds to a minute of compilation. Not yet measured on a
    GPU, where the verdict may differ. Compiled and eager updates give the same parameters
    within float32 round-off (tests/test_sac.py). ``compile_backend`` is passed to ``torch.compile``
    (``"inductor"``; ``"aot_eager"`` for fast checks).
    """

    gamma: float = 0.99
    tau: float = 0.005
    alpha: float = 0.2  # α of the first update (fixed when automatic_entropy_tuning is False)
    lr: float = 3e-4
    hidden_size: int = 256
    num_layers: int = 2  # hidden layers of the critics and of the policy
    target_update_interval: int = 1
    automatic_entropy_tuning: bool = True
    target_entropy: float | None = None  # None: −dim(A), as the SAC paper
    pranz24_log_alpha_init: bool = False  # True: log α starts at 0 after the first update
    batch_size: int = 256
    grad_clip_norm: float | None = None  # VA-MBPO clips critic and actor at 2.0
    compile: bool = False  # torch.compile the update step
    compile_mode: str = "optim"
    compile_backend: str = "inductor"

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
            "grad_clip_norm": self.grad_clip_norm is None or self.grad_clip_norm > 0,
            "compile_mode": self.compile_mode in COMPILE_MODES,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            shown = ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            raise ValueError(f"SACConfig: invalid {shown}")


def _xavier(shape: tuple[int, ...], fan_in: int, fan_out: int, gen: torch.Generator | None):
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


def _ensemble_linear_params(E: int, sizes: list[int], gen: torch.Generator | None,
                            last_heads: int = 1, bias_init: float = 0.0):
    """Xavier-uniform weights ``[E, in, out]`` and biases ``[E, out]`` (all ``bias_init``,
    default zero) per layer.

    ``last_heads`` > 1 initialises the last layer as that many side-by-side ``Linear`` layers of
    ``out / last_heads`` outputs each (the policy's mean and log σ heads).
    """
    weights, biases = nn.ParameterList(), nn.ParameterList()
    n_layers = len(sizes) - 1
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        heads = last_heads if layer == n_layers - 1 else 1
        w = torch.cat(
            [_xavier((E, fan_in, fan_out // heads), fan_in, fan_out // heads, gen)
             for _ in range(heads)], dim=-1)
        weights.append(nn.Parameter(w))
        biases.append(nn.Parameter(torch.full((E, fan_out), float(bias_init))))
    return weights, biases


def squashed_gaussian_log_prob(u: torch.Tensor, log_std: torch.Tensor,
                               mean: torch.Tensor | None = None, z: torch.Tensor | None = None,
                               scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Log-density ``[B]`` of ``a = scale·tanh(u)`` for ``u ~ N(mean, σ²)`` (``[B, A]`` each):
    ``Σ_A [log N(u; mean, σ) − log(scale·(1 − tanh(u)²) + 1e-6)]``. ``z = (u − mean)/σ`` may be
    given instead of ``mean`` (the noise that drew ``u``). Shared by both SACs' policies."""
    if z is None:
        z = (u - mean) / log_std.exp()
    log_n = -0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
    return (log_n - torch.log(scale * (1 - torch.tanh(u).pow(2)) + EPS)).sum(-1)


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``θ̄ ← (1 − τ) θ̄ + τ θ`` over the parameters of two modules of the same structure."""
    for p, tp in zip(source.parameters(), target.parameters(), strict=True):
        tp.lerp_(p, tau)


class TwinCritic(nn.Module):
    """``Q_k(s, a)``, k = 1, 2, as one E=2 ensemble MLP: ``(obs [B, O], act [B, A]) -> [2, B]``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int | list[int], num_layers: int,
                 gen: torch.Generator | None = None, num_q: int = 2, bias_init: float = 0.0):
        super().__init__()
        widths = [hidden] * num_layers if isinstance(hidden, int) else list(hidden)
        sizes = [obs_dim + act_dim] + widths + [1]
        self.weights, self.biases = _ensemble_linear_params(num_q, sizes, gen,
                                                            bias_init=bias_init)

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
        self.weights, self.biases = _ensemble_linear_params(1, sizes, gen, last_heads=2)
        self.act_dim = act_dim
        self.register_buffer("action_scale", (action_high - action_low) / 2.0)
        self.register_buffer("action_bias", (action_high + action_low) / 2.0)

    def forward(self, obs: torch.Tensor):
        """``(mean [B, A], log_std [B, A])`` of the pre-tanh Gaussian (log σ clamped)."""
        out = ensemble_mlp(obs, list(self.weights), list(self.biases), activation="relu")[0]
        mean, log_std = out[..., : self.act_dim], out[..., self.act_dim :]
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None):
        """Reparameterised sample: ``(action [B, A], log_prob [B, 1], mean_action [B, A])``.

        ``u = mean + σ·ε`` with ``ε = noise`` (``[B, A]`` standard normal) or, if None, drawn
        from ``generator``; ``action = scale·tanh(u) + bias``;
        ``log π = Σ_A [log N(u; mean, σ) − log(scale·(1 − tanh(u)²) + 1e-6)]``.
        """
        mean, log_std = self(obs)
        std = log_std.exp()
        if noise is None:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device,
                                dtype=mean.dtype)
        u = mean + std * noise
        y = torch.tanh(u)
        action = y * self.action_scale + self.action_bias
        log_prob = squashed_gaussian_log_prob(u, log_std, z=noise, scale=self.action_scale)
        mean_action = torch.tanh(mean) * self.action_scale + self.action_bias
        return action, log_prob.unsqueeze(-1), mean_action


class SAC(nn.Module):
    """The agent: networks, optimisers, temperature and the update step."""

    def __init__(self, obs_dim: int, act_dim: int, action_low, action_high,
                 cfg: SACConfig | None = None, device: str | torch.device = "cpu",
                 seed: int | None = None):
        super().__init__()
        self.cfg = cfg = cfg or SACConfig()
        cfg.validate()
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        low = torch.as_tensor(action_low, dtype=torch.float32).reshape(act_dim)
        high = torch.as_tensor(action_high, dtype=torch.float32).reshape(act_dim)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.critic = TwinCritic(obs_dim, act_dim, cfg.hidden_size, cfg.num_layers, gen)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.policy = TanhGaussianPolicy(obs_dim, act_dim, cfg.hidden_size, cfg.num_layers,
                                         low, high, gen)
        log_alpha0 = 0.0 if cfg.pranz24_log_alpha_init else math.log(cfg.alpha)
        self.log_alpha = nn.Parameter(torch.tensor(log_alpha0),
                                      requires_grad=cfg.automatic_entropy_tuning)
        self.register_buffer("alpha", torch.tensor(float(cfg.alpha)))  # α of the next update
        self.target_entropy = float(-act_dim if cfg.target_entropy is None else cfg.target_entropy)
        self.to(device)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)
        self.policy_optim = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=cfg.lr)
        self.num_updates = 0
        self.critic_only_updates = 0
        # bumped whenever the critic's parameters change (caches of value gradients key on it)
        self.critic_version = 0
        self._setup_compile()

    def _setup_compile(self) -> None:
        """Pick the (possibly compiled) callables the update runs; see :class:`SACConfig`."""
        cfg = self.cfg
        self._critic_loss_fn = self.critic_loss
        self._actor_loss_fn = self.actor_loss
        self._critic_step_fn = self._critic_step
        self._policy_step_fn = self._policy_step
        self._update_fn = self._update
        if not cfg.compile:
            return

        def comp(fn):
            return torch.compile(fn, backend=cfg.compile_backend)

        if cfg.compile_mode == "update":
            self._update_fn = comp(self._update)
            return
        if cfg.compile_mode in ("losses", "losses+optim"):
            self._critic_loss_fn = comp(self.critic_loss)
            self._actor_loss_fn = comp(self.actor_loss)
        if cfg.compile_mode in ("optim", "losses+optim"):
            self._critic_step_fn = comp(self._critic_step)
            self._policy_step_fn = comp(self._policy_step)

    @property
    def device(self) -> torch.device:
        return self.log_alpha.device

    @torch.no_grad()
    def act(self, obs, sample: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions for ``obs [B, O]`` (or ``[O]``; a tensor or an array): a sample, or the mean
        action (mbrl-lib's default when stepping the real environment and when evaluating)."""
        obs = torch.as_tensor(obs).to(self.device, torch.float32)
        single = obs.dim() == 1
        obs = obs.unsqueeze(0) if single else obs
        action, _, mean_action = self.policy.sample(obs, generator)
        out = action if sample else mean_action
        return out[0] if single else out

    # ---- losses (pure functions of the batch, the noise and the current parameters) -----------
    def critic_loss(self, obs, act, reward, next_obs, terminated, noise_next):
        """``(MSE(Q1, y) + MSE(Q2, y), y [B])``; ``y`` is computed without gradient."""
        with torch.no_grad():
            next_action, next_log_pi, _ = self.policy.sample(next_obs, noise=noise_next)
            q_next = self.critic_target(next_obs, next_action).min(0).values  # [B]
            v_next = q_next - self.alpha * next_log_pi.squeeze(-1)
            not_done = 1.0 - terminated.to(v_next.dtype)
            target = reward + not_done * self.cfg.gamma * v_next  # [B]
        q = self.critic(obs, act)  # [2, B]
        return ((q - target) ** 2).mean(-1).sum(), target

    def actor_loss(self, obs, noise):
        """``(mean(α log π − min_k Q_k(s, π(s))), log π [B] detached)``; the critic's
        parameters are detached, so gradients reach the policy only."""
        pi, log_pi, _ = self.policy.sample(obs, noise=noise)
        log_pi = log_pi.squeeze(-1)
        q_pi = self.critic(obs, pi, detach_params=True).min(0).values
        return (self.alpha * log_pi - q_pi).mean(), log_pi.detach()

    def alpha_loss(self, log_pi):
        """``−mean(log α · (log π + H*))`` with ``log π`` detached."""
        return -(self.log_alpha * (log_pi.detach() + self.target_entropy)).mean()

    # ---- optimiser steps -----------------------------------------------------------------------
    def _clip(self, params) -> None:
        if self.cfg.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip_norm)

    def _critic_step(self) -> None:
        self._clip(list(self.critic.parameters()))
        self.critic_optim.step()

    def _policy_step(self) -> None:
        self._clip(list(self.policy.parameters()))
        self.policy_optim.step()

    def _update(self, obs, act, reward, next_obs, terminated, noise_next, noise_pi):
        # ---- critic ---------------------------------------------------------------------
        critic_loss, target = self._critic_loss_fn(obs, act, reward, next_obs, terminated,
                                                   noise_next)
        self.critic_optim.zero_grad(set_to_none=True)
        critic_loss.backward()
        self._critic_step_fn()
        # ---- actor, with the updated critic ---------------------------------------------
        actor_loss, log_pi = self._actor_loss_fn(obs, noise_pi)
        self.policy_optim.zero_grad(set_to_none=True)
        actor_loss.backward()
        self._policy_step_fn()
        # ---- temperature ----------------------------------------------------------------
        if self.cfg.automatic_entropy_tuning:
            alpha_loss = self.alpha_loss(log_pi)
            self.alpha_optim.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_optim.step()
            with torch.no_grad():
                self.alpha.copy_(self.log_alpha.exp())
        else:
            alpha_loss = torch.zeros((), device=obs.device)
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "alpha_loss": alpha_loss.detach(),
            "alpha": self.alpha.clone(),
            "entropy": -log_pi.mean(),
            "q_target_mean": target.mean(),
        }

    @torch.no_grad()
    def soft_update_target(self) -> None:
        """``Q̄ ← (1 − τ) Q̄ + τ Q``."""
        polyak_update(self.critic_target, self.critic, self.cfg.tau)

    def update(self, obs, act, reward, next_obs, terminated,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One SAC update from a batch: ``obs, next_obs [B, O]``, ``act [B, A]``, ``reward`` and
        ``terminated`` ``[B]`` (or ``[B, 1]``). Metrics are returned as (device) tensors.

        The policy noise is drawn here, ``ε' [B, A]`` for ``s'`` first and then ``ε [B, A]`` for
        ``s`` (mbrl-lib's order), from ``generator`` or the global generator.
        """
        B = obs.shape[0]
        kw = dict(generator=generator, device=obs.device, dtype=obs.dtype)
        noise_next = torch.randn(B, self.act_dim, **kw)
        noise_pi = torch.randn(B, self.act_dim, **kw)
        metrics = self._update_fn(obs, act, reward.reshape(-1).to(obs.dtype), next_obs,
                                  terminated.reshape(-1).to(obs.dtype), noise_next, noise_pi)
        if self.num_updates % self.cfg.target_update_interval == 0:
            self.soft_update_target()
        self.num_updates += 1
        self.critic_version += 1
        return metrics

    def update_critic(self, obs, act, reward, next_obs, terminated,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """A critic-only update (VA-MBPO's value refitting inside model learning): the critic
        step of :meth:`update`, then a soft target update on critic-only updates 0, k, 2k, …
        (k = ``target_update_interval``). Policy and α are not touched. Returns the critic loss.
        """
        noise_next = torch.randn(obs.shape[0], self.act_dim, generator=generator,
                                 device=obs.device, dtype=obs.dtype)
        loss, _ = self.critic_loss(obs, act, reward.reshape(-1).to(obs.dtype), next_obs,
                                   terminated.reshape(-1).to(obs.dtype), noise_next)
        self.critic_optim.zero_grad(set_to_none=True)
        loss.backward()
        self._critic_step()
        if self.critic_only_updates % self.cfg.target_update_interval == 0:
            self.soft_update_target()
        self.critic_only_updates += 1
        self.critic_version += 1
        return loss.detach()

    def full_state_dict(self) -> dict:
        """Networks, optimisers and counters: everything a resumed run needs."""
        return {
            "cfg": asdict(self.cfg),
            "module": self.state_dict(),
            "critic_optim": self.critic_optim.state_dict(),
            "policy_optim": self.policy_optim.state_dict(),
            "alpha_optim": self.alpha_optim.state_dict(),
            "num_updates": self.num_updates,
            "critic_only_updates": self.critic_only_updates,
        }

    def load_full_state_dict(self, state: dict) -> None:
        self.load_state_dict(state["module"])
        self.critic_optim.load_state_dict(state["critic_optim"])
        self.policy_optim.load_state_dict(state["policy_optim"])
        self.alpha_optim.load_state_dict(state["alpha_optim"])
        self.num_updates = int(state["num_updates"])
        self.critic_only_updates = int(state.get("critic_only_updates", 0))
        self.critic_version += 1
