"""Learning check of model-based NPG (a script, not a test).

Runs ``fastmbrl train algorithm=mbnpg overrides=OVERRIDES`` for each seed as one Hydra multirun
through ``--launcher`` (benchmarks/launch.py, docs/sweeps.md: one after another by default), each
run under a wall-clock budget (``--minutes``, the root key ``time_limit_min``: a run still going
stops itself and keeps what it logged; the report says how far it got), then writes into
``--out``:

    seedN-results.csv   each run's results.csv
    summary.json        per seed: iterations and env steps reached, last / best eval_score,
                        first env step with eval_score >= --threshold, wall time
    curves.png          eval_score (and train_score) against num_samples; with --anchor,
                        the seed README's points (Hopper PAL: 3000 at 45k, 3600 at 80k)

    # PAL on the inverted-pendulum config, 3 seeds (max return 1000)
    python benchmarks/npg_learning_check.py --overrides npg_inverted_pendulum --seeds 0 1 2 \\
        --minutes 6.5 --threshold 1000 --out benchmarks/results/DATE-cpu-npg-inverted_pendulum
    # PAL on Hopper-v5 (the seed config), as far as the budget allows
    python benchmarks/npg_learning_check.py --overrides npg_hopper_pal --seeds 123 \\
        --minutes 25 --anchor --out benchmarks/results/DATE-cpu-npg-hopper_pal
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
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

ANCHOR = [(45_000, 3000.0), (80_000, 3600.0), (110_000, 3650.0)]  # seed README's plot


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def sweep_command(args, root: Path) -> list[str]:
    """Every seed as one multirun; run directories ``root/seedN``."""
    return ["fastmbrl", "train", "-m", "algorithm=mbnpg", f"overrides={args.overrides}",
            f"seed={','.join(map(str, args.seeds))}", "device=cpu",
            f"torch_threads={args.threads}", f"time_limit_min={args.minutes}",
            f"hydra.sweep.dir={root.resolve()}", "hydra.sweep.subdir=seed${seed}", *RUN_KEYS,
            *launcher_overrides(args), *args.extra]


def summarize(rows: list[dict], threshold: float | None) -> dict:
    evals = [(int(r["num_samples"]), float(r["eval_score"])) for r in rows]
    reached = next((s for s, e in evals if threshold is not None and e >= threshold), None)
    return {
        "iterations": len(rows),
        "env_steps": evals[-1][0] if evals else 0,
        "last_eval_score": evals[-1][1] if evals else None,
        "best_eval_score": max(e for _, e in evals) if evals else None,
        "last_train_score": float(rows[-1]["train_score"]) if rows else None,
        "first_env_step_eval_at_threshold": reached,
        "wall_time_s": float(rows[-1]["wall_time_s"]) if rows else 0.0,
    }


def plot(out: Path, runs: dict[int, list[dict]], anchor: bool, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for seed, rows in runs.items():
        x = [int(r["num_samples"]) for r in rows]
        line, = ax.plot(x, [float(r["eval_score"]) for r in rows], marker="o", ms=3,
                        label=f"eval_score seed {seed}")
        ax.plot(x, [float(r["train_score"]) for r in rows], ls="--", color=line.get_color(),
                alpha=0.6, label=f"train_score seed {seed}")
    if anchor:
        ax.plot(*zip(*ANCHOR, strict=True), "k*", ms=12, label="seed README (mjrl, Hopper-v3)")
    ax.set_xlabel("num_samples (env steps)")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--overrides", default="npg_inverted_pendulum")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--minutes", type=float, default=6.5, help="wall budget per seed")
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--anchor", action="store_true", help="draw the seed README's points")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--root", default="exp/npg_learning_check", help="run directories")
    p.add_argument("--out", default=None, help="results folder (CSV copies, summary, plot); "
                   "required unless --print")
    p.add_argument("--analyze-only", action="store_true")
    p.add_argument("--print", action="store_true", help="only print the sweep's command")
    add_launcher_args(p)
    p.add_argument("extra", nargs="*", help="further Hydra overrides")
    args = p.parse_args(argv)
    check_launcher_args(p, args)
    root = Path(args.root) / args.overrides
    cmd = sweep_command(args, root)
    if args.print:
        print(quoted(cmd))
        return 0
    if not args.out:
        p.error("--out is required (or --print)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.analyze_only:
        run_multirun(cmd, root / "sweep.log")
    runs, summary = {}, {}
    for seed in args.seeds:
        rows = read_rows(root / f"seed{seed}" / "results.csv")
        runs[seed] = rows
        summary[seed] = {**summarize(rows, args.threshold),
                         "stopped_by_budget": stopped_by_limit(root / f"seed{seed}")}
        if rows:
            shutil.copy(root / f"seed{seed}" / "results.csv", out / f"seed{seed}-results.csv")
    (out / "summary.json").write_text(json.dumps(
        {"overrides": args.overrides, "command": " ".join(sys.argv), "sweep": quoted(cmd),
         "runs": summary},
        indent=2))
    plot(out, runs, args.anchor, f"model-based NPG, {args.overrides} (CPU)")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
