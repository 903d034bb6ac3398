"""The value-expansion seed's horizon study (Palenicek et al., ICLR 2023; its
``scripts/shell/submit_slurm_jobs.sh``), as Hydra multiruns through a launcher.

    agent      SAC, DDPG
    H = 0      the baseline (plain SAC / DDPG: the one-step target, no model)
    H > 0      {MVE (critic expansion), VG (actor expansion)} x {analytic (the MuJoCo oracle),
               network (the learned ensemble)}, and Retrace (real replay windows: no model,
               run once, as the seed's "analytic" setting)
    H          0, 1, 3, 5, 10, 20, 30;  seeds 1..9

    # print every run's command and the sweeps (the seed's full grid; GPU-days)
    python benchmarks/value_expansion_experiments.py --print
    # the full grid on SLURM (pip install "fastmbrl[slurm]")
    python benchmarks/value_expansion_experiments.py --launcher submitit_slurm --root exp/ve \\
        hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1 device=cuda
    # the CPU-sized grid committed under benchmarks/results/ (SAC, H 0/1/3/5, MVE and VG with
    # both models, 3 seeds, 1500 transitions each)
    python benchmarks/value_expansion_experiments.py --short --launcher ray --jobs 2 \\
        --root exp/ve_short --out benchmarks/results/DATE-cpu-ve-horizon-inverted_pendulum

Runs land in ``<root>/<task>/<agent>-<expansion>-H<h>-<model>/seed<N>``; every sweep passes
``resume=true`` (re-running continues killed runs) and ``time_limit_min`` (``--minutes``). The
summary (``summary.csv``, ``summary.md``) gives per setting the mean, min and max over seeds of
the evaluation return at ``--at`` transitions (default: the last evaluation every run of the
grid reached) and at the end, and the steps per second; ``gain.md`` the two findings the paper
states, read off the data: the gain per extra step of H, and oracle minus network at equal H;
``curves.png`` the mean return against transitions, one panel per expansion x model.
``--summarize-only`` rereads existing runs.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from launch import (
    RUN_KEYS,
    add_launcher_args,
    check_launcher_args,
    launcher_overrides,
    quoted,
    run_multirun,
    stopped_by_limit,
)
from npg_learning_check import read_rows

TASKS = {"inverted_pendulum": "ve_inverted_pendulum", "cartpole": "ve_cartpole",
         "hopper": "ve_hopper", "walker2d": "ve_walker2d", "halfcheetah": "ve_halfcheetah"}
FULL = {"agents": ["sac", "ddpg"], "expansions": ["mve", "vg", "retrace"],
        "models": ["analytic", "network"], "horizons": [0, 1, 3, 5, 10, 20, 30],
        "seeds": list(range(1, 10))}
# --short: what a 2-core CPU runs in about half an hour on inverted_pendulum
SHORT = {"agents": ["sac"], "expansions": ["mve", "vg"], "models": ["analytic", "network"],
         "horizons": [0, 1, 3, 5], "seeds": [0, 1, 2]}
SHORT_KEYS = ["overrides.num_steps=1500", "overrides.eval_every=250",
              "overrides.eval_episodes=5", "algorithm.model_train_every=10",
              "algorithm.model_pretrain_epochs=50", "device=cpu", "torch_threads=1"]
SUBDIR = "${agent}-${expansion}-H${H}-${model_type}/seed${seed}"


def settings(a) -> list[tuple[str, str, int, str]]:
    """``(agent, expansion, H, model)`` of every cell (H = 0 once per agent, Retrace once per
    H with the model it does not use set to analytic, as the seed)."""
    out = []
    for agent in a.agents:
        if 0 in a.horizons:
            out.append((agent, "none", 0, "analytic"))
        for h in (h for h in a.horizons if h > 0):
            for exp in a.expansions:
                for model in (["analytic"] if exp == "retrace" else a.models):
                    out.append((agent, exp, h, model))
    return out


def name(agent: str, exp: str, h: int, model: str) -> str:
    return f"{agent}-{exp}-H{h}-{model}"


def run_command(a, agent, exp, h, model, seed) -> list[str]:
    """One run as a plain ``fastmbrl train`` command (what --print lists)."""
    return ["fastmbrl", "train", "algorithm=value_expansion", f"overrides={TASKS[a.task]}",
            f"agent={agent}", f"expansion={exp}", f"H={h}", f"model_type={model}",
            f"seed={seed}", f"time_limit_min={a.minutes}", *RUN_KEYS,
            *(SHORT_KEYS if a.short else []), *a.extra]


def sweep_commands(a, root: Path) -> list[list[str]]:
    """The grid as multiruns: the H = 0 baselines, MVE/VG over H x model, Retrace over H."""
    seeds = ",".join(map(str, a.seeds))
    common = ["algorithm=value_expansion", f"overrides={TASKS[a.task]}",
              f"agent={','.join(a.agents)}", f"seed={seeds}", f"time_limit_min={a.minutes}",
              f"hydra.sweep.dir={(root / a.task).resolve()}", f"hydra.sweep.subdir={SUBDIR}",
              *RUN_KEYS, *launcher_overrides(a), *(SHORT_KEYS if a.short else [])]
    hs = ",".join(str(h) for h in a.horizons if h > 0)
    out = []
    if 0 in a.horizons:
        out.append(["expansion=none", "H=0", "model_type=analytic"])
    model_based = [e for e in a.expansions if e in ("mve", "vg")]
    if hs and model_based:
        out.append([f"expansion={','.join(model_based)}", f"H={hs}",
                    f"model_type={','.join(a.models)}"])
    if hs and "retrace" in a.expansions:
        out.append(["expansion=retrace", f"H={hs}", "model_type=analytic"])
    return [["fastmbrl", "train", "-m", *common, *grid, *a.extra] for grid in out]


def load_runs(a, root: Path) -> dict[str, list[list[dict]]]:
    return {name(*s): [read_rows(root / a.task / name(*s) / f"seed{seed}" / "results.csv")
                       for seed in a.seeds] for s in settings(a)}


def value_at(rows: list[dict], step: int) -> float | None:
    """The last evaluation return at or before ``step`` transitions."""
    vals = [float(r["episode_return"]) for r in rows if int(r["env_step"]) <= step]
    return vals[-1] if vals else None


def stats(values: list[float | None]) -> tuple[float, float, float, int]:
    v = [x for x in values if x is not None]
    if not v:
        return float("nan"), float("nan"), float("nan"), 0
    return sum(v) / len(v), min(v), max(v), len(v)


def summarize(a, root: Path, out: Path) -> None:
    runs = load_runs(a, root)
    reached = [int(r[-1]["env_step"]) for rs in runs.values() for r in rs if r]
    at = a.at or (min(reached) if reached else 0)
    table = []
    for s in settings(a):
        n = name(*s)
        rs = runs[n]
        m_at, lo_at, hi_at, k = stats([value_at(r, at) for r in rs])
        m_end, lo_end, hi_end, _ = stats([float(r[-1]["episode_return"]) if r else None
                                          for r in rs])
        steps = [int(r[-1]["env_step"]) for r in rs if r]
        wall = [float(r[-1]["wall_time_s"]) for r in rs if r]
        table.append({
            "setting": n, "agent": s[0], "expansion": s[1], "H": s[2], "model": s[3],
            "seeds": k, f"return_at_{at}_mean": round(m_at, 1),
            f"return_at_{at}_min": round(lo_at, 1), f"return_at_{at}_max": round(hi_at, 1),
            "return_end_mean": round(m_end, 1), "return_end_min": round(lo_end, 1),
            "return_end_max": round(hi_end, 1),
            "env_steps_min": min(steps) if steps else 0,
            "env_steps_per_s": round(sum(steps) / sum(wall), 2) if wall else 0.0,
            "stopped_by_time_limit": sum(stopped_by_limit(root / a.task / n / f"seed{seed}")
                                         for seed in a.seeds),
        })
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    key = f"return_at_{at}_mean"
    lines = [f"# Horizon study: {a.task}", "",
             f"Evaluation return at {at} transitions (mean [min, max] over seeds) and at the "
             "end of each run.", "",
             "| setting | seeds | at " + str(at) + " | end | env steps (min) | steps/s |",
             "|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['setting']} | {r['seeds']} | {r[key]} [{r[f'return_at_{at}_min']}, "
                     f"{r[f'return_at_{at}_max']}] | {r['return_end_mean']} | "
                     f"{r['env_steps_min']} | {r['env_steps_per_s']} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    # the paper's two findings, read off the data at `at` transitions
    by = {(r["agent"], r["expansion"], r["H"], r["model"]): r[key] for r in table}
    hs = sorted(h for h in a.horizons if h > 0)
    g = [f"# Gain per extra step of H, and oracle vs network ({a.task}, return at {at} "
         "transitions, mean over seeds)", ""]
    for agent in a.agents:
        base = by.get((agent, "none", 0, "analytic"))
        for exp in [e for e in a.expansions if e in ("mve", "vg")]:
            for model in a.models:
                prev_h, prev = 0, base
                parts = []
                for h in hs:
                    v = by.get((agent, exp, h, model))
                    if v is None or prev is None:
                        continue
                    parts.append(f"H{prev_h}→H{h}: {(v - prev) / (h - prev_h):+.1f}/step")
                    prev_h, prev = h, v
                g.append(f"- {agent} {exp} {model}: " + ", ".join(parts))
            pairs = [(h, by.get((agent, exp, h, "analytic")), by.get((agent, exp, h, "network")))
                     for h in hs]
            diffs = [f"H{h}: {o - n:+.1f}" for h, o, n in pairs if o is not None and n is not None]
            if diffs:
                g.append(f"- {agent} {exp} oracle − network: " + ", ".join(diffs))
    (out / "gain.md").write_text("\n".join(g) + "\n")
    plot(a, runs, out / "curves.png")
    print("\n".join(lines + [""] + g))


def plot(a, runs: dict[str, list[list[dict]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [(e, m) for e in a.expansions for m in (["analytic"] if e == "retrace"
                                                     else a.models)]
    fig, axes = plt.subplots(len(a.agents), len(panels), squeeze=False,
                             figsize=(4.2 * len(panels), 3.3 * len(a.agents)))
    for i, agent in enumerate(a.agents):
        for j, (exp, model) in enumerate(panels):
            ax = axes[i][j]
            for h in a.horizons:
                n = name(agent, "none", 0, "analytic") if h == 0 else name(agent, exp, h, model)
                rs = [r for r in runs.get(n, []) if r]
                if not rs:
                    continue
                k = min(len(r) for r in rs)
                x = [int(rs[0][t]["env_step"]) for t in range(k)]
                y = np.array([[float(r[t]["episode_return"]) for t in range(k)] for r in rs])
                line, = ax.plot(x, y.mean(0), label=f"H={h}")
                ax.fill_between(x, y.min(0), y.max(0), color=line.get_color(), alpha=0.12)
            ax.set_title(f"{agent} {exp} {model}", fontsize=9)
            ax.set_xlabel("transitions")
            ax.set_ylabel("eval return")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="inverted_pendulum", choices=list(TASKS))
    p.add_argument("--short", action="store_true", help="the CPU-sized grid (SHORT, SHORT_KEYS)")
    for key, kind in (("agents", str), ("expansions", str), ("models", str),
                      ("horizons", int), ("seeds", int)):
        p.add_argument(f"--{key}", nargs="+", type=kind, default=None,
                       help=f"default: {FULL[key]} (--short: {SHORT[key]})")
    p.add_argument("--minutes", type=float, default=4320.0, help="time_limit_min of every run")
    p.add_argument("--at", type=int, default=None,
                   help="compare returns at this many transitions (default: the last "
                   "evaluation every run reached)")
    p.add_argument("--root", default="exp/value_expansion_experiments")
    p.add_argument("--out", default=None, help="summary folder (default: the root)")
    p.add_argument("--print", action="store_true", help="only print the commands")
    p.add_argument("--summarize-only", action="store_true", help="only read existing runs")
    add_launcher_args(p)
    p.add_argument("extra", nargs="*", help="more Hydra overrides for every run")
    a = p.parse_args(argv)
    check_launcher_args(p, a)
    grid = SHORT if a.short else FULL
    for key in grid:
        if getattr(a, key) is None:
            setattr(a, key, list(grid[key]))
    bad = (set(a.agents) - {"sac", "ddpg"}) | (set(a.expansions) - {"mve", "vg", "retrace"}) \
        | (set(a.models) - {"analytic", "network"})
    if bad or any(h < 0 for h in a.horizons):
        p.error(f"unknown values {sorted(map(str, bad)) or a.horizons}: agents sac/ddpg, "
                "expansions mve/vg/retrace, models analytic/network, horizons >= 0")
    root = Path(a.root)
    sweeps = sweep_commands(a, root)
    if a.print:
        for s in settings(a):
            for seed in a.seeds:
                print(quoted(run_command(a, *s, seed)))
        print("# the same grid as sweeps:")
        for cmd in sweeps:
            print(quoted(cmd))
        return 0
    out = Path(a.out) if a.out else root
    out.mkdir(parents=True, exist_ok=True)
    (out / "command.txt").write_text("python " + " ".join(map(quoted_arg, sys.argv))
                                     + "\n\n# the sweeps:\n"
                                     + "\n".join(quoted(c) for c in sweeps) + "\n")
    if not a.summarize_only:
        for cmd in sweeps:
            run_multirun(cmd, root / "sweep.log")
    summarize(a, root, out)
    return 0


def quoted_arg(x: str) -> str:
    return quoted([x])


if __name__ == "__main__":
    sys.exit(main())
