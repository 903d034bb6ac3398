"""The value-aware experiments of the VaGraM and VA-MBPO seeds, as one grid of runs.

    Hopper with 0/5/10/15 distracting dimensions        x  MLE, VaGraM (bounded), MA-L1
    Hopper with a smaller model (3 or 2 layers of 64)   x  MLE, VaGraM (bounded), MA-L1

    # print the full-scale commands (the seeds' settings; a GPU and days of compute)
    python benchmarks/value_aware_experiments.py --print

    # a short CPU run of every cell (what benchmarks/results/*-value_aware_experiments holds)
    python benchmarks/value_aware_experiments.py --short --steps 1000 --launcher ray --jobs 2 \\
        --root exp/value_aware_short --out benchmarks/results/2026-11-21-cpu-value_aware_experiments

    # the full grid on a SLURM cluster, one GPU per run (pip install "fastmbrl[slurm]")
    python benchmarks/value_aware_experiments.py --launcher submitit_slurm --root exp/va \\
        hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1 hydra.launcher.timeout_min=4320

The grid is ONE Hydra multirun (`fastmbrl train -m`), sent to the launcher that ``--launcher``
names (docs/sweeps.md): ``basic`` (Hydra's own, one run after another; no extra needed), ``ray``
(a local Ray, or a cluster with ``hydra.launcher.ray.init.address=...``), ``submitit_local`` or
``submitit_slurm``. Each cell is a pair of config groups, ``+va_setting=...`` and
``+va_method=...``, written from SETTINGS and METHODS below into ``<root>/conf`` and found
through ``hydra.searchpath``; so a cell's run is ``<root>/mbpo/<setting>-<method>/<env>/seedN``
and every run is resumable (the sweep passes ``resume=true``: re-running continues killed runs).
The summary (``summary.json``, ``summary.md``) lists per cell the last and best evaluation
return, the model's validation score and the wall-clock time; ``curves.png`` plots the returns.
``--summarize-only`` rereads existing runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from importlib import resources
from pathlib import Path

import yaml
from launch import (
    RUN_KEYS,
    add_launcher_args,
    check_launcher_args,
    launcher_overrides,
    quoted,
    run_multirun,
)

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



def cell_args(args, name: str) -> list[str]:
    """The overrides of one cell as a plain `fastmbrl train` command would take them."""
    setting, method = name.split("-", 1)
    out = [*SETTINGS[setting], *METHODS[method], f"experiment={name}", f"seed={args.seed}",
           f"root_dir={args.root}"]
    if args.steps:
        out.append(f"overrides.num_steps={args.steps}")
    if args.short:
        out += SHORT
    return out + list(args.extra)


def commands(args) -> dict[str, list[str]]:
    """One `fastmbrl train` command per cell (what --print shows)."""
    return {f"{setting}-{method}": ["fastmbrl", "train", *cell_args(args, f"{setting}-{method}")]
            for setting in SETTINGS for method in METHODS}


def group_config(overrides: list[str]) -> str:
    """A config-group file (package _global_) applying ``overrides``: ``group=option`` picks a
    config group's option, ``[+]a.b=value`` and ``key=value`` set a key."""
    defaults, values = [], {}
    for item in overrides:
        key, value = item.lstrip("+").split("=", 1)
        if (resources.files("fastmbrl.conf") / key).is_dir():  # a config group of fastmbrl's
            defaults.append({f"override /{key}": value})
            continue
        *parents, leaf = key.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    body = {"defaults": [*defaults, "_self_"], **values}
    return "# @package _global_\n" + yaml.safe_dump(body, sort_keys=False)


def write_groups(conf: Path) -> None:
    """SETTINGS and METHODS as the config groups va_setting and va_method in ``conf``."""
    for group, table in (("va_setting", SETTINGS), ("va_method", METHODS)):
        (conf / group).mkdir(parents=True, exist_ok=True)
        for name, overrides in table.items():
            extra = ([f"experiment=${{hydra:runtime.choices.va_setting}}-{name}"]
                     if group == "va_method" else [])
            (conf / group / f"{name}.yaml").write_text(group_config(overrides + extra))


def sweep_command(args, names: list[str]) -> list[str]:
    """The grid's cells ``names`` (and the seed) as one `fastmbrl train -m` multirun."""
    root = Path(args.root).resolve()
    settings = list(dict.fromkeys(n.split("-", 1)[0] for n in names))
    methods = list(dict.fromkeys(n.split("-", 1)[1] for n in names))
    cmd = ["fastmbrl", "train", "-m", f"hydra.searchpath=[file://{root / 'conf'}]",
           f"+va_setting={','.join(settings)}", f"+va_method={','.join(methods)}",
           f"seed={args.seed}", f"root_dir={root}", f"hydra.sweep.dir={root / 'mbpo'}",
           "hydra.sweep.subdir=${experiment}/${overrides.env}/seed${seed}", *RUN_KEYS,
           *launcher_overrides(args)]
    if args.steps:
        cmd.append(f"overrides.num_steps={args.steps}")
    if args.short:
        cmd += SHORT
    return cmd + list(args.extra)


def run_sweep(args, names: list[str]) -> float:
    """Write the config groups, run the multirun through the launcher; its wall time."""
    root = Path(args.root).resolve()
    write_groups(root / "conf")
    cmd = sweep_command(args, names)
    swept = {f"{s}-{m}" for s in dict.fromkeys(n.split("-", 1)[0] for n in names)
             for m in dict.fromkeys(n.split("-", 1)[1] for n in names)}
    if swept - set(names):  # a sweep is settings x methods: --only's cells may imply more
        print(f"note: the sweep also runs {', '.join(sorted(swept - set(names)))}")
    return run_multirun(cmd, root / "sweep.log")[1]


def summarize(root: Path, names: list[str], seed: int) -> list[dict]:
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
    add_launcher_args(p)
    p.add_argument("--root", default="exp/value_aware")
    p.add_argument("--only", nargs="*", default=None, help="cells to run (default: all)")
    p.add_argument("--out", default=None, help="directory for summary.json / summary.md")
    p.add_argument("--summarize-only", action="store_true", help="only read existing runs")
    p.add_argument("extra", nargs="*", help="more Hydra overrides for every run")
    args = p.parse_args(argv)

    cmds = commands(args)
    if args.only:
        cmds = {k: v for k, v in cmds.items() if k in args.only}
    check_launcher_args(p, args)
    sweep = sweep_command(args, list(cmds))
    if args.print:
        for cmd in cmds.values():
            print(" ".join(cmd))
        print("# the same cells as one sweep (its config groups are written by a run):")
        print(quoted(sweep))
        return 0
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    wall = None
    if not args.summarize_only:
        wall = run_sweep(args, list(cmds))
    rows = summarize(root, list(cmds), args.seed)
    out = Path(args.out) if args.out else root
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({
        "commands": {k: " ".join(v) for k, v in cmds.items()},
        "sweep": quoted(sweep), "launcher": args.launcher,
        "sweep_wall_s": wall, "runs": rows}, indent=1))
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
