"""OMD on a tabular MDP (Nikishin et al. 2022, the notebook ``tabular.ipynb``), read top to bottom.

The MDP: 2 states, 2 actions (Dadashi et al. 2019, App. A(d)); ``P[a, s, s']``, ``R[s, a]``,
γ = 0.9, τ = 0.01; the best return from the uniform initial state distribution is
J* = 1.0272727.

The model θ = (logits [A, S, S'], r̂ [S, A]), ``P̂ = softmax(logits/τ)`` over s' (the same τ as in
the backup, so P̂ saturates quickly). The inner problem is the soft-Q fixed point

    Q* = B_θ Q*,    B_θ Q = r̂ + γ · P̂ · τ·logsumexp(Q/τ)        (einsum 'ast,t->sa')

solved by fixed-point iteration in float64, warm-started from the previous solution, until
``max|ΔQ| < 1e-10·max|Q| + 1e-10`` (at most 5000 iterations). The gradient of an outer loss
``L_out(Q*)`` reaches θ through :func:`fastmbrl.implicit.fixed_point_vjp`: the adjoint
``u = ū + (∂B_θ/∂Q)ᵀ u`` by the same iteration (``inverse="neumann"``), or ``u = ū``
(``"identity"``), or a dense solve (``"exact"``); then ``∇_θ = (∂B_θ Q*/∂θ)ᵀ u``.

Outer losses: ``-J(softmax(Q*/τ))`` (the exact return of the Boltzmann policy, a linear solve
with the true P, R) or the true Bellman error ``mean((B_true Q* − Q*)²)``. MLE ignores Q*:
``mean_{s,a}(r̂ − r)² + mean_{a,s} KL(P(·|s,a) ‖ P̂(·|s,a))``.

Outer optimiser: Adam (lr 0.01), at most ``max_iter`` = 10,000 iterations, stopping early when
(Q*, θ) no longer change (``max|Δ| < 1e-10·max|new| + 1e-10``); with a norm bound, projected
Adam: after each step ``(logits/τ, r̂)`` is rescaled jointly onto ``‖(logits/τ, r̂)‖₂ ≤ bound``.

Everything is batched: one run is a batch of configurations (seeds × bounds × noise levels),
each converging (and then frozen) on its own. The three studies of the notebook:

* ``misspecification``: J of OMD (returns objective) and MLE against the norm bound
  (linspace(0, 6, 20), seeds 1..10) — ``misspecification.png`` / ``.csv``;
* ``tightness``: Q-approximation errors ``max|Q_opt − Q̂|`` of OMD (Bellman objective) and MLE
  and the gaps to their error bounds — ``tightness.png`` / ``.csv``;
* ``ift``: noise N(0, σ²) added to Q* in every outer step (σ ∈ logspace(-3, 0.5, 30), plain
  Adam, Bellman objective), exact adjoint vs the identity approximation — ``ift.png`` / ``.csv``.
  As the notebook: the *noisy* Q* is the next warm start and enters the outer loss, the adjoint
  uses the clean Q*.

Differences from the notebook: initial values Q0, logits, r̂ ~ U[0, 1) come from torch's
generator seeded with the seed (JAX's PRNG cannot be reproduced), and the noise from one torch
generator per run; the figures plot every bound (the notebook plotted a subset).
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..implicit import fixed_point_vjp

DT = torch.float64
P_TRUE = torch.tensor([[[0.7, 0.3], [0.2, 0.8]], [[0.99, 0.01], [0.99, 0.01]]], dtype=DT)
R_TRUE = torch.tensor([[-0.45, -0.1], [0.5, 0.5]], dtype=DT)
GAMMA = 0.9
TAU = 0.01
J_OPT = 1.0272727  # the notebook's pre-computed optimum
FP_TOL = 1e-10
FP_MAX_ITER = 5000


# ---- the MDP ---------------------------------------------------------------------------------
def soft_bellman(q: torch.Tensor, p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``r + γ P · τ logsumexp(q/τ)``: q, r ``[..., S, A]``, p ``[..., A, S, S']``."""
    v = TAU * torch.logsumexp(q / TAU, dim=-1)  # [..., S']
    pv = (p * v[..., None, None, :]).sum(-1)  # [..., A, S] = Σ_s' P[a, s, s'] v[s']
    return r + GAMMA * pv.transpose(-1, -2)


