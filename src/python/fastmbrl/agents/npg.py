"""Natural policy gradient as mjrl (v2) runs it: Gaussian MLP policy, conjugate gradient on the
Fisher-vector product, MLP baseline with time features, GAE. Everything is batched over all
paths at once (paths are padded to ``[P, T]`` with their lengths): no Python loop over paths or
time steps.

Policy (mjrl ``policies/gaussian_mlp.py``)::

    μ(s) = W_L tanh(… tanh(W_1 (s - in_shift)/(in_scale + 1e-6) + b_1) …) + b_L
    a ~ N(μ(s), diag(exp(log_std))²),  one global log_std [A], clamped to [min_log_std, 1]

Hidden layers use tanh; layers start as ``nn.Linear`` (U(±1/√fan_in)), the last one scaled by
1e-2. The flat parameter vector is ``[log_std, W_1, b_1, …, W_L, b_L]`` (mjrl's order; weights
stored ``[out, in]``).

NPG step (mjrl ``algos/npg_cg.py``), on rows ``(s_i, a_i, Â_i)``, ``i = 1..M``::

    Â   = (A - mean A) / (std A + 1e-6)                         whitened advantages
    g   = ∇_θ (1/M) Σ_i log π_θ(a_i|s_i) Â_i
    F v = ∇²_θ (1/M) Σ_i KL(π_old(·|s_i) ‖ π_θ(·|s_i)) · v  +  damping · v
    x   = CG(F, g)  from x0 = g (mjrl; ``cg_x0="zero"`` starts from 0), ``cg_iters`` iterations
    α   = sqrt(|δ / (gᵀx + 1e-10)|),   θ ← θ + α x,   log_std clamped

δ is ``normalized_step_size`` ("twice the desired KL"), so the step's mean KL is ≈ δ/2.
The Fisher-vector product is computed exactly (the KL Hessian at θ = θ_old is the Gauss-Newton
matrix ``Jᵀ diag(1/σ²) J / M`` for the mean plus ``2·I`` for log_std; no cross terms) with one
forward-mode and one reverse-mode pass per product, in ``npg_dtype`` (float64 by default: with
25 CG iterations at damping 1e-3 the direction computed in float32 is fragile, see
docs/npg.md).

Baseline (mjrl ``baselines/mlp_baseline.py``): an MLP (128, 128, ReLU) on
``[clip(s, ±10)/10, t/1000, (t/1000)², (t/1000)³, (t/1000)⁴]`` regressed on Monte-Carlo
returns with Adam (lr 1e-3, weight decay 1e-3, batch 128), one epoch of
``max(⌊M/128⌋ - 1, 1)`` minibatches (mjrl's count), after each policy step.

GAE (mjrl ``utils/process_samples.py``)::

    δ_t = r_t + γ b_{t+1} - b_t,   b_T = 0 if the path terminated, else b_{T-1}
    A_t = Σ_{k≥t} (γλ)^{k-t} δ_k,   returns R_t = Σ_{k≥t} γ^{k-t} r_k (no bootstrap)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------------
# Policy
# ---------------------------------------------------------------------------------------------
def _linear_init(fan_in: int, fan_out: int, gen: torch.Generator | None):
    bound = 1.0 / math.sqrt(fan_in)
    w = (torch.rand(fan_out, fan_in, generator=gen) * 2 - 1) * bound
    b = (torch.rand(fan_out, generator=gen) * 2 - 1) * bound
    return w, b


def mlp_mean(obs: torch.Tensor, params: list[torch.Tensor], in_shift: torch.Tensor,
             in_scale: torch.Tensor) -> torch.Tensor:
    """μ(obs) of the policy MLP with ``params = [W_1, b_1, …, W_L, b_L]`` (tanh hidden layers);
    ``obs [..., O]`` -> ``[..., A]`` in the params' dtype."""
    h = (obs.to(params[0].dtype) - in_shift.to(params[0].dtype)) / (
        in_scale.to(params[0].dtype) + 1e-6)
    last = len(params) // 2 - 1
    for i in range(0, len(params), 2):
        h = torch.nn.functional.linear(h, params[i], params[i + 1])
        if i // 2 < last:
            h = torch.tanh(h)
    return h


