"""SAC update throughput: fastmbrl's SAC (reference / native backend, eager / compiled) side by
side with a pranz24-style SAC and, when importable, mbrl-lib 0.2.0's own pranz24 SAC.

    python benchmarks/bench_sac.py                       # CPU, HalfCheetah- and Hopper-sized
    python benchmarks/bench_sac.py --quick               # hidden 64, few repeats (a smoke run)
    python benchmarks/bench_sac.py --out benchmarks/results/2026-11-21-cpu-sac.json

One timed call is one full SAC update (critic, actor, α, soft target update) on a fixed batch
of 256 transitions. Implementations:

* ``reference-eager``: ``fastmbrl.agents.SAC`` with ``fastmbrl.set_backend("reference")``.
* ``reference-compile[-<mode>]``: the same with ``SACConfig(compile=True, compile_mode=...)``
  (no suffix: the default mode ``optim``; ``losses+optim``, ``losses``, ``update``; see
  ``SACConfig``).
* ``native-eager`` / ``native-compile``: ``fastmbrl.set_backend("native")`` (the ensemble-MLP op
  dispatches to its native kernel where one is compiled, else it errors or runs the reference).
* ``peer-pranz24-style``: a LOCAL re-implementation in the style of mbrl-lib's
  ``third_party/pytorch_sac_pranz24`` (two separate ``nn.Linear`` Q networks in one module,
  a separate ``nn.Linear`` policy with ``torch.distributions.Normal``), written for this
  benchmark; not mbrl-lib's code.
* ``peer-mbrl-lib-0.2.0``: mbrl-lib's own ``SAC.update_parameters`` (if ``mbrl`` imports); it
  converts the numpy batch to tensors inside each update, as it does in MBPO.

Threads: ``torch.set_num_threads(--threads)`` (1 by default, for stable numbers on shared CPUs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Record, environment, format_table, save, time_fn  # noqa: E402

import fastmbrl  # noqa: E402
from fastmbrl.agents import SAC, SACConfig  # noqa: E402

OP = "sac_update"
# (name, obs_dim, act_dim, hidden): mbrl-lib's MBPO HalfCheetah / Hopper SAC sizes
SHAPES = [("halfcheetah", 17, 6, 512), ("hopper", 11, 3, 512)]
COMPILE_MODES = ["optim", "losses+optim", "losses", "update"]


# ---- peer: a pranz24-style SAC, re-implemented locally (separate nn.Linear networks) -----------
def _xavier_(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)


class _QNet(nn.Module):
    def __init__(self, o: int, a: int, h: int):
        super().__init__()
        self.q1 = nn.Sequential(nn.Linear(o + a, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                                nn.Linear(h, 1))
        self.q2 = nn.Sequential(nn.Linear(o + a, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                                nn.Linear(h, 1))
        self.apply(_xavier_)

    def forward(self, s, a):
        x = torch.cat([s, a], 1)
        return self.q1(x), self.q2(x)


class _Policy(nn.Module):
    def __init__(self, o: int, a: int, h: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(o, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.mean, self.log_std = nn.Linear(h, a), nn.Linear(h, a)
        self.apply(_xavier_)
        self.scale, self.bias = 1.0, 0.0

    def sample(self, s):
        x = self.trunk(s)
        mean, log_std = self.mean(x), self.log_std(x).clamp(-20, 2)
        normal = torch.distributions.Normal(mean, log_std.exp())
        u = normal.rsample()
        y = torch.tanh(u)
        log_prob = normal.log_prob(u) - torch.log(self.scale * (1 - y.pow(2)) + 1e-6)
        return y * self.scale + self.bias, log_prob.sum(1, keepdim=True)


class Pranz24StyleSAC:
    """Twin-Q SAC with separate networks, the pranz24 update order; automatic α."""

    def __init__(self, o: int, a: int, h: int, lr: float = 3e-4):
        self.critic, self.target, self.policy = _QNet(o, a, h), _QNet(o, a, h), _Policy(o, a, h)
        self.target.load_state_dict(self.critic.state_dict())
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.alpha, self.target_entropy, self.gamma, self.tau = 0.2, -float(a), 0.99, 0.005
        self.c_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.p_opt = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self.a_opt = torch.optim.Adam([self.log_alpha], lr=lr)

    def update(self, s, a, r, s2, mask):
        with torch.no_grad():
            a2, logp2 = self.policy.sample(s2)
            q1t, q2t = self.target(s2, a2)
            y = r + mask * self.gamma * (torch.min(q1t, q2t) - self.alpha * logp2)
        q1, q2 = self.critic(s, a)
        loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        self.c_opt.zero_grad()
        loss.backward()
        self.c_opt.step()
        pi, logp = self.policy.sample(s)
        q1p, q2p = self.critic(s, pi)
        p_loss = (self.alpha * logp - torch.min(q1p, q2p)).mean()
        self.p_opt.zero_grad()
        p_loss.backward()
        self.p_opt.step()
        a_loss = -(self.log_alpha * (logp + self.target_entropy).detach()).mean()
        self.a_opt.zero_grad()
        a_loss.backward()
        self.a_opt.step()
        self.alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            for tp, p in zip(self.target.parameters(), self.critic.parameters(), strict=True):
                tp.mul_(1 - self.tau).add_(p, alpha=self.tau)


# ---- cases ---------------------------------------------------------------------------------------
def make_batch(o: int, a: int, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, o, generator=g), torch.rand(n, a, generator=g) * 2 - 1,
            torch.randn(n, generator=g), torch.randn(n, o, generator=g),
            (torch.rand(n, generator=g) < 0.05).float())


def fastmbrl_case(o, a, h, b, backend, compile_mode):
    fastmbrl.set_backend(backend)
    cfg = SACConfig(hidden_size=h, batch_size=b, compile=compile_mode is not None,
                    compile_mode=compile_mode or "optim")
    agent = SAC(o, a, -torch.ones(a), torch.ones(a), cfg, seed=0)
    batch = make_batch(o, a, b)

    def fn():
        fastmbrl.set_backend(backend)
        return agent.update(*batch)

    return fn


def pranz24_style_case(o, a, h, b):
    agent = Pranz24StyleSAC(o, a, h)
    s, act, r, s2, term = make_batch(o, a, b)
    r, mask = r[:, None], 1 - term[:, None]
    return lambda: agent.update(s, act, r, s2, mask)


def mbrl_lib_case(o, a, h, b):
    from mbrl.third_party.pytorch_sac_pranz24.sac import SAC as MbrlSAC

    args = types.SimpleNamespace(gamma=0.99, tau=0.005, alpha=0.2, policy="Gaussian",
                                 target_update_interval=1, automatic_entropy_tuning=True,
                                 device="cpu", hidden_size=h, lr=3e-4, target_entropy=None)
    space = types.SimpleNamespace(shape=(a,), low=-torch.ones(a).numpy(),
                                  high=torch.ones(a).numpy())
    agent = MbrlSAC(o, space, args)
    s, act, r, s2, term = make_batch(o, a, b)
    arrays = tuple(x.numpy() for x in (s, act, s2, r, term, term))
    memory = types.SimpleNamespace(
        sample=lambda _n: types.SimpleNamespace(astuple=lambda: arrays))
    counter = iter(range(10**9))
    return lambda: agent.update_parameters(memory, b, next(counter), reverse_mask=True)


def cases(shapes, batch, modes):
    for name, o, a, h in shapes:
        shape = f"{name} B={batch} O={o} A={a} H={h}x2"
        impls = {"reference-eager": lambda o=o, a=a, h=h: fastmbrl_case(o, a, h, batch,
                                                                        "reference", None)}
        for m in modes:
            label = "reference-compile" + ("" if m == "optim" else f"-{m}")
            impls[label] = lambda o=o, a=a, h=h, m=m: fastmbrl_case(o, a, h, batch,
                                                                    "reference", m)
        impls["native-eager"] = lambda o=o, a=a, h=h: fastmbrl_case(o, a, h, batch, "native",
                                                                    None)
        impls["native-compile"] = lambda o=o, a=a, h=h: fastmbrl_case(o, a, h, batch, "native",
                                                                      "optim")
        impls["peer-pranz24-style"] = lambda o=o, a=a, h=h: pranz24_style_case(o, a, h, batch)
        impls["peer-mbrl-lib-0.2.0"] = lambda o=o, a=a, h=h: mbrl_lib_case(o, a, h, batch)
        yield shape, impls


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10, help="timed updates per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--max-time", type=float, default=5.0, help="seconds per round and impl")
    p.add_argument("--modes", nargs="*", default=COMPILE_MODES, choices=COMPILE_MODES)
    p.add_argument("--quick", action="store_true", help="hidden 64, 10 repeats")
    p.add_argument("--note", action="append", default=[], help="a line for the .txt header")
    p.add_argument("--out", default=None, help="JSON output path (a .txt table beside it)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for key in ("cache_size_limit", "recompile_limit"):  # one compiled graph per agent
        if hasattr(torch._dynamo.config, key):
            setattr(torch._dynamo.config, key, 64)
    shapes = [(n, o, a, 64 if args.quick else h) for n, o, a, h in SHAPES]
    repeats = 5 if args.quick else args.repeats

    records: list[Record] = []
    notes: list[str] = []
    for shape, impls in cases(shapes, args.batch, args.modes):
        fns, first = {}, {}
        for impl, build in impls.items():
            try:
                fn = build()
                t0 = time.perf_counter()
                fn()  # the first call compiles, where anything is compiled
                first[impl] = time.perf_counter() - t0
                time_fn(fn, "cpu", warmup=args.warmup, repeats=1)
                fns[impl] = fn
            except Exception as exc:  # an implementation that cannot run here is reported
                msg = f"{shape} {impl}: skipped ({type(exc).__name__}: {str(exc)[:200]})"
                print(msg, flush=True)
                notes.append(msg)
            finally:
                fastmbrl.set_backend("auto")
        # Round robin: every implementation is timed in each round, so load from other users
        # of a shared machine spreads over all of them; the result is the median of the
        # per-round medians.
        rounds: dict[str, list[float]] = {impl: [] for impl in fns}
        counts = dict.fromkeys(fns, 0)
        for _ in range(args.rounds):
            for impl, fn in fns.items():
                med, n = time_fn(fn, "cpu", warmup=1, repeats=repeats,
                                 max_time_s=args.max_time)
                rounds[impl].append(med)
                counts[impl] += n
        fastmbrl.set_backend("auto")
        for impl in fns:
            median = statistics.median(rounds[impl])
            extra = {"updates_per_s": 1e6 / median, "first_call_s": first[impl],
                     "round_medians_us": rounds[impl], "threads": args.threads,
                     "batch": args.batch}
            records.append(Record(OP, shape, "cpu", impl, median, counts[impl], extra))
            print(f"{shape:<40} {impl:<32} {median:10.0f} us  {1e6 / median:7.1f} upd/s  "
                  f"(first call {first[impl]:.1f} s)", flush=True)

    table = format_table(records)
    ups = "\n".join(f"{r.shape:<40} {r.impl:<32} {r.extra['updates_per_s']:8.1f} updates/s  "
                    f"first call {r.extra['first_call_s']:6.1f} s" for r in records)
    env = environment()
    native = env.get("native_build") or {}
    header = [
        f"SAC update throughput, {env['date']}",
        f"command: {env['command']}",
        f"machine: {env.get('cpu_model', env['cpu'])}, torch {env['torch']}, "
        f"torch.set_num_threads({args.threads}), batch {args.batch}, git {env.get('git_commit')}",
        f"native op families compiled: {native.get('op_families')}",
        f"timing: {args.rounds} round-robin rounds x {repeats} updates per implementation; "
        "median of the round medians",
    ] + [f"note: {n}" for n in args.note]
    text = "\n".join(header) + f"\n\n{table}\n\n{ups}\n"
    text += "\n" + "\n".join(notes) + "\n" if notes else ""
    print("\n" + text)
    if args.out:
        save(records, args.out)
        Path(args.out).with_suffix(".txt").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
