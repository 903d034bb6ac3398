"""Learning check (a script, not a test): does MBPO learn as published?

Runs ``fastmbrl train`` for several seeds (in parallel processes), then reads each run's
results.csv and reports, per seed, the evaluation return at the checked step and the step at
which the average over the last ``--window`` evaluations first reached ``--threshold``.

    # issue target: inverted_pendulum >= 900 by 15k env steps, 3 seeds, CPU
    python benchmarks/learning_check.py --overrides mbpo_inverted_pendulum --steps 15000 \\
        --threshold 900 --seeds 0 1 2 --root exp/learning_check

    # only analyse runs that already exist (e.g. resumed ones)
    python benchmarks/learning_check.py --analyze-only --root exp/learning_check ...

Writes ``summary.json`` and ``curves.png`` (mean and spread over seeds) into ``--root``.
Runs are resumable: re-running the same command continues killed runs (resume=true).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path


def run_dir(root: Path, overrides: str, seed: int) -> Path:
    env = overrides.removeprefix("mbpo_")
    env = {"inv_pendulum": "inverted_pendulum", "walker": "walker2d"}.get(env, env)
    return root / "mbpo" / "learning_check" / env / f"seed{seed}"


def analyze(path: Path, steps: int, threshold: float, window: int) -> dict:
    with open(path / "results.csv") as f:
        rows = [(int(r["env_step"]), float(r["episode_return"])) for r in csv.DictReader(f)]
    rows = [r for r in rows if r[0] <= steps]
    reached = None
    for i in range(len(rows)):
        recent = [ret for _, ret in rows[max(0, i - window + 1) : i + 1]]
        if len(recent) == window and sum(recent) / window >= threshold:
            reached = rows[i][0]
            break
    last = [ret for _, ret in rows[-window:]]
    return {
        "run_dir": str(path),
        "last_env_step": rows[-1][0] if rows else 0,
        "final_avg_return": sum(last) / len(last) if last else None,
        "first_step_avg_reached_threshold": reached,
        "passed": reached is not None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--overrides", default="mbpo_inverted_pendulum")
    p.add_argument("--steps", type=int, default=15000, help="env steps (overrides.num_steps)")
    p.add_argument("--threshold", type=float, default=900.0)
    p.add_argument("--window", type=int, default=4, help="evaluations averaged (default 4)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--root", default="exp/learning_check")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--analyze-only", action="store_true")
    p.add_argument("extra", nargs="*", help="further Hydra overrides")
    args = p.parse_args(argv)
    root = Path(args.root)

    if not args.analyze_only:
        root.mkdir(parents=True, exist_ok=True)
        procs = []
        for seed in args.seeds:
            cmd = [sys.executable, "-m", "fastmbrl", "train", f"overrides={args.overrides}",
                   f"overrides.num_steps={args.steps}", f"seed={seed}", f"root_dir={root}",
                   "experiment=learning_check", f"device={args.device}",
                   f"torch_threads={args.threads}", "progress=false", "resume=true", *args.extra]
            log = open(root / f"seed{seed}.log", "a")
            print(" ".join(cmd))
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        codes = [proc.wait() for proc in procs]
        if any(codes):
            print(f"runs exited with {codes}; see {root}/seed*.log")
            return 1

    results = [analyze(run_dir(root, args.overrides, s), args.steps, args.threshold,
                       args.window) for s in args.seeds]
    summary = {"overrides": args.overrides, "steps": args.steps, "threshold": args.threshold,
               "window": args.window, "seeds": args.seeds, "runs": results,
               "all_passed": all(r["passed"] for r in results)}
    (root / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    from fastmbrl.runs.plot import plot_runs

    png = plot_runs([str(run_dir(root, args.overrides, s)) for s in args.seeds],
                    out=str(root / "curves.png"), spread="minmax",
                    title=f"MBPO {args.overrides}: eval return, mean and min-max over seeds")
    for r in results:
        print(f"{r['run_dir']}: last step {r['last_env_step']}, final avg return "
              f"{r['final_avg_return']}, reached {args.threshold} at "
              f"{r['first_step_avg_reached_threshold']}")
    print(f"all passed: {summary['all_passed']}; wrote {root / 'summary.json'} and {png}")
    return 0 if summary["all_passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