class GaussianMLPPolicy(nn.Module):
    """mjrl's Gaussian MLP policy; see the module docstring.

    Args:
        obs_dim, act_dim: O and A.
        hidden_sizes: hidden widths (mjrl ``policy_size``, default (64, 64)).
        init_log_std: the initial value of every log_std entry.
        min_log_std: lower clamp of log_std (upper: 1.0).
        seed: seeds the initialisation (a private generator; global RNGs are untouched).
    """

    MAX_LOG_STD = 1.0

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes=(64, 64),
                 init_log_std: float = 0.0, min_log_std: float = -3.0, seed: int = 0):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.min_log_std = float(min_log_std)
        gen = torch.Generator().manual_seed(int(seed))
        sizes = [obs_dim, *self.hidden_sizes, act_dim]
        params = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            w, bias = _linear_init(a, b, gen)
            if i == len(sizes) - 2:
                w, bias = w * 1e-2, bias * 1e-2
            params += [nn.Parameter(w), nn.Parameter(bias)]
        self.params = nn.ParameterList(params)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))
        self.register_buffer("in_shift", torch.zeros(obs_dim))
        self.register_buffer("in_scale", torch.ones(obs_dim))

    # ---- evaluation ---------------------------------------------------------------------------
    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        """μ(obs): ``[..., O]`` -> ``[..., A]``."""
        return mlp_mean(obs, list(self.params), self.in_shift, self.in_scale)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, sample: bool = True,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """``μ(obs) + ε·exp(log_std)`` (``sample``) or ``μ(obs)``; not clipped (as mjrl)."""
        mu = self.mean(obs)
        if not sample:
            return mu
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + eps * self.log_std.exp()

    # ---- flat parameters (mjrl order) ----------------------------------------------------------
    def flat_params(self) -> torch.Tensor:
        return torch.cat([self.log_std.reshape(-1)] + [p.reshape(-1) for p in self.params])

    @torch.no_grad()
    def set_flat_params(self, flat: torch.Tensor) -> None:
        """Write ``flat`` into the parameters (mjrl order), clamping log_std."""
        i = 0
        for p in [self.log_std, *self.params]:
            n = p.numel()
            p.copy_(flat[i:i + n].view_as(p).to(p.dtype))
            i += n
        if i != flat.numel():
            raise ValueError(f"set_flat_params: expected {i} values, got {flat.numel()}")
        self.log_std.clamp_(self.min_log_std, self.MAX_LOG_STD)

    @property
    def num_params(self) -> int:
        return self.log_std.numel() + sum(p.numel() for p in self.params)


def gaussian_log_prob(act: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor):
    """log N(act; mean, diag(exp(log_std))²) summed over the last dim: ``[..., A]`` -> ``[...]``."""
    z = (act - mean) / log_std.exp()
    return -0.5 * z.square().sum(-1) - log_std.sum() - 0.5 * act.shape[-1] * LOG_2PI


def mean_kl(mean_old, log_std_old, mean_new, log_std_new) -> torch.Tensor:
    """mean over rows of KL(N_old ‖ N_new) (mjrl's formula, denominator 2σ_new² + 1e-8)."""
    var_old, var_new = (2 * log_std_old).exp(), (2 * log_std_new).exp()
    kl = (log_std_new - log_std_old
          + (var_old + (mean_old - mean_new).square()) / (2 * var_new + 1e-8) - 0.5)
    return kl.sum(-1).mean()


