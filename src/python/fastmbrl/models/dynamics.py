"""The value-expansion seed's learned dynamics model (Palenicek et al., ICLR 2023,
``dynamics_models/network_model.py``), built on :class:`GaussianEnsemble`.

One class, no second model implementation: the ensemble is a :class:`GaussianEnsemble` (its
forward is ``fastmbrl.ops.ensemble_mlp``), rollout steps go through :class:`ModelEnv` (the
``ensemble_rollout_step`` op with the task's termination rule), and this module adds the seed's
loss, its training schedule and its prediction rule::

    members       E = 5, 4 x 256 ReLU, predicting [Δs, r] (targets raw, not normalised)
    log-variance  soft-clamped to learnable bounds initialised at (-10, 0.5)
    loss          mean_{e,b} Σ_d [(μ - y)² e^{-lv} + lv] + 0.01 (Σ max_lv - Σ min_lv)
                  (every member sees the same minibatch: no bootstrap resampling)
    training      Adam 3e-4, minibatches of 256 drawn with replacement; pre-training for
                  ``pretrain_epochs · |buffer| / 256`` steps on the warm-up data, then one epoch
                  (|buffer| / 256 steps) per environment step (``model_train_every`` = 1), or
                  one epoch every ``model_train_every`` steps (cheaper)
    prediction    s' = s + Δ̂, Δ̂ a Gaussian sample of one member per row

Differences from the seed (docs/value_expansion.md):
- the input normaliser is the ensemble's own, fitted on the buffer's (obs, action) rows before
  each training call; the seed normalises the observation with the agent's running normaliser
  and feeds the raw action;
- member per row: a balanced random assignment (every member gets N/E rows, as mbrl-lib's
  ``random_model``) where the seed draws each row's member independently;
- weights: mbrl-lib's truncated-normal initialisation (std 1/(2√fan_in)); the seed uses
  haiku's VarianceScaling(fan_in) truncated normal. Biases are zero in both.
"""

from __future__ import annotations

import torch

from ..algorithms.common import ModelEnv
from ..buffers import ReplayBuffer
from ..ops.nll import gaussian_nll
from .ensemble import GaussianEnsemble


