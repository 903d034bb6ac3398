"""Learning check of value expansion (a script, not a test; issue 13 item 8).

Runs ``fastmbrl train algorithm=value_expansion overrides=OVERRIDES agent=sac expansion=mve
H=h model_type=m seed=s`` for every (h, m, s) of the grid, ``--jobs`` at a time, each under a
wall-clock budget (``--minutes``; a run still going is stopped with SIGINT and what it logged is
kept: the summary says how far it got), then writes into ``--out``:

    runs/<setting>-seedN-results.csv   each run's results.csv
    summary.csv                        per setting: seeds, env steps reached, last / best eval
                                       return (mean over seeds), wall time, steps per second
    curves_env_steps.png               mean eval return (± min/max over seeds) vs env steps
    curves_wall_clock.png              the same vs wall-clock seconds
    command.txt                        the command line

H = 0 does not use a model (it is plain SAC): it runs once, not once per model type.

    python benchmarks/ve_learning_check.py --overrides ve_inverted_pendulum \\
        --horizons 0 1 3 5 --models analytic network --seeds 0 1 2 --jobs 2 --minutes 20 \\
        --out benchmarks/results/DATE-cpu-ve-inverted_pendulum algorithm.model_train_every=10
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from npg_learning_check import read_rows


def settings(args) -> list[tuple[int, str]]:
    out = []
    for h in args.horizons:
        for m in (args.models[:1] if h == 0 else args.models):
            out.append((h, m if h > 0 else "none"))
    return out


def run_one(args, h: int, model: str, seed: int, root: Path) -> dict:
    name = f"H{h}-{model}"
    run_dir = root / name / f"seed{seed}"
    cmd = [sys.executable, "-m", "fastmbrl", "train", "algorithm=value_expansion",
           f"overrides={args.overrides}", f"agent={args.agent}",
           f"expansion={'mve' if h > 0 else 'none'}", f"H={h}",
           f"model_type={'network' if model == 'none' else model}", f"seed={seed}",
           "device=cpu", "progress=false", "use_tensorboard=false",
           f"torch_threads={args.threads}", f"hydra.run.dir={run_dir}", *args.extra]
    if run_dir.exists():
        cmd.append("resume=true")
    print(" ".join(cmd), flush=True)
    t0 = time.time()
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    stopped = False
    try:
        _, err = proc.communicate(timeout=args.minutes * 60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        stopped = True
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
    if proc.returncode not in (0, None) and not stopped:
        print(f"{name} seed {seed} failed:\n{err[-2000:]}", flush=True)
    return {"setting": name, "seed": seed, "run_dir": run_dir, "wall_s": time.time() - t0,
            "stopped": stopped, "rc": proc.returncode}


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
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--minutes", type=float, default=20.0, help="wall budget per run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--root", default="exp/ve_learning_check", help="run directories")
    p.add_argument("--out", required=True)
    p.add_argument("--analyze-only", action="store_true")
    p.add_argument("extra", nargs="*", help="further Hydra overrides")
    args = p.parse_args(argv)
    root = Path(args.root) / args.overrides
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "command.txt").write_text("python " + " ".join(sys.argv) + "\n")
    grid = [(h, m, s) for h, m in settings(args) for s in args.seeds]
    status = {}
    if not args.analyze_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            for r in pool.map(lambda g: run_one(args, *g, root), grid):
                status[(r["setting"], r["seed"])] = r
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
            "stopped_by_budget": sum(bool(status.get((name, s), {}).get("stopped"))
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