# ---------------------------------------------------------------------------------------------
# Conjugate gradient
# ---------------------------------------------------------------------------------------------
def cg_solve(f_Ax: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
             x0: torch.Tensor | None = None, iters: int = 10,
             residual_tol: float = 1e-10) -> torch.Tensor:
    """Solve ``A x = b`` for symmetric positive-definite A given as ``f_Ax(v) = A v``.

    mjrl's ``cg_solve``: starts from ``x0`` (zero when None), runs at most ``iters`` iterations
    and stops once the squared residual ``r·r`` falls below ``residual_tol`` (tested after each
    update, so at least one iteration runs).
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - f_Ax(x) if x0 is not None else b.clone()
    p = r.clone()
    rdotr = r.dot(r)
    for _ in range(int(iters)):
        z = f_Ax(p)
        v = rdotr / p.dot(z)
        x += v * p
        r -= v * z
        new_rdotr = r.dot(r)
        p = r + (new_rdotr / rdotr) * p
        rdotr = new_rdotr
        if rdotr < residual_tol:
            break
    return x


# ---------------------------------------------------------------------------------------------
# NPG step
# ---------------------------------------------------------------------------------------------
@dataclass
class NPGConfig:
    """``normalized_step_size`` δ, CG ``cg_iters`` / ``cg_damping`` (mjrl FIM_invert_args),
    ``cg_x0`` ("g": mjrl's start from the gradient, "zero"), ``hvp_sample_frac`` (Fisher
    products on a with-replacement subsample of the rows when < 0.99, as mjrl) and the dtype
    of the step's arithmetic (``"float64"`` or ``"float32"``)."""

    normalized_step_size: float = 0.05
    cg_iters: int = 25
    cg_damping: float = 1e-3
    cg_x0: str = "g"
    hvp_sample_frac: float = 1.0
    dtype: str = "float64"


def fisher_vector_product(obs: torch.Tensor, params: list[torch.Tensor], log_std: torch.Tensor,
                          in_shift: torch.Tensor, in_scale: torch.Tensor, damping: float):
    """``v -> F v + damping·v`` at the policy ``(params, log_std)`` on rows ``obs [M, O]``, with
    F the Hessian of the mean KL(π_old ‖ π_θ) at θ = θ_old (flat mjrl order ``[log_std,
    W_1, b_1, …]``): ``(1/M) Jᵀ diag(1/σ²) J`` for the mean's parameters (J = ∂μ/∂θ, one
    forward-mode and one reverse-mode pass), ``2·I`` for log_std, no cross terms."""
    sizes = [log_std.numel()] + [p.numel() for p in params]
    inv_var = 1.0 / ((2 * log_std).exp() + 5e-9)  # mjrl's KL denominator 2σ² + 1e-8
    n_rows = obs.shape[0]

    def mean_of(*ws):
        return mlp_mean(obs, list(ws), in_shift, in_scale)

    _, vjp_fn = torch.func.vjp(mean_of, *params)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        parts = torch.split(v, sizes)
        v_ps = tuple(q.view_as(p) for q, p in zip(parts[1:], params, strict=True))
        _, jv = torch.func.jvp(mean_of, tuple(params), v_ps)
        back = vjp_fn(jv * inv_var / n_rows)
        return torch.cat([2.0 * parts[0]] + [b.reshape(-1) for b in back]) + damping * v

    return fvp


def whiten(adv: torch.Tensor) -> torch.Tensor:
    """``(A - mean) / (std + 1e-6)`` (numpy's population std, as mjrl)."""
    return (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-6)


