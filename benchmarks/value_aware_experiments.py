"""The value-aware experiments of the VaGraM and VA-MBPO seeds, as one grid of runs.

    Hopper with 0/5/10/15 distracting dimensions        x  MLE, VaGraM (bounded), MA-L1
    Hopper with a smaller model (3 or 2 layers of 64)   x  MLE, VaGraM (bounded), MA-L1

    # print the full-scale commands (the seeds' settings; a GPU and days of compute)
    python benchmarks/value_aware_experiments.py --print

    # a short CPU run of every cell (what benchmarks/results/*-value_aware_experiments holds)
    python benchmarks/value_aware_experiments.py --short --steps 1000 --jobs 2 \\
        --root exp/value_aware_short --out benchmarks/results/2026-11-21-cpu-value_aware_experiments

Each cell is one ``fastmbrl train`` run (resumable: re-running continues killed runs). The
summary (``summary.json``, ``summary.md``) lists per cell the last and best evaluation return,
the model's validation score and the wall-clock time; ``curves.png`` plots the returns.
``--summarize-only`` rereads existing runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

METHODS = {
    # the seeds' commands: VaGraM's ICLR MLE baseline used the Gaussian ensemble with batch 256
    "mle": ["dynamics_model=gaussian_mlp_ensemble", "overrides.model_batch_size=256"],
    "vagram": ["dynamics_model=vaml_ensemble"],
    "ma_l1": ["dynamics_model=gaussian_mlp_ensemble", "+overrides.model_loss_type=va",
              "dynamics_model.va_norm=l1", "overrides.model_batch_size=256"],
}
SETTINGS = {
    **{f"distraction{d}": ["overrides=mbpo_hopper_distraction",
                           f"overrides.distraction_dimensions={d}"] for d in (0, 5, 10, 15)},
    **{f"small_model_{n}x64": ["overrides=mbpo_hopper", "overrides.model_batch_size=1024",
                               f"dynamics_model.model.num_layers={n}",
                               "dynamics_model.model.hid_size=64"] for n in (3, 2)},
}
# --short: a CPU-sized version of every run (a smoke test of the pipeline, not a result)
SHORT = ["algorithm.initial_exploration_steps=500", "overrides.epoch_length=250",
         "overrides.effective_model_rollouts_per_step=20", "overrides.num_sac_updates_per_step=2",
         "overrides.sac_hidden_size=256", "overrides.patience=2",
         "+overrides.num_epochs_train_model=5", "+overrides.v_update_batch_size=1000"]


def commands(args) -> dict[str, list[str]]:
    out = {}
    for setting, s_args in SETTINGS.items():
        for method, m_args in METHODS.items():
            name = f"{setting}-{method}"
            cmd = ["fastmbrl", "train", *s_args, *m_args, f"experiment={name}",
                   f"seed={args.seed}", f"root_dir={args.root}"]
            if args.steps:
                cmd.append(f"overrides.num_steps={args.steps}")
            if args.short:
                cmd += SHORT
            cmd += args.extra
            out[name] = cmd
    return out


def run_one(name: str, cmd: list[str], log_dir: Path) -> float:
    t = time.perf_counter()
    log = log_dir / f"{name}.log"
    full = [sys.executable, "-m", "fastmbrl", *cmd[1:], "progress=false", "resume=true",
            "use_tensorboard=false"]
    with open(log, "w") as f:
        rc = subprocess.call(full, stdout=f, stderr=subprocess.STDOUT)
    if rc:
        print(f"{name}: exit {rc}, see {log}", flush=True)
    return time.perf_counter() - t


def summarize(root: Path, names: list[str], seed: int, wall: dict[str, float]) -> list[dict]:
    rows = []
    for name in names:
        runs = list((root / "mbpo" / name).glob(f"*/seed{seed}/results.csv"))
        if not runs:
            rows.append({"cell": name, "status": "missing"})
            continue
        with open(runs[0]) as f:
            res = list(csv.DictReader(f))
        returns = [float(r["episode_return"]) for r in res]
        rows.append({
            "cell": name, "status": "ok", "env_steps": int(res[-1]["env_step"]),
            "last_return": returns[-1], "best_return": max(returns),
            "model_val_score": float(res[-1].get("model_val_score") or "nan"),
            "wall_time_s": float(res[-1]["wall_time_s"]),
            "process_time_s": wall.get(name),
        })
    return rows


def plot_curves(root: Path, names: list[str], seed: int, path: Path) -> None:
    """One panel per setting, one evaluation-return curve per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(n.split("-")[0] for n in names))
    cols = min(3, len(settings))
    rows_n = (len(settings) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.5 * cols, 3.2 * rows_n), squeeze=False)
    for ax, setting in zip(axes.flat, settings, strict=False):
        for name in names:
            if not name.startswith(setting + "-"):
                continue
            runs = list((root / "mbpo" / name).glob(f"*/seed{seed}/results.csv"))
            if not runs:
                continue
            with open(runs[0]) as f:
                res = list(csv.DictReader(f))
            ax.plot([int(r["env_step"]) for r in res],
                    [float(r["episode_return"]) for r in res], label=name.split("-", 1)[1])
        ax.set_title(setting)
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval return")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(settings):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--print", action="store_true", help="only print the commands")
    p.add_argument("--short", action="store_true", help="CPU-sized runs (see SHORT)")
    p.add_argument("--steps", type=int, default=None, help="overrides.num_steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    p.add_argument("--root", default="exp/value_aware")
    p.add_argument("--only", nargs="*", default=None, help="cells to run (default: all)")
    p.add_argument("--out", default=None, help="directory for summary.json / summary.md")
    p.add_argument("--summarize-only", action="store_true", help="only read existing runs")
    p.add_argument("extra", nargs="*", help="more Hydra overrides for every run")
    args = p.parse_args(argv)

    cmds = commands(args)
    if args.only:
        cmds = {k: v for k, v in cmds.items() if k in args.only}
    if args.print:
        for cmd in cmds.values():
            print(" ".join(cmd))
        return 0
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    wall: dict[str, float] = {}
    if not args.summarize_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = {name: pool.submit(run_one, name, cmd, root) for name, cmd in cmds.items()}
            wall = {name: f.result() for name, f in futures.items()}
    rows = summarize(root, list(cmds), args.seed, wall)
    out = Path(args.out) if args.out else root
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"commands": {k: " ".join(v) for k, v in
                                                               cmds.items()},
                                                  "runs": rows}, indent=1))
    lines = ["| cell | env steps | last return | best return | model val score | wall s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['cell']} | {r['status']} | | | | |")
            continue
        lines.append(f"| {r['cell']} | {r['env_steps']} | {r['last_return']:.1f} | "
                     f"{r['best_return']:.1f} | {r['model_val_score']:.4g} | "
                     f"{r['wall_time_s']:.0f} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    plot_curves(root, list(cmds), args.seed, out / "curves.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
