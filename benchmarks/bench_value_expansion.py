"""Value-expansion benchmark: agent updates per second of SAC-MVE (``--expansion mve``) or
SAC-VG (``--expansion vg``) at H = 0, 1, 5, 10 with the network model and with the MuJoCo
oracle, op backend native vs reference, side by side (issues 13 and 14), and where the time goes
(critic target vs the agent's update).

    python benchmarks/bench_value_expansion.py                         # inverted_pendulum, MVE
    python benchmarks/bench_value_expansion.py --expansion vg --horizons 1 5 10
    python benchmarks/bench_value_expansion.py --task hopper --out results/x.json
    python benchmarks/bench_value_expansion.py --horizons --jacobian-tasks inverted_pendulum hopper

A VG update is the same batch and critic step with the actor's objective expanded: H steps from
the real s with gradients through the model (network: ensemble_mlp's backward; oracle: the
finite-difference Jacobians of ``MujocoOracle.differentiable_step``, centred: 1 + 2(nq+nv+nu)
MuJoCo steps per row and model step). ``--jacobian-tasks`` times ``MujocoOracle.jacobians``
alone: ms per row for N = 256 rows, centred and one-sided, 1 and 2 threads.

One "update" is what the training loop does per transition: draw a batch of ``--batch`` real
transitions, build the critic target (MVE: H model steps from the real s′ with the target
policy; the oracle steps MuJoCo from the stored simulator states, ``envs.oracle``), then one
``VEAgent.update`` (temperature, critic and actor steps, Polyak). The replay buffer holds
``--transitions`` transitions of a random policy. The network model is the seed's size (5 x 4 x
256 ReLU) with random weights (a trained model costs the same). ``native`` and ``reference``
are the process-wide op backend (``fastmbrl._native.set_backend``): the ensemble MLP of the
critics, the policy and the model, and the rollout op; timed round-robin
(``harness.time_interleaved``), medians in ms. ``--oracle-task`` also times the oracle alone:
rows per second of ``MujocoOracle.step`` for N = 256 and 4096 rows with 1 and 2 threads, and of
a Python loop of ``env.step`` from the same state.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import environment, time_interleaved  # noqa: E402

from fastmbrl import _native, envs  # noqa: E402
from fastmbrl.agents.ve_agents import VEAgent, VEAgentConfig  # noqa: E402
from fastmbrl.algorithms import value_expansion as ve  # noqa: E402
from fastmbrl.buffers import ReplayBuffer  # noqa: E402
from fastmbrl.envs.oracle import MujocoOracle  # noqa: E402
from fastmbrl.models.dynamics import NetworkDynamics  # noqa: E402


def random_buffer(task: str, n: int, oracle: MujocoOracle, device) -> ReplayBuffer:
    """``n`` transitions of a uniformly random policy, with the simulator state after each."""
    env = envs.make_env(task, seed=0)
    O, A = env.observation_space.shape[0], env.action_space.shape[0]
    buf = ReplayBuffer(n, (O,), (A,), device=device,
                       extras={"log_mu": ((), torch.float32), "u": ((A,), torch.float32),
                               "state": ((oracle.state_size,), torch.float64),
                               "next_state": ((oracle.state_size,), torch.float64)})
    obs, _ = env.reset()
    for _ in range(n):
        a = env.action_space.sample()
        state = oracle.get_state(env)
        nxt, r, term, trunc, _ = env.step(a)
        buf.add(obs, a, nxt, r, term, trunc, log_mu=0.0, u=np.zeros(A, np.float32),
                state=state, next_state=oracle.get_state(env))
        obs = env.reset()[0] if term or trunc else nxt
    return buf


def bench_oracle(task: str, repeats: int) -> list[dict]:
    """Rows per second of the oracle (N rows, T threads) and of a loop of ``env.step``."""
    import time

    env = envs.make_env(task, seed=0)
    env.reset()
    states = np.stack([MujocoOracle(task).get_state(env)] * 4096)
    A = env.action_space.shape[0]
    acts = torch.zeros(4096, A, dtype=torch.float64)
    out = []
    for n in (256, 4096):
        for threads in (1, 2):
            oracle = MujocoOracle(task, num_threads=threads)
            res = time_interleaved({"oracle": lambda o=oracle, n=n: o.step(states[:n], acts[:n])},
                                   "cpu", warmup=2, repeats=repeats)
            rows_s = n / (res["oracle"][0] / 1e6)
            out.append({"op": "MujocoOracle.step", "shape": f"{task} N={n}",
                        "impl": f"{threads} thread(s)", "rows_per_s": rows_s})
            print(f"oracle {task} N={n:<5} threads={threads}: {rows_s:10.0f} rows/s", flush=True)
    u = env.unwrapped
    qpos, qvel = u.data.qpos.copy(), u.data.qvel.copy()
    a0 = np.zeros(A)
    t0 = time.perf_counter()
    for _ in range(2000):
        u.set_state(qpos, qvel)
        env.step(a0)
    rows_s = 2000 / (time.perf_counter() - t0)
    out.append({"op": "env.step loop", "shape": task, "impl": "python", "rows_per_s": rows_s})
    print(f"env.step loop {task}: {rows_s:10.0f} rows/s", flush=True)
    return out


def bench_jacobians(tasks: list[str], repeats: int) -> list[dict]:
    """ms per row of ``MujocoOracle.jacobians`` (N = 256 rows from one mid-episode state)."""
    out = []
    for task in tasks:
        env = envs.make_env(task, seed=0)
        env.reset(seed=0)
        for _ in range(10):
            env.step(env.action_space.sample() * 0.1)
        base = MujocoOracle(task, num_threads=1)
        states = np.stack([base.get_state(env)] * 256)
        acts = np.zeros((256, base.nu))
        for threads in (1, 2):
            oracle = MujocoOracle(task, num_threads=threads)
            fns = {f"{'centred' if c else 'one-sided'}": (
                lambda o=oracle, c=c, s=states, a=acts: o.jacobians(s, a, centered=c))
                for c in (True, False)}
            fns["step only"] = lambda o=oracle, s=states, a=acts: o.step(s, a)
            res = time_interleaved(fns, "cpu", warmup=1, repeats=repeats)
            for kind, (med, *_rest) in res.items():
                ms_row = med / 1e3 / 256
                K = base.x_size + base.nu
                out.append({"op": "MujocoOracle.jacobians" if kind != "step only"
                            else "MujocoOracle.step", "shape": f"{task} N=256 K={K}",
                            "impl": f"{kind}, {threads} thread(s)", "ms_per_row": ms_row})
                print(f"jacobians {task:<18} K={K:<3} {kind:<10} threads={threads}: "
                      f"{ms_row:8.4f} ms/row", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="inverted_pendulum")
    p.add_argument("--expansion", default="mve", choices=("mve", "vg"))
    p.add_argument("--horizons", type=int, nargs="*", default=[0, 1, 5, 10])
    p.add_argument("--models", nargs="+", default=["network", "analytic"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--transitions", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--oracle-task", default=None, help="also time the oracle on this task")
    p.add_argument("--jacobian-tasks", nargs="*", default=[],
                   help="also time the oracle's finite-difference Jacobians on these tasks")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    gen = torch.Generator(device=dev).manual_seed(0)
    torch.manual_seed(0)
    oracle = MujocoOracle(args.task)
    buf = random_buffer(args.task, args.transitions, oracle, dev)
    O, A = buf.obs_shape[0], buf.act_shape[0]
    env = envs.make_env(args.task)
    agent = VEAgent(O, A, env.action_space.low, env.action_space.high,
                    VEAgentConfig(kind="sac", gamma=0.99), device=dev, generator=gen)
    agent.normalizer.update(buf.get_all().obs)
    dyn = NetworkDynamics(O, A, envs.termination_rule(args.task), envs.term_fn(args.task),
                          device=dev, generator=gen)
    dyn.fit_normalizer(buf)
    models = {"network": ve.NetworkModel(dyn), "analytic": ve.OracleModel(args.task, 1)}
    state0 = {k: v.clone() if torch.is_tensor(v) else v for k, v in agent.state_dict().items()}

    records = []
    print(f"{'setting':<22} {'backend':<10} {'update ms':>10} {'target ms':>10} "
          f"{'updates/s':>10}", flush=True)
    for H in args.horizons:
        for m in (args.models[:1] if H == 0 else args.models):
            model = models[m]
            name = f"H={H} {m if H else '(no model)'}"

            def target(H=H, model=model):
                b, idx = buf.sample(args.batch, gen, return_indices=True)
                if H == 0 or args.expansion == "vg":  # VG: the critic's one-step target
                    return b, ve.one_step_target(agent, b, 0.99)
                return b, ve.mve_target(agent, model, b, buf.extras["next_state"][idx], H,
                                        0.99)

            def update(backend, target=target, H=H, model=model):
                _native.set_backend(backend)
                if args.expansion == "vg" and H > 0:
                    b, idx = buf.sample(args.batch, gen, return_indices=True)
                    states = buf.extras["state"][idx]
                    agent.update(b.obs, b.act, ve.one_step_target(agent, b, 0.99), generator=gen,
                                 actor_return=lambda s, a0: ve.vg_return(
                                     agent, model, s, a0, states, H, 0.99),
                                 actor_scale=1.0 / (H + 1))
                    return
                b, y = target()
                agent.update(b.obs, b.act, y, generator=gen)

            def target_only(backend, target=target):
                _native.set_backend(backend)
                target()

            fns = {}
            for backend in ("reference", "native"):
                fns[f"update {backend}"] = lambda b=backend, f=update: f(b)
                fns[f"target {backend}"] = lambda b=backend, f=target_only: f(b)
            res = time_interleaved(fns, args.device, warmup=3, repeats=args.repeats)
            agent.load_state_dict(state0)
            for backend in ("reference", "native"):
                up = res[f"update {backend}"][0] / 1e3
                tg = res[f"target {backend}"][0] / 1e3
                print(f"{name:<22} {backend:<10} {up:10.2f} {tg:10.2f} {1e3 / up:10.1f}",
                      flush=True)
                records.append({"op": f"SAC-{args.expansion.upper()} update",
                                "shape": f"{args.task} B={args.batch}",
                                "setting": name, "impl": backend, "device": args.device,
                                "median_ms": up, "target_median_ms": tg,
                                "updates_per_s": 1e3 / up})
    _native.set_backend("auto")
    if args.oracle_task:
        records += bench_oracle(args.oracle_task, args.repeats)
    if args.jacobian_tasks:
        records += bench_jacobians(args.jacobian_tasks, args.repeats)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"environment": environment(),
                                              "records": records}, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