def npg_step(policy: GaussianMLPPolicy, obs: torch.Tensor, act: torch.Tensor,
             adv: torch.Tensor, cfg: NPGConfig,
             generator: torch.Generator | None = None) -> dict[str, float]:
    """One natural-gradient step of ``policy`` on rows ``obs [M, O]``, ``act [M, A]``,
    ``adv [M]`` (raw advantages; whitened here). Updates the policy in place and returns
    ``{"alpha", "kl", "quad_kl", "surr_improvement", "grad_norm", "log_std_mean"}`` (``kl``:
    the step's mean KL; ``quad_kl``: ½α²xᵀFx, its quadratic-model value, δ/2 when CG
    converged)."""
    dtype = {"float64": torch.float64, "float32": torch.float32}[cfg.dtype]
    obs, act = obs.to(dtype), act.to(dtype)
    adv = whiten(adv.to(dtype))
    params = [p.detach().to(dtype) for p in policy.params]
    log_std = policy.log_std.detach().to(dtype)
    shift, scale = policy.in_shift.to(dtype), policy.in_scale.to(dtype)
    # surrogate gradient g = ∇ mean(log π · Â)
    ls = log_std.clone().requires_grad_(True)
    ps = [p.clone().requires_grad_(True) for p in params]
    mu_old = mlp_mean(obs, ps, shift, scale)
    surr = (gaussian_log_prob(act, mu_old, ls) * adv).mean()
    grads = torch.autograd.grad(surr, [ls, *ps])
    g = torch.cat([x.reshape(-1) for x in grads]).detach()
    mu_old = mu_old.detach()

    if cfg.hvp_sample_frac < 0.99:  # Fisher products on a subsample (with replacement)
        m = max(int(cfg.hvp_sample_frac * obs.shape[0]), 1)
        idx = torch.randint(obs.shape[0], (m,), generator=generator, device=obs.device)
        obs_h = obs[idx]
    else:
        obs_h = obs
    fvp = fisher_vector_product(obs_h, params, log_std, shift, scale, cfg.cg_damping)
    x = cg_solve(fvp, g, x0=g.clone() if cfg.cg_x0 == "g" else None, iters=cfg.cg_iters)
    alpha = math.sqrt(abs(cfg.normalized_step_size / (float(g.dot(x)) + 1e-10)))
    quad_kl = 0.5 * alpha ** 2 * float(x.dot(fvp(x)))  # the step's KL under the quadratic model
    theta_old = torch.cat([log_std] + [p.reshape(-1) for p in params])
    theta_new = theta_old + alpha * x
    policy.set_flat_params(theta_new)

    with torch.no_grad():
        new_ls = policy.log_std.detach().to(dtype)
        new_ps = [p.detach().to(dtype) for p in policy.params]
        mu_new = mlp_mean(obs, new_ps, shift, scale)
        kl = mean_kl(mu_old, log_std, mu_new, new_ls)
        surr_new = (gaussian_log_prob(act, mu_new, new_ls) * adv).mean()
    return {"alpha": alpha, "kl": float(kl), "quad_kl": quad_kl,
            "surr_improvement": float(surr_new - surr.detach()),
            "grad_norm": float(g.norm()), "log_std_mean": float(new_ls.mean())}


# ---------------------------------------------------------------------------------------------
# Advantages
# ---------------------------------------------------------------------------------------------
def discount_matrix(T: int, c: float, dtype=torch.float64, device=None) -> torch.Tensor:
    """``D [T, T]`` with ``D[t, k] = c^{k-t}`` for ``k ≥ t``, else 0 (so ``x @ D.T`` is the
    discounted sum ``Σ_{k≥t} c^{k-t} x_k`` of each row)."""
    t = torch.arange(T, device=device, dtype=dtype)
    diff = t.unsqueeze(0) - t.unsqueeze(1)  # k - t
    powers = torch.as_tensor(c, dtype=dtype, device=device) ** diff.clamp(min=0)
    return torch.where(diff >= 0, powers, torch.zeros((), dtype=dtype, device=device))


