"""Tabular OMD (fastmbrl.algorithms.omd_tabular): the optimum, the implicit gradient through the
soft-Q fixed point, projection, and `fastmbrl omd tabular`."""

from __future__ import annotations

import csv

import torch

from fastmbrl.algorithms import omd_tabular as T
from fastmbrl.cli import main as cli_main
from fastmbrl.implicit import fixed_point_vjp


def test_true_fixed_point_and_optimum():
    q = T.optimal_q()
    torch.testing.assert_close(q, T.soft_bellman(q, T.P_TRUE, T.R_TRUE), rtol=0, atol=1e-12)
    # the notebook's pre-computed Q_opt and J*
    torch.testing.assert_close(q, torch.tensor([[0.16363807, 0.06282009],
                                                [1.89091046, 0.66282009]], dtype=T.DT),
                               rtol=0, atol=1e-7)
    # J* is the return of the greedy policy of Q_opt (sharpened ×100: softmax → argmax); the
    # Boltzmann policy softmax(Q_opt/τ) itself is 1.8e-5 below it
    assert abs(float(T.returns(100 * q[None])) - T.J_OPT) < 1e-7
    assert 0 < T.J_OPT - float(T.returns(q[None])) < 1e-4


def test_unconstrained_omd_and_mle_reach_the_optimum():
    omd = T.optimise([1, 2, 3], "omd", "returns", max_iter=60)
    # from some starts the Boltzmann policy is saturated (τ = 0.01) and the gradient vanishes,
    # as in the original; the best start reaches J*
    assert float(omd.J.max()) > T.J_OPT - 1e-6
    assert float(omd.J.max()) < T.J_OPT + 1e-6
    # MLE recovers the true model, so its Q* is Q_opt and its J that of softmax(Q_opt/τ),
    # 1.8e-5 below what OMD's model achieves
    mle = T.optimise([1, 2, 3], "mle", max_iter=300)
    j_soft = float(T.returns(T.optimal_q()[None]))
    assert float((mle.J - j_soft).abs().max()) < 3e-5
    assert float(omd.J.max()) > j_soft + 1e-5


def test_fixed_point_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(0)
    logits = 0.02 * torch.rand(1, 2, 2, 2, generator=g, dtype=T.DT)  # P̂ not saturated
    r_hat = torch.rand(1, 2, 2, generator=g, dtype=T.DT)

    def loss(lg, r):
        q, _ = T.fixed_point(torch.zeros(1, 2, 2, dtype=T.DT), (lg, r), tol=1e-14, max_iter=2000)
        return float(T.bellman_error(q).sum())

    q, _ = T.fixed_point(torch.zeros(1, 2, 2, dtype=T.DT), (logits, r_hat), tol=1e-14,
                         max_iter=2000)
    qq = q.clone().requires_grad_(True)
    ubar = torch.autograd.grad(T.bellman_error(qq).sum(), qq)[0]
    (g_l, g_r), info = fixed_point_vjp(T.model_bellman, q, (logits, r_hat), ubar, "neumann")
    assert info["iterations"] > 50  # γ = 0.9: the adjoint takes ~200 iterations to 1e-10
    eps = 1e-6
    for idx in [(0, 0, 0, 0), (0, 1, 1, 0), (0, 0, 1, 1)]:
        lp, lm = logits.clone(), logits.clone()
        lp[idx] += eps
        lm[idx] -= eps
        fd = (loss(lp, r_hat) - loss(lm, r_hat)) / (2 * eps)
        assert abs(float(g_l[idx]) - fd) < 1e-6 * max(1.0, abs(fd)), idx
    for idx in [(0, 0, 0), (0, 1, 0)]:
        rp, rm = r_hat.clone(), r_hat.clone()
        rp[idx] += eps
        rm[idx] -= eps
        fd = (loss(logits, rp) - loss(logits, rm)) / (2 * eps)
        assert abs(float(g_r[idx]) - fd) < 1e-6 * max(1.0, abs(fd)), idx
    # the identity approximation is a different vector here
    (i_l, _), _ = fixed_point_vjp(T.model_bellman, q, (logits, r_hat), ubar, "identity")
    assert float((i_l - g_l).abs().max()) > 1e-4


def test_projection_keeps_the_norm_bound():
    bounds = [0.0, 0.5, 2.0]
    res = T.optimise([1, 1, 1], "mle", norm_bound=bounds, max_iter=20)
    norm = torch.sqrt((res.logits / T.TAU).pow(2).sum((1, 2, 3)) + res.r_hat.pow(2).sum((1, 2)))
    for n, b in zip(norm.tolist(), bounds, strict=True):
        assert n <= b + 1e-9
    assert norm[2] > 1.9  # the unit-interval start is far outside: projected onto the sphere


def test_cli_writes_three_figures_and_csvs(tmp_path, capsys):
    out = tmp_path / "tab"
    rc = cli_main(["omd", "tabular", "--out", str(out), "--quick", "--max_iter", "5",
                   "--seeds", "2", "--num_sigmas", "2"])
    assert rc == 0
    for name in ("misspecification", "tightness", "ift"):
        assert (out / f"{name}.png").stat().st_size > 1000
        rows = list(csv.DictReader(open(out / f"{name}.csv")))
        assert rows and all(v not in ("", "nan") for v in rows[0].values())
    rows = list(csv.DictReader(open(out / "misspecification.csv")))
    assert len(rows) == 6  # --quick: 6 norm bounds
    assert (out / "summary.json").exists()
    assert cli_main(["omd", "tabular", "--out", str(out), "--seeds", "0"]) == 2
    assert "--seeds=0" in capsys.readouterr().err
