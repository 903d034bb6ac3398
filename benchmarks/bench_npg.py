"""Model-based NPG benchmark: one inner iteration's model rollouts and one NPG step.

    python benchmarks/bench_npg.py                      # Hopper sizes, 4 members x 200 paths x 500
    python benchmarks/bench_npg.py --horizon 100 --repeats 3 --out results/x.json

Rollouts: ``algorithms.mbnpg.model_rollout`` with mjrl's Hopper model (4 x (512, 512) ReLU,
O=11, A=3), the (64, 64) policy evaluated at every step, the mjrl Hopper reward and termination
(``--disagreement`` adds the all-members evaluation and ``ensemble_disagreement``). The
termination function is evaluated but paths are kept whole (a random model never terminates
the way a trained one does; the timed work is the same). NPG: one ``npg_step`` (25 CG
iterations) on all rows of those rollouts, in float64 and float32, then the baseline fit.

``native`` and ``reference`` are the process-wide op backend (``fastmbrl._native.set_backend``)
for the ensemble MLP and the disagreement op; the NPG step is plain torch either way. Medians of
``--repeats`` runs after one warm-up, in seconds; JSON records as bench_ops.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import environment  # noqa: E402

from fastmbrl import _native  # noqa: E402
from fastmbrl.agents.npg import (  # noqa: E402
    GaussianMLPPolicy,
    MLPBaseline,
    NPGConfig,
    compute_gae,
    npg_step,
)
from fastmbrl.algorithms.mbnpg import model_rollout  # noqa: E402
from fastmbrl.envs import mjrl_fns  # noqa: E402
from fastmbrl.models.residual import ResidualEnsemble  # noqa: E402

O, A = 11, 3


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--paths", type=int, default=200, help="start states N (E*N paths)")
    p.add_argument("--horizon", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--disagreement", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    g = torch.Generator(device=dev).manual_seed(0)
    model = ResidualEnsemble(O, A, args.members, (512, 512), seed=0, device=dev)
    s = torch.randn(5000, O, device=dev, generator=g) * 0.1 + 1.0
    a = torch.randn(5000, A, device=dev, generator=g)
    model.set_statistics(s, a, s + 0.01 * torch.randn(5000, O, device=dev, generator=g))
    with torch.no_grad():  # a small residual so rollouts stay in range
        model.weights[-1].mul_(1e-3)
    policy = GaussianMLPPolicy(O, A, (64, 64), seed=0).to(dev)
    starts = s[: args.paths]
    reward = lambda s_, a_, sp: mjrl_fns.hopper_reward(s_, a_)  # noqa: E731

    def term(obs):  # evaluated (the work), result discarded (keep whole paths)
        mjrl_fns.hopper_termination(obs)
        return None

    shape = (f"E={args.members} N={args.paths} H={args.horizon} O={O} A={A} "
             f"hidden=512x512{' +disagreement' if args.disagreement else ''}")
    records = []
    batch = None
    for backend in ("reference", "native"):
        _native.set_backend(backend)

        def rollout():
            out = model_rollout(model, policy, starts, args.horizon, reward, None, 2,
                                1e9 if args.disagreement else None, gen=g)
            term(out.obs)
            return out

        sec, batch = timed(rollout, args.repeats)
        records.append({"op": "mbnpg model rollout", "shape": shape, "device": args.device,
                        "impl": backend, "median_s": sec})
        print(f"rollout  {backend:<10} {sec:8.3f} s", flush=True)
    _native.set_backend("auto")

    baseline = MLPBaseline(O, seed=0).to(dev)
    values = baseline.predict(batch.obs)
    adv, ret = compute_gae(batch.rew, values, batch.lengths, batch.terminated, 0.995, 0.97)
    valid = batch.valid
    rows = int(valid.sum())
    for dtype in ("float64", "float32"):
        state = {k: v.clone() for k, v in policy.state_dict().items()}

        def step(dtype=dtype, state=state):
            policy.load_state_dict(state)
            return npg_step(policy, batch.obs[valid], batch.act[valid], adv[valid],
                            NPGConfig(dtype=dtype), g)

        sec, stats = timed(step, args.repeats)
        records.append({"op": "npg_step (25 CG iterations)", "shape": f"M={rows} rows",
                        "device": args.device, "impl": dtype, "median_s": sec,
                        "kl": stats["kl"]})
        print(f"npg_step {dtype:<10} {sec:8.3f} s  (M={rows}, kl {stats['kl']:.4f})",
              flush=True)
    sec, _ = timed(lambda: baseline.fit(batch.obs, ret, valid, g), args.repeats)
    records.append({"op": "baseline fit (1 epoch)", "shape": f"M={rows} rows",
                    "device": args.device, "impl": "torch", "median_s": sec})
    print(f"baseline fit        {sec:8.3f} s", flush=True)
    ref, nat = records[0]["median_s"], records[1]["median_s"]
    print(f"\nrollout native / reference time: {nat / ref:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"environment": environment(),
                                              "command": " ".join(sys.argv),
                                              "records": records}, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