def discount_sum(x: torch.Tensor, c: float) -> torch.Tensor:
    """Row-wise ``Σ_{k≥t} c^{k-t} x_k`` of ``x [P, T]`` (float64 arithmetic, x's dtype out)."""
    D = discount_matrix(x.shape[-1], c, device=x.device)
    return (x.to(torch.float64) @ D.T).to(x.dtype)


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor,
                terminated: torch.Tensor, gamma: float, gae_lambda: float):
    """GAE and Monte-Carlo returns of padded paths, mjrl's bootstrap rule.

    Args:
        rewards, values: ``[P, T]`` (entries at ``t ≥ lengths[p]`` are ignored).
        lengths: ``[P]`` long, path lengths ``T_p ≥ 1``.
        terminated: ``[P]`` bool; a terminated path bootstraps with 0, others with
            ``b_{T_p - 1}``.

    Returns:
        ``(advantages [P, T], returns [P, T])``, zero beyond each path's length (float64).
    """
    P, T = rewards.shape
    t = torch.arange(T, device=rewards.device)
    valid = t.unsqueeze(0) < lengths.unsqueeze(1)
    r = torch.where(valid, rewards.to(torch.float64), 0.0)
    b = torch.where(valid, values.to(torch.float64), 0.0)
    last = b.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    b_end = torch.where(terminated, torch.zeros_like(last), last)
    b_next = torch.cat([b[:, 1:], torch.zeros(P, 1, dtype=b.dtype, device=b.device)], 1)
    b_next = torch.where(t.unsqueeze(0) == (lengths - 1).unsqueeze(1), b_end.unsqueeze(1), b_next)
    delta = torch.where(valid, r + gamma * b_next - b, 0.0)
    return discount_sum(delta, gamma * gae_lambda), discount_sum(r, gamma)


# ---------------------------------------------------------------------------------------------
# Baseline
# ---------------------------------------------------------------------------------------------
class MLPBaseline(nn.Module):
    """mjrl's MLP value baseline on observation + time features; see the module docstring."""

    def __init__(self, obs_dim: int, hidden_sizes=(128, 128), lr: float = 1e-3,
                 weight_decay: float = 1e-3, batch_size: int = 128, epochs: int = 1,
                 seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed) + 7)
        sizes = [obs_dim + 4, *hidden_sizes, 1]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            lin = nn.Linear(a, b)
            w, bias = _linear_init(a, b, gen)
            with torch.no_grad():
                lin.weight.copy_(w)
                lin.bias.copy_(bias)
            layers.append(lin)
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        # observations are multiplied by this before the features (mjrl's obs_mask)
        self.register_buffer("obs_scale", torch.ones(obs_dim))
        self.batch_size, self.epochs = int(batch_size), int(epochs)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr, weight_decay=weight_decay)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs [P, T, O]`` -> ``[P, T, O + 4]``: clipped scaled obs and (t/1000)^{1..4}."""
        P, T, _ = obs.shape
        o = (obs.float() * self.obs_scale).clamp(-10.0, 10.0) / 10.0
        t = (torch.arange(T, device=obs.device, dtype=torch.float32) / 1000.0).view(1, T, 1)
        tf = torch.cat([t, t ** 2, t ** 3, t ** 4], -1).expand(P, T, 4)
        return torch.cat([o, tf], -1)

    @torch.no_grad()
    def predict(self, obs: torch.Tensor) -> torch.Tensor:
        """Values ``[P, T]`` of padded paths ``obs [P, T, O]``."""
        return self.net(self.features(obs)).squeeze(-1)

    def fit(self, obs: torch.Tensor, returns: torch.Tensor, valid: torch.Tensor,
            generator: torch.Generator | None = None) -> float:
        """One epoch of minibatch regression on the valid rows; returns the last loss."""
        x = self.features(obs)[valid]
        y = returns.float()[valid].unsqueeze(-1)
        n = x.shape[0]
        loss = torch.zeros(())
        for _ in range(self.epochs):
            perm = torch.randperm(n, generator=generator, device=x.device)
            for mb in range(max(n // self.batch_size - 1, 1)):
                idx = perm[mb * self.batch_size:(mb + 1) * self.batch_size]
                loss = (self.net(x[idx]) - y[idx]).square().mean()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
        return float(loss.detach())
