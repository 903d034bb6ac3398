"""Learning check of value expansion (a script, not a test; issue 13 item 8).

Runs ``fastmbrl train algorithm=value_expansion overrides=OVERRIDES agent=sac expansion=mve
H=h model_type=m seed=s`` for every (h, m, s) of the grid as Hydra multiruns through
``--launcher`` (benchmarks/launch.py, docs/sweeps.md: H = 0 is one multirun over the seeds, the
other horizons one over H x model x seed), each run under a wall-clock budget (``--minutes``, the
root key ``time_limit_min``: a run still going stops itself and keeps what it logged; the
summary says how far it got), then writes into ``--out``:

    runs/<setting>-seedN-results.csv   each run's results.csv
    summary.csv                        per setting: seeds, env steps reached, last / best eval
                                       return (mean over seeds), wall time, steps per second
    curves_env_steps.png               mean eval return (± min/max over seeds) vs env steps
    curves_wall_clock.png              the same vs wall-clock seconds
    command.txt                        the command line

H = 0 does not use a model (it is plain SAC): it runs once, not once per model type.

    python benchmarks/ve_learning_check.py --overrides ve_inverted_pendulum \\
        --horizons 0 1 3 5 --models analytic network --seeds 0 1 2 --minutes 20 \\
        --launcher ray --jobs 2 --out benchmarks/results/DATE-cpu-ve-inverted_pendulum \\
        algorithm.model_train_every=10
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


def settings(args) -> list[tuple[int, str]]:
    out = []
    for h in args.horizons:
        for m in (args.models[:1] if h == 0 else args.models):
            out.append((h, m if h > 0 else "none"))
    return out


def sweep_commands(args, root: Path) -> list[list[str]]:
    """The grid as multiruns: H = 0 (no model: plain SAC/DDPG) over the seeds, then every other
    H x model over the seeds; run directories ``root/H<h>-<model>/seedN``."""
    common = ["algorithm=value_expansion", f"overrides={args.overrides}", f"agent={args.agent}",
              f"seed={','.join(map(str, args.seeds))}", "device=cpu",
              f"torch_threads={args.threads}", f"time_limit_min={args.minutes}",
              f"hydra.sweep.dir={root.resolve()}", *RUN_KEYS, *launcher_overrides(args)]
    out = []
    if 0 in args.horizons:
        out.append(["fastmbrl", "train", "-m", *common, "expansion=none", "H=0",
                    "model_type=network", "hydra.sweep.subdir=H0-none/seed${seed}", *args.extra])
    horizons = [h for h in args.horizons if h > 0]
    if horizons:
        out.append(["fastmbrl", "train", "-m", *common, "expansion=mve",
                    f"H={','.join(map(str, horizons))}", f"model_type={','.join(args.models)}",
                    "hydra.sweep.subdir=H${H}-${model_type}/seed${seed}", *args.extra])
    return out


def plot(out: Path, curves: dict[str, list[list[dict]]], x: str, fname: str, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, runs in sorted(curves.items()):
        runs = [r for r in runs if r]
        if not runs:
            continue
        n = min(len(r) for r in runs)  # common prefix of evaluations
        xs = np.array([[float(r[i][x]) for i in range(n)] for r in runs]).mean(0)
        ys = np.array([[float(r[i]["episode_return"]) for i in range(n)] for r in runs])
        line, = ax.plot(xs, ys.mean(0), marker="o", ms=3, label=f"{name} ({len(runs)} seeds)")
        ax.fill_between(xs, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.15)
    ax.set_xlabel({"env_step": "env steps (transitions)", "wall_time_s": "wall-clock s"}[x])
    ax.set_ylabel("eval return")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / fname, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--overrides", default="ve_inverted_pendulum")
    p.add_argument("--agent", default="sac", choices=("sac", "ddpg"))
    p.add_argument("--horizons", type=int, nargs="+", default=[0, 1, 3, 5])
    p.add_argument("--models", nargs="+", default=["analytic", "network"],
                   choices=("analytic", "network"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--minutes", type=float, default=20.0, help="wall budget per run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--root", default="exp/ve_learning_check", help="run directories")
    p.add_argument("--out", default=None, help="results folder; required unless --print")
    p.add_argument("--analyze-only", action="store_true")
    p.add_argument("--print", action="store_true", help="only print the sweeps' commands")
    add_launcher_args(p)
    p.add_argument("extra", nargs="*", help="further Hydra overrides")
    args = p.parse_args(argv)
    check_launcher_args(p, args)
    root = Path(args.root) / args.overrides
    sweeps = sweep_commands(args, root)
    if args.print:
        print("\n".join(quoted(cmd) for cmd in sweeps))
        return 0
    if not args.out:
        p.error("--out is required (or --print)")
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "command.txt").write_text("python " + " ".join(sys.argv) + "\n\n# the sweeps:\n"
                                     + "\n".join(quoted(cmd) for cmd in sweeps) + "\n")
    if not args.analyze_only:
        for cmd in sweeps:
            run_multirun(cmd, root / "sweep.log")
    curves: dict[str, list[list[dict]]] = {}
    table = []
    for h, m in settings(args):
        name = f"H{h}-{m}"
        runs = []
        for s in args.seeds:
            src = root / name / f"seed{s}" / "results.csv"
            rows = read_rows(src)
            runs.append(rows)
            if rows:
                (out / "runs" / f"{name}-seed{s}-results.csv").write_text(src.read_text())
        curves[name] = runs
        done = [r for r in runs if r]
        if not done:
            continue
        last = [float(r[-1]["episode_return"]) for r in done]
        best = [max(float(x["episode_return"]) for x in r) for r in done]
        steps = [int(r[-1]["env_step"]) for r in done]
        wall = [float(r[-1]["wall_time_s"]) for r in done]
        table.append({
            "setting": name, "seeds": len(done), "env_steps_min": min(steps),
            "last_return_mean": round(sum(last) / len(last), 1),
            "best_return_mean": round(sum(best) / len(best), 1),
            "wall_s_mean": round(sum(wall) / len(wall), 1),
            "env_steps_per_s": round(sum(steps) / sum(wall), 2),
            "stopped_by_budget": sum(stopped_by_limit(root / name / f"seed{s}")
                                     for s in args.seeds),
        })
    with open(out / "summary.csv", "w", newline="") as f:
        if table:
            w = csv.DictWriter(f, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows(table)
    title = f"{args.agent.upper()}-MVE on {args.overrides} (CPU)"
    plot(out, curves, "env_step", "curves_env_steps.png", title)
    plot(out, curves, "wall_time_s", "curves_wall_clock.png", title)
    for row in table:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
