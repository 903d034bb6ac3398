"""One OMD update per second (inner step + implicit gradient + model step), per inverse.

    python benchmarks/bench_omd.py [--batch 256] [--hidden 32] [--seconds 10]

The CartPole update of algorithms/omd.py (soft double-Q, float64, the original's sizes): one
Adam step of Q on model data, the outer TD loss on real data, the implicit model gradient with
``identity`` (the original's default), ``cg`` (``--with_inv_jac``: 100 iterations, damping
1e-5), ``neumann`` (20 terms) and ``exact`` (a dense Hessian: one HVP per Q parameter; timed at
``--exact-hidden`` so it fits). No native op is involved: the networks run through
``ops.mlp.ensemble_mlp_reference`` (the implicit gradient needs a double backward), so there is
no native-vs-reference comparison to make here.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from fastmbrl.agents.soft_q import SoftDoubleQ
from fastmbrl.implicit import minimizer_vjp
from fastmbrl.models.omd_models import DynamicsModel, leaf_params


def make_update(batch: int, hidden: int, inverse: str, kw: dict):
    gen = torch.Generator().manual_seed(0)
    dt = torch.float64
    agent = SoftDoubleQ(4, 2, hidden, alpha=0.01, gamma=0.99, tau=0.01, lr=3e-4, gen=gen)
    model = DynamicsModel(4, 6, 32, split=True, gen=gen, dtype=dt)
    theta = leaf_params(model.init, "cpu")
    opt = torch.optim.Adam(list(theta.values()), lr=1e-3)
    s, s2 = torch.randn(batch, 4, dtype=dt), torch.randn(batch, 4, dtype=dt)
    a = torch.randint(0, 2, (batch,))
    r, nd = torch.ones(batch, dtype=dt), torch.ones(batch, dtype=dt)
    x = torch.cat([s, torch.nn.functional.one_hot(a, 2).to(dt)], -1)

    def update():
        agent.reset_optimizer()
        with torch.no_grad():
            nxt, _, _, r_hat = model(theta, x)
        agent.step(s, a, r_hat, nxt, nd)
        target = {k: v.clone() for k, v in agent.target.items()}
        phi = {k: v.detach().clone().requires_grad_(True) for k, v in agent.params.items()}
        ubar = dict(zip(phi, torch.autograd.grad(agent.loss(phi, target, s, a, r, s2, nd),
                                                 list(phi.values())), strict=True))

        def inner(q, th):
            nxt_, _, _, r_ = model(th, x)
            return agent.loss(q, target, s, a, r_, nxt_, nd)

        g, _ = minimizer_vjp(inner, {k: v.detach() for k, v in phi.items()},
                             {k: v.detach() for k, v in theta.items()}, ubar, inverse, **kw)
        opt.zero_grad(set_to_none=True)
        for k, p in theta.items():
            p.grad = g[k]
        opt.step()

    n_params = sum(v.numel() for v in agent.params.values())
    return update, n_params


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--exact-hidden", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    cases = [("identity", a.hidden, {}),
             ("cg", a.hidden, dict(maxiter=100, damping=1e-5, tol=1e-5)),
             ("neumann", a.hidden, dict(step=0.01, maxiter=20)),
             ("exact", a.exact_hidden, dict(damping=1e-5))]
    out = {"device": f"CPU ({platform.processor() or platform.machine()}), "
                     f"{torch.get_num_threads()} torch threads", "batch": a.batch, "results": []}
    for inverse, hidden, kw in cases:
        update, n = make_update(a.batch, hidden, inverse, kw)
        update()  # warm-up
        t0, k = time.perf_counter(), 0
        while time.perf_counter() - t0 < a.seconds:
            update()
            k += 1
        rate = k / (time.perf_counter() - t0)
        out["results"].append({"inverse": inverse, "hidden": hidden, "q_params": n,
                               "updates_per_s": rate, **kw})
        print(f"{inverse:9s} hidden {hidden:3d} ({n} Q params): {rate:8.2f} updates/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