class NetworkDynamics:
    """The seed's network model: ``step(obs, act) -> (next_obs, reward, terminated)``.

    Args:
        obs_dim, act_dim: O and A.
        termination: the task's ``TerminationRule`` (evaluated on predicted observations).
        term_fn: the task's termination function (used where ``termination`` is None).
        ensemble_size, num_layers, hid_size: the ensemble (seed: 5, 4, 256).
        lr, batch_size: Adam's learning rate and the minibatch size (seed: 3e-4, 256).
        device, generator: where the parameters live; the random stream of minibatches,
            member choice and Gaussian samples.
    """

    def __init__(self, obs_dim: int, act_dim: int, termination=None, term_fn=None,
                 ensemble_size: int = 5, num_layers: int = 4, hid_size: int = 256,
                 lr: float = 3e-4, batch_size: int = 256, device=None,
                 generator: torch.Generator | None = None):
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.batch_size = int(batch_size)
        self.generator = generator
        self.model = GaussianEnsemble(
            obs_dim + act_dim, obs_dim + 1, ensemble_size=ensemble_size, num_layers=num_layers,
            hid_size=hid_size, activation="relu", learn_logvar_bounds=True,
            num_elites=ensemble_size, propagation_method="random_model", normalize=True,
            normalize_double_precision=False, device=device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.env = ModelEnv(self.model, termination, term_fn, generator=generator)
        self.term_fn = term_fn
        self.train_steps_done = 0

    # ------------------------------------------------------------------ training
    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The seed's loss of inputs ``x [B, O+A]`` (raw) and targets ``y [B, O+1]``
        (``[Δs, r]``): ``mean_{e,b} Σ_d [(μ−y)² e^{−lv} + lv] + 0.01 (Σ max − Σ min)``."""
        m = self.model
        mean, logvar = m(x)
        nll = gaussian_nll(mean, logvar, y, reduction="mean") * y.shape[-1]
        return nll + 0.01 * (m.max_logvar.sum() - m.min_logvar.sum())

    @staticmethod
    def dataset(buffer: ReplayBuffer, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs ``[obs, act]`` and targets ``[next_obs − obs, reward]`` of buffer rows."""
        obs, act = buffer.obs[idx].float(), buffer.act[idx].float()
        nxt, rew = buffer.next_obs[idx].float(), buffer.reward[idx].float()
        return torch.cat([obs, act], -1), torch.cat([nxt - obs, rew.unsqueeze(-1)], -1)

    def fit_normalizer(self, buffer: ReplayBuffer) -> None:
        n = len(buffer)
        x, _ = self.dataset(buffer, torch.arange(n, device=buffer.device))
        self.model.normalizer.fit(x)

    def train_steps(self, buffer: ReplayBuffer, n_steps: int) -> torch.Tensor:
        """``n_steps`` Adam steps on minibatches drawn with replacement from ``buffer``
        (the normaliser refitted first). Returns the mean loss as a 0-d tensor (no sync)."""
        self.fit_normalizer(buffer)
        total = torch.zeros((), device=buffer.device)
        for _ in range(int(n_steps)):
            idx = buffer._indices(self.batch_size, self.generator)
            x, y = self.dataset(buffer, idx)
            loss = self.loss(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total = total + loss.detach()
        self.train_steps_done += int(n_steps)
        return total / max(int(n_steps), 1)

    def epoch_steps(self, buffer: ReplayBuffer, epochs: float = 1.0) -> int:
        """Minibatch steps of ``epochs`` passes over the buffer (at least one)."""
        return max(1, int(epochs * len(buffer) / self.batch_size))

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def step(self, obs: torch.Tensor, act: torch.Tensor):
        """``obs [N, O]``, ``act [N, A]`` -> ``(next_obs [N, O], reward [N], terminated [N])``:
        one member per row, a Gaussian sample, termination on the predicted observation."""
        next_obs, reward, done = self.env.step(obs.float(), act.float(), sample=True)
        return next_obs, reward, done

    def rsample_step(self, obs: torch.Tensor, act: torch.Tensor,
                     members: torch.Tensor | None = None, noise: torch.Tensor | None = None):
        """The step of :meth:`step` with gradients to ``obs`` and ``act`` (value-gradient
        actors): ``ensemble_mlp`` forward and backward (native CPU/CUDA kernels where the
        backend allows), the member of each row drawn as in :meth:`step` (balanced, or
        ``members [N]``), the Gaussian sample reparameterised as ``μ + σ·ε`` (``noise [N, O+1]``
        or fresh). Returns ``(next_obs [N, O], reward [N], terminated [N] bool)``; the
        termination (the task's function on the predicted observation) carries no gradient.
        The model's parameters get no gradient from it (their ``requires_grad`` is off
        during the call)."""
        params = list(self.model.parameters())
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            x = torch.cat([obs, act.to(obs.dtype)], -1)
            mean, logvar = self.model.predict(x, indices=members, generator=self.generator)
            if noise is None:
                noise = torch.randn(mean.shape, generator=self.generator, device=mean.device,
                                    dtype=mean.dtype)
            out = mean + (0.5 * logvar).exp() * noise
        finally:
            for p, f in zip(params, flags, strict=True):
                p.requires_grad_(f)
        next_obs = obs + out[..., :-1].to(obs.dtype)
        reward = out[..., -1].to(obs.dtype)
        if self.term_fn is None:
            done = torch.zeros(obs.shape[0], dtype=torch.bool, device=obs.device)
        else:
            done = self.term_fn(next_obs.detach()).reshape(-1).to(torch.bool)
        return next_obs, reward, done

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "train_steps_done": self.train_steps_done}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.train_steps_done = int(state["train_steps_done"])