def model_bellman(q: torch.Tensor, theta: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``B_θ q`` with ``P̂ = softmax(logits/τ)``."""
    logits, r_hat = theta
    return soft_bellman(q, torch.softmax(logits / TAU, dim=-1), r_hat)


def returns(q: torch.Tensor) -> torch.Tensor:
    """Exact return ``J`` of ``π = softmax(q/τ)`` in the true MDP, uniform initial state."""
    pi = torch.softmax(q / TAU, dim=-1)  # [..., S, A]
    p_pi = torch.einsum("ast,...sa->...st", P_TRUE, pi)
    r_pi = (R_TRUE * pi).sum(-1)
    eye = torch.eye(2, dtype=DT)
    v = torch.linalg.solve(eye - GAMMA * p_pi, r_pi.unsqueeze(-1)).squeeze(-1)
    return v.mean(-1)


def bellman_error(q: torch.Tensor) -> torch.Tensor:
    """``mean((B_true q − q)²)`` over (s, a)."""
    return ((soft_bellman(q, P_TRUE, R_TRUE) - q) ** 2).mean((-2, -1))


def mle_loss(theta: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``mean_{s,a}(r̂ − r)² + mean_{a,s} KL(P ‖ P̂)`` per configuration."""
    logits, r_hat = theta
    log_p_hat = torch.log_softmax(logits / TAU, dim=-1)
    kl = (P_TRUE * (P_TRUE.log() - log_p_hat)).sum(-1).mean((-2, -1))
    return ((r_hat - R_TRUE) ** 2).mean((-2, -1)) + kl


def fixed_point(q: torch.Tensor, theta, tol: float = FP_TOL,
                max_iter: int = FP_MAX_ITER) -> tuple[torch.Tensor, int]:
    """Iterate ``q ← B_θ q`` from ``q`` [B, S, A] until each configuration's change is below
    ``tol·max|q| + tol`` (it is then frozen). Returns ``(Q*, iterations)``."""
    done = torch.zeros(q.shape[0], dtype=torch.bool)
    it = 0
    with torch.no_grad():
        while it < max_iter and not bool(done.all()):
            new = model_bellman(q, theta)
            change = (new - q).abs().amax((-2, -1))
            q = torch.where(done[:, None, None], q, new)
            done |= change < tol * new.abs().amax((-2, -1)) + tol
            it += 1
    return q, it


def optimal_q() -> torch.Tensor:
    """The true soft-Q fixed point (the notebook's ``Q_opt``)."""
    q = torch.zeros(1, 2, 2, dtype=DT)
    with torch.no_grad():
        for _ in range(FP_MAX_ITER):
            new = soft_bellman(q, P_TRUE, R_TRUE)
            if float((new - q).abs().max()) < 1e-14:
                break
            q = new
    return new[0]


# ---- one batched outer optimisation ------------------------------------------------------------
@dataclass
class TabularResult:
    """Per configuration (leading dim B): the final Q (noisy in the IFT study, as the
    notebook), θ, the outer iterations it ran, and J / Bellman error of that Q."""

    q: torch.Tensor
    logits: torch.Tensor
    r_hat: torch.Tensor
    iterations: torch.Tensor
    J: torch.Tensor
    bellman: torch.Tensor


def initial_values(seeds) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q0 [B,S,A], logits [B,A,S,S'], r̂ [B,S,A] ~ U[0, 1) from each seed's generator."""
    qs, ls, rs = [], [], []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        qs.append(torch.rand(2, 2, generator=g, dtype=DT))
        ls.append(torch.rand(2, 2, 2, generator=g, dtype=DT))
        rs.append(torch.rand(2, 2, generator=g, dtype=DT))
    return torch.stack(qs), torch.stack(ls), torch.stack(rs)


def optimise(seeds, agent: str = "omd", objective: str = "returns", inverse: str = "neumann",
             norm_bound=None, noise_std=None, max_iter: int = 10_000, lr: float = 0.01,
             noise_seed: int = 0) -> TabularResult:
    """Run OMD (``agent="omd"``) or MLE for a batch of configurations.

    Args:
        seeds: [B] seeds of the initial values.
        objective: ``"returns"`` (maximise J) or ``"bellman"`` (minimise the true Bellman
            error); OMD only.
        inverse: ``"neumann"`` (fax's fixed-point adjoint), ``"exact"`` or ``"identity"``.
        norm_bound: None (plain Adam) or [B] bounds of ``‖(logits/τ, r̂)‖₂`` (projected Adam).
        noise_std: None or [B] standard deviations of the noise added to Q* (IFT study).
    """
    if agent not in ("omd", "mle") or objective not in ("returns", "bellman"):
        raise ValueError(f"agent={agent!r} (omd, mle), objective={objective!r} "
                         "(returns, bellman)")
    q, logits, r_hat = initial_values(seeds)
    B = q.shape[0]
    bound = None if norm_bound is None else torch.as_tensor(norm_bound, dtype=DT).reshape(B)
    std = None if noise_std is None else torch.as_tensor(noise_std, dtype=DT).reshape(B, 1, 1)
    gen = torch.Generator().manual_seed(noise_seed)
    m = [torch.zeros_like(logits), torch.zeros_like(r_hat)]
    v = [torch.zeros_like(logits), torch.zeros_like(r_hat)]
    b1, b2, eps = 0.9, 0.999, 1e-8
    active = torch.ones(B, dtype=torch.bool)
    iters = torch.zeros(B, dtype=torch.long)

    def close(new, old):
        dims = tuple(range(1, new.dim()))
        return (new - old).abs().amax(dims) < 1e-10 * new.abs().amax(dims) + 1e-10

    for i in range(max_iter):
        if not bool(active.any()):
            break
        theta = (logits, r_hat)
        q_star, _ = fixed_point(q, theta)
        q_used = q_star if std is None else q_star + std * torch.randn(q.shape, generator=gen,
                                                                       dtype=DT)
        if agent == "omd":
            qu = q_used.detach().requires_grad_(True)
            loss = -returns(qu) if objective == "returns" else bellman_error(qu)
            ubar = torch.autograd.grad(loss.sum(), qu)[0]
            grads, _ = fixed_point_vjp(model_bellman, q_star, theta, ubar, inverse)
        else:
            th = (logits.detach().requires_grad_(True), r_hat.detach().requires_grad_(True))
            grads = torch.autograd.grad(mle_loss(th).sum(), th)
        # ---- (projected) Adam on the active configurations -------------------------------------
        new = []
        for k, (x, g) in enumerate(zip(theta, grads, strict=True)):
            m[k] = (1 - b1) * g + b1 * m[k]
            v[k] = (1 - b2) * g * g + b2 * v[k]
            mhat = m[k] / (1 - b1 ** (i + 1))
            vhat = v[k] / (1 - b2 ** (i + 1))
            new.append(x - lr * mhat / (vhat.sqrt() + eps))
        if bound is not None:
            norm = torch.sqrt((new[0] / TAU).pow(2).sum((1, 2, 3)) + new[1].pow(2).sum((1, 2)))
            scale = torch.where(norm > bound, bound / norm.clamp_min(1e-300),
                                torch.ones_like(norm))
            new = [new[0] * scale[:, None, None, None], new[1] * scale[:, None, None]]
        a4, a3 = active[:, None, None, None], active[:, None, None]
        converged = close(q_used, q) & close(new[0], logits) & close(new[1], r_hat)
        logits = torch.where(a4, new[0], logits)
        r_hat = torch.where(a3, new[1], r_hat)
        q = torch.where(a3, q_used, q)
        iters += active.long()
        active &= ~converged
    return TabularResult(q=q, logits=logits, r_hat=r_hat, iterations=iters, J=returns(q),
                         bellman=bellman_error(q))


# ---- the three studies ---------------------------------------------------------------------------
@dataclass
class StudyGrid:
    """Grid sizes; :meth:`full` is the notebook's, :meth:`quick` a reduced one (< 1 min)."""

    bounds: list[float]
    seeds: list[int]
    sigmas: list[float]
    ift_seeds: list[int]
    max_iter: int

    @staticmethod
    def full() -> StudyGrid:
        return StudyGrid(bounds=np.linspace(0, 6, 20).tolist(), seeds=list(range(1, 11)),
                         sigmas=np.logspace(-3, 0.5, 30).tolist(), ift_seeds=list(range(1, 11)),
                         max_iter=10_000)

    @staticmethod
    def quick() -> StudyGrid:
        return StudyGrid(bounds=np.linspace(0, 6, 20)[[1, 3, 6, 9, 13, 16]].tolist(),
                         seeds=[1, 2, 3], sigmas=np.logspace(-3, 0.5, 4).tolist(),
                         ift_seeds=[1, 2], max_iter=60)


def _grid(values, seeds):
    vals = [float(v) for v in values for _ in seeds]
    sds = [int(s) for _ in values for s in seeds]
    return vals, sds


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _stats(x: torch.Tensor, n_vals: int, n_seeds: int):
    x = x.reshape(n_vals, n_seeds).numpy()
    return x.mean(1), x.std(1), x.std(1) / math.sqrt(n_seeds)


def run_studies(out: str | Path, grid: StudyGrid, log=print) -> dict:
    """Run the three studies, write ``{misspecification,tightness,ift}.{csv,png}`` and
    ``per_seed.csv`` into ``out``; returns a summary dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    nb, ns = len(grid.bounds), len(grid.seeds)
    bounds, seeds = _grid(grid.bounds, grid.seeds)
    summary: dict = {"grid": grid.__dict__}
    t0 = time.perf_counter()
    kw = dict(max_iter=grid.max_iter)
    omd = optimise(seeds, "omd", "returns", norm_bound=bounds, **kw)
    log(f"misspecification OMD: {time.perf_counter() - t0:.0f} s")
    mle = optimise(seeds, "mle", norm_bound=bounds, **kw)
    log(f"misspecification MLE: {time.perf_counter() - t0:.0f} s")
    omd_b = optimise(seeds, "omd", "bellman", norm_bound=bounds, **kw)
    log(f"tightness OMD (Bellman objective): {time.perf_counter() - t0:.0f} s")
    per_seed = []
    for i in range(len(seeds)):
        for name, res in (("omd_returns", omd), ("mle", mle), ("omd_bellman", omd_b)):
            per_seed.append([name, bounds[i], seeds[i], float(res.J[i]), float(res.bellman[i]),
                             int(res.iterations[i])])
    _write_csv(out / "per_seed.csv", ["agent", "norm_bound", "seed", "J", "bellman_error",
                                      "outer_iterations"], per_seed)

    # ---- figure 1: misspecification -----------------------------------------------------------
    jo, so, _ = _stats(omd.J, nb, ns)
    jm, sm, _ = _stats(mle.J, nb, ns)
    _write_csv(out / "misspecification.csv",
               ["norm_bound", "J_omd_mean", "J_omd_std", "J_mle_mean", "J_mle_std", "J_opt"],
               [[b, a, c, d, e, J_OPT] for b, a, c, d, e in zip(grid.bounds, jo, so, jm, sm,
                                                                 strict=True)])
    plt.figure(figsize=(4.8, 3.6))
    plt.plot(grid.bounds, jm, "o-", c="b", label="MLE", markersize=5)
    plt.fill_between(grid.bounds, jm - sm, jm + sm, color="b", alpha=0.1)
    plt.plot(grid.bounds, jo, "^-", c="r", label="OMD", markersize=5)
    plt.fill_between(grid.bounds, jo - so, jo + so, color="r", alpha=0.1)
    plt.axhline(J_OPT, ls="--", c="black", label="Optimal")
    plt.xlabel("Model Parameter Norm")
    plt.ylabel("Expected Return")
    plt.legend()
    plt.grid(True)
    plt.tight_layout()
    plt.savefig(out / "misspecification.png", dpi=120)
    plt.close()
    summary["misspecification"] = {"J_omd_mean": jo.tolist(), "J_mle_mean": jm.tolist()}

    # ---- figure 2: tightness of the error bounds ----------------------------------------------
    q_opt = optimal_q()
    p_hat_o = torch.softmax(omd_b.logits / TAU, -1)
    eps = (soft_bellman(omd_b.q, P_TRUE, R_TRUE)
           - soft_bellman(omd_b.q, p_hat_o, omd_b.r_hat)).abs().amax((1, 2))
    omd_err = (omd_b.q - q_opt).abs().amax((1, 2))
    omd_gap = eps / (1 - GAMMA) - omd_err
    p_hat_m = torch.softmax(mle.logits / TAU, -1)
    eps_p = (p_hat_m - P_TRUE).abs().sum(-1).amax((1, 2))
    eps_r = (mle.r_hat - R_TRUE).abs().amax((1, 2))
    mle_bound = eps_r / (1 - GAMMA) + GAMMA * R_TRUE.abs().max() * eps_p / (2 * (1 - GAMMA) ** 2)
    mle_err = (mle.q - q_opt).abs().amax((1, 2))
    mle_gap = mle_bound - mle_err
    cols = {"omd_q_err": omd_err, "omd_gap": omd_gap, "mle_q_err": mle_err, "mle_gap": mle_gap}
    stats = {k: _stats(v, nb, ns) for k, v in cols.items()}
    rows = [[b] + [x for k in cols for x in (stats[k][0][i], stats[k][2][i])]
            for i, b in enumerate(grid.bounds)]
    _write_csv(out / "tightness.csv",
               ["norm_bound"] + [f"{k}_{s}" for k in cols for s in ("mean", "stderr")], rows)
    plt.figure(figsize=(6.4, 4.8))
    style = {"omd_gap": ("s-", "r", r"OMD: $\epsilon/(1-\gamma)$ − $\max|Q^*-\hat Q|$"),
             "mle_gap": ("o-", "b", r"MLE: bound − $\max|Q^*-\hat Q|$"),
             "omd_q_err": ("^-", "r", r"OMD: $\max|Q^*-\hat Q|$"),
             "mle_q_err": ("v-", "b", r"MLE: $\max|Q^*-\hat Q|$")}
    for k, (mk, c, label) in style.items():
        mean, _, se = stats[k]
        plt.plot(grid.bounds, mean, mk, c=c, label=label, markersize=5)
        plt.fill_between(grid.bounds, mean - se, mean + se, color=c, alpha=0.1)
    plt.yscale("log", base=2)
    plt.xlabel("Model Parameter Norm")
    plt.legend(fontsize=7)
    plt.grid(True)
    plt.tight_layout()
    plt.savefig(out / "tightness.png", dpi=120)
    plt.close()
    summary["tightness"] = {k: stats[k][0].tolist() for k in cols}

    # ---- figure 3: IFT sensitivity ----------------------------------------------------------
    sig, sds = _grid(grid.sigmas, grid.ift_seeds)
    n_s, n_sd = len(grid.sigmas), len(grid.ift_seeds)
    res = {}
    for inverse in ("neumann", "identity"):
        res[inverse] = optimise(sds, "omd", "bellman", inverse, noise_std=sig,
                                max_iter=grid.max_iter, noise_seed=1)
        log(f"IFT study ({inverse}): {time.perf_counter() - t0:.0f} s")
    st = {k: (_stats(r.J, n_s, n_sd), _stats(r.bellman, n_s, n_sd)) for k, r in res.items()}
    _write_csv(out / "ift.csv",
               ["sigma", "J_exact_adjoint_mean", "J_exact_adjoint_std", "J_identity_mean",
                "J_identity_std", "bellman_exact_adjoint_mean", "bellman_identity_mean"],
               [[s, st["neumann"][0][0][i], st["neumann"][0][1][i], st["identity"][0][0][i],
                 st["identity"][0][1][i], st["neumann"][1][0][i], st["identity"][1][0][i]]
                for i, s in enumerate(grid.sigmas)])
    plt.figure(figsize=(4.8, 3.6))
    for k, label in (("neumann", "With Inverse Jacobian"),
                     ("identity", "With Identity Approximation")):
        mean, std, _ = st[k][0]
        plt.plot(grid.sigmas, mean, label=label, alpha=0.8)
        plt.fill_between(grid.sigmas, mean - 0.3 * std, mean + 0.3 * std, alpha=0.2)
    plt.xscale("log")
    plt.xlabel(r"Noise Std $\sigma$")
    plt.ylabel("Expected Return")
    plt.legend()
    plt.grid(True)
    plt.tight_layout()
    plt.savefig(out / "ift.png", dpi=120)
    plt.close()
    summary["ift"] = {k: st[k][0][0].tolist() for k in st}
    summary["wall_time_s"] = time.perf_counter() - t0
    return summary
