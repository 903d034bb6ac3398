"""Soft (double) Q-learning with a Boltzmann policy for discrete actions (OMD's CartPole agent).

* ``Q_k(s, ·)``, k = 1, 2 (one with ``double=False``): ReLU MLPs ``obs -> hidden -> hidden ->
  |A|``, orthogonal init (gain √2, last layer 0.01), zero biases; parameters are a dict
  (:mod:`fastmbrl.models.omd_models`) so the loss is a function of them (implicit gradients).
* Target ``y = r + γ · notdone · V̄(s')`` with ``V̄(s') = α logsumexp(min_k Q̄_k(s', ·)/α)``
  (``hard``: ``max`` instead of the soft maximum; ``double=False``: the single Q̄); the target
  parameters are constants, ``s'`` is not (OMD's gradient reaches the model through it).
* Loss ``½ Σ_k mean_B (Q_k(s, a) − y)²`` (``double=False``: ``mean_B (Q(s, a) − y)²``).
* Policy: ``a ~ softmax(Q̃(s, ·)/α)`` with ``Q̃ = ½(Q_1 + Q_2)`` (``hard``: argmax).
* Step: Adam (lr ``inner_lr``) on the loss, then Polyak ``Q̄ ← (1 − τ) Q̄ + τ Q``.
"""

from __future__ import annotations

import torch

from ..models.omd_models import Params, init_mlp, leaf_params, mlp


class SoftDoubleQ:
    def __init__(self, obs_dim: int, num_actions: int, hidden: int, *, alpha: float,
                 gamma: float, tau: float, lr: float, double: bool = True, hard: bool = False,
                 gen: torch.Generator, dtype=torch.float64, device="cpu"):
        self.num_actions, self.alpha, self.gamma, self.tau = num_actions, alpha, gamma, tau
        self.double, self.hard, self.lr = double, hard, lr
        self.obs_dim, self.hidden, self.dtype, self.device = obs_dim, hidden, dtype, device
        self.params = leaf_params(self.fresh_params(gen), device)
        self.target = {k: v.detach().clone() for k, v in self.params.items()}
        self.optim = torch.optim.Adam(list(self.params.values()), lr=lr)

    def fresh_params(self, gen: torch.Generator) -> Params:
        return init_mlp(2 if self.double else 1, [self.obs_dim, self.hidden, self.hidden,
                                                  self.num_actions], 0.01, gen, self.dtype)

    # ---- functional pieces -----------------------------------------------------------------------
    def q_values(self, params: Params, obs: torch.Tensor) -> torch.Tensor:
        """``[K, B, |A|]`` (K = 2 critics, or 1)."""
        return mlp(params, obs)

    def target_value(self, target: Params, next_obs: torch.Tensor) -> torch.Tensor:
        q = self.q_values({k: v.detach() for k, v in target.items()}, next_obs)
        q = q.min(0).values if self.double else q[0]
        if self.hard:
            return q.max(-1).values
        return self.alpha * torch.logsumexp(q / self.alpha, dim=-1)

    def loss(self, params: Params, target: Params, obs, act, reward, next_obs, notdone):
        """The soft TD loss; ``act`` [B] long, ``reward``/``notdone`` [B]."""
        y = reward + notdone * self.gamma * self.target_value(target, next_obs)
        q = self.q_values(params, obs)  # [K, B, |A|]
        q_sa = q.gather(-1, act.view(1, -1, 1).expand(q.shape[0], -1, 1)).squeeze(-1)
        return 0.5 * ((q_sa - y) ** 2).mean(-1).sum() if self.double else \
            ((q_sa[0] - y) ** 2).mean()

    # ---- stateful steps --------------------------------------------------------------------------
    def step(self, obs, act, reward, next_obs, notdone) -> dict[str, float]:
        """One Adam step on the loss (the model's data already inside ``reward``/``next_obs``,
        detached), then Polyak. Returns ``{"loss_Q", "grad_norm_Q"}``."""
        loss = self.loss(self.params, self.target, obs, act, reward.detach(), next_obs.detach(),
                         notdone)
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.sqrt(sum((p.grad ** 2).sum() for p in self.params.values()))
        self.optim.step()
        self.polyak()
        return {"loss_Q": float(loss.detach()), "grad_norm_Q": float(gnorm)}

    @torch.no_grad()
    def polyak(self) -> None:
        for k, p in self.params.items():
            self.target[k].lerp_(p.detach(), self.tau)

    def reset_optimizer(self) -> None:
        """A fresh Adam state (the original re-initialises it for every OMD inner solve)."""
        self.optim = torch.optim.Adam(list(self.params.values()), lr=self.lr)

    def reinitialise(self, gen: torch.Generator) -> None:
        """``--no_warm``: fresh Q parameters, and the target equal to them."""
        with torch.no_grad():
            for k, v in self.fresh_params(gen).items():
                self.params[k].copy_(v.to(self.device))
                self.target[k].copy_(v.to(self.device))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, gen: torch.Generator) -> int:
        """Boltzmann action (argmax when ``hard``) for one observation ``[O]``."""
        q = self.q_values(self.params, obs.to(self.dtype).view(1, -1))
        q = 0.5 * (q[0] + q[1]) if self.double else q[0]
        if self.hard:
            return int(q.argmax(-1))
        probs = torch.softmax(q / self.alpha, dim=-1)
        return int(torch.multinomial(probs, 1, generator=gen))

    def state_dict(self) -> dict:
        return {"params": {k: v.detach().clone() for k, v in self.params.items()},
                "target": {k: v.clone() for k, v in self.target.items()},
                "optim": self.optim.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for k in self.params:
                self.params[k].copy_(state["params"][k])
                self.target[k].copy_(state["target"][k])
        self.optim.load_state_dict(state["optim"])
