"""OMD learning checks (a script, not a test): CartPole OMD / MLE / VEP and HalfCheetah OMD / MLE.

Runs ``fastmbrl train algorithm=omd ...`` for every agent and seed as one Hydra multirun
through ``--launcher`` (benchmarks/launch.py, docs/sweeps.md; ``submitit_local`` runs them all at
once, ``basic`` one after another), each run stopped after ``--minutes`` of wall clock (the root
key ``time_limit_min``: the run keeps every evaluation it logged), then reads each run's
results.csv and writes ``summary.md`` (how far each run got, its last and best evaluation),
``summary.json`` and ``curves.png`` (mean and min-max over seeds) into ``--out``.

    python benchmarks/omd_learning.py --task cartpole --agents omd mle vep --seeds 0 1 2 \\
        --steps 200000 --minutes 20 --launcher submitit_local \\
        --out benchmarks/results/DATE-cpu-omd-cartpole
    python benchmarks/omd_learning.py --task halfcheetah --agents omd mle --seeds 0 \\
        --steps 1000000 --minutes 20 --out benchmarks/results/DATE-cpu-omd-halfcheetah
"""

from __future__ import annotations

import argparse
import csv
import json
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


def _keys(task: str) -> tuple[str, str]:
    """(the overrides file, the key naming the agent) of ``task``."""
    return (("omd_cartpole", "agent_type") if task == "cartpole"
            else ("omd_halfcheetah", "algo"))


def command(a, agent: str, seed: int, root: Path) -> list[str]:
    """One run as a plain ``fastmbrl train`` command (what summary.md lists)."""
    ovr, key = _keys(a.task)
    return ["fastmbrl", "train", "algorithm=omd", f"overrides={ovr}", f"overrides.{key}={agent}",
            f"overrides.num_steps={a.steps}", f"seed={seed}", f"root_dir={root}",
            f"experiment={agent}", f"time_limit_min={a.minutes}", *RUN_KEYS, *a.extra]


def sweep_command(a, root: Path) -> list[str]:
    """Every agent x seed as one multirun; each run in ``root/omd/<agent>/<env>/seedN``."""
    ovr, key = _keys(a.task)
    return ["fastmbrl", "train", "-m", "algorithm=omd", f"overrides={ovr}",
            f"overrides.{key}={','.join(a.agents)}", f"overrides.num_steps={a.steps}",
            f"seed={','.join(map(str, a.seeds))}", f"root_dir={root}",
            f"experiment=${{overrides.{key}}}", f"time_limit_min={a.minutes}",
            f"hydra.sweep.dir={root / 'omd'}",
            "hydra.sweep.subdir=${experiment}/${overrides.env}/seed${seed}", *RUN_KEYS,
            *launcher_overrides(a), *a.extra]


def read(path: Path) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    with open(path) as f:
        return [(int(r["env_step"]), float(r["episode_return"])) for r in csv.DictReader(f)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["cartpole", "halfcheetah"], required=True)
    p.add_argument("--agents", nargs="+", required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--minutes", type=float, default=20.0, help="wall clock per run")
    p.add_argument("--out", required=True)
    p.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides for every run")
    p.add_argument("--analyze-only", action="store_true")
    p.add_argument("--print", action="store_true", help="only print the sweep's command")
    add_launcher_args(p)
    a = p.parse_args(argv)
    check_launcher_args(p, a)
    out = Path(a.out)
    root = (out / "runs").resolve()
    env = "cartpole" if a.task == "cartpole" else "halfcheetah"
    sweep = sweep_command(a, root)
    if a.print:
        print(quoted(sweep))
        return 0
    jobs = {(ag, s): command(a, ag, s, root) for ag in a.agents for s in a.seeds}
    if not a.analyze_only:
        out.mkdir(parents=True, exist_ok=True)
        run_multirun(sweep, out / "sweep.log")
    rows, curves = [], {}
    for (ag, s), cmd in jobs.items():
        src = root / "omd" / ag / env / f"seed{s}" / "results.csv"
        res = read(src)
        if src.exists():  # runs/ is not committed; keep each run's results next to the summary
            (out / f"{ag}-seed{s}-results.csv").write_text(src.read_text())
        curves.setdefault(ag, []).append(res)
        rows.append({"agent": ag, "seed": s, "last_eval_step": res[-1][0] if res else 0,
                     "last_return": res[-1][1] if res else None,
                     "best_return": max(r for _, r in res) if res else None,
                     "finished": bool(res) and res[-1][0] >= a.steps,
                     "stopped_by_budget": stopped_by_limit(src.parent),
                     "command": quoted(cmd)})
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    lines = [f"# OMD learning check: {a.task}", "",
             f"Each run: `fastmbrl train ...` (command below), stopped after {a.minutes:g} min "
             f"of wall clock if not finished; launcher `{a.launcher}`. The sweep:", "",
             f"    {quoted(sweep)}", "",
             "| agent | seed | last eval step | last eval return | best eval return | finished |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['agent']} | {r['seed']} | {r['last_eval_step']} | "
                     f"{r['last_return']} | {r['best_return']} | {r['finished']} |")
    lines += ["", "Commands:", ""] + [f"    {r['command']}" for r in rows]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        plt.figure(figsize=(6, 4))
        for ag, runs in curves.items():
            runs = [r for r in runs if r]
            if not runs:
                continue
            n = min(len(r) for r in runs)
            x = [st for st, _ in runs[0][:n]]
            y = np.array([[v for _, v in r[:n]] for r in runs])
            plt.plot(x, y.mean(0), label=f"{ag} ({len(runs)} seeds)")
            plt.fill_between(x, y.min(0), y.max(0), alpha=0.2)
        plt.xlabel("env step")
        plt.ylabel("eval return")
        plt.title(f"OMD {a.task} (CPU, wall-clock limited)")
        plt.legend()
        plt.grid(True)
        plt.tight_layout()
        plt.savefig(out / "curves.png", dpi=110)
    except Exception as exc:  # the table is the result; the plot is a convenience
        print(f"plot failed: {exc}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
