"""The ``fastmbrl`` command line.

    fastmbrl info          what was compiled, which devices are seen (and why none)
    fastmbrl demo          fit an ensemble on synthetic data with the fused NLL, loss printed
    fastmbrl train KEY=VALUE...   train (Hydra overrides), e.g.
                           fastmbrl train algorithm=mbpo overrides=mbpo_hopper seed=0
    fastmbrl plot RUN_DIR...   learning curves (mean and spread over seeds) of runs' results.csv
    fastmbrl omd {tabular,cartpole,mujoco} ...   OMD's entry points (docs/omd.md)
    fastmbrl model-based-npg --output DIR --config FILE.txt   run an mjrl model-based NPG
                           config file (prints the equivalent `fastmbrl train` command)
    fastmbrl value-expansion -env E -algo SAC-MVE -H 5 -model_type analytic   the value_expansion
                           seed's command line, translated (docs/value_expansion.md)
"""

from __future__ import annotations

import argparse
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    from .info import collect, format_report

    print(format_report(collect()))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(steps=args.steps, device=args.device, seed=args.seed, backend=args.backend)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import main as train_main

    return train_main(args.overrides)


def _cmd_plot(args: argparse.Namespace) -> int:
    from .runs.plot import DEFAULT_IGNORE_KEYS, PlotError, plot_runs

    try:
        out = plot_runs(args.run_dirs, out=args.out, x=args.x, y=args.y, labels=args.label,
                        spread=args.spread, csv_name=args.csv, title=args.title,
                        ignore_keys=DEFAULT_IGNORE_KEYS + tuple(args.ignore_key or ()))
    except PlotError as e:
        print(f"fastmbrl plot: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


def _cmd_omd(args: argparse.Namespace) -> int:
    from .omd_cli import main as omd_main

    return omd_main(args.rest)
def _cmd_value_expansion(args: argparse.Namespace) -> int:
    from .ve_cli import main as ve_main

    return ve_main(args.rest)


def _cmd_model_based_npg(args: argparse.Namespace) -> int:
    from .mjrl_config import main as npg_main
    from .schema import ConfigError

    try:
        return npg_main(args.output, args.config, device=args.device, dry_run=args.dry_run,
                        extra=args.overrides)
    except ConfigError as e:
        print(f"fastmbrl model-based-npg: configuration error: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastmbrl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("info", help="build, kernels and devices").set_defaults(fn=_cmd_info)
    d = sub.add_parser("demo", help="fit a Gaussian ensemble on synthetic data")
    d.add_argument("--steps", type=int, default=600, help="Adam steps (default 600)")
    d.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--backend", default=None, choices=["auto", "reference", "native"])
    d.set_defaults(fn=_cmd_demo)
    t = sub.add_parser("train", help="train an agent (Hydra overrides, e.g. overrides=mbpo_hopper)",
                       add_help=False)
    t.add_argument("overrides", nargs=argparse.REMAINDER,
                   help="Hydra overrides; `fastmbrl train --help` shows the config")
    t.set_defaults(fn=_cmd_train)
    pl = sub.add_parser(
        "plot", help="learning curves of runs: mean and spread over seeds, to a PNG",
        description="Plot a column of each run's results.csv against another; runs whose "
        "configs differ only in the ignored keys (seed) form one curve, drawn as the mean with "
        "a shaded band. See docs/runs.md.")
    pl.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                    help="a run directory, or a folder with run directories below it")
    pl.add_argument("--out", default=None, help="PNG to write (default <y>_vs_<x>.png)")
    pl.add_argument("--x", "--xkey", dest="x", default="env_step",
                    help="x column (default env_step; --xkey as mjrl's plot_from_logs)")
    pl.add_argument("--y", default="episode_return", help="y column (default episode_return)")
    pl.add_argument("--label", action="append", default=None,
                    help="curve label, one per RUN_DIR (runs sharing a label are averaged)")
    pl.add_argument("--spread", default="std", choices=["std", "minmax", "none"],
                    help="shaded band: mean +- std (default), min-max over runs, or none")
    pl.add_argument("--csv", default="results.csv", help="CSV file name in each run")
    pl.add_argument("--ignore-key", action="append", default=None, metavar="KEY",
                    help="config key also ignored when grouping runs (always ignored: the seed and "
                    "run-management keys such as resume); repeatable")
    pl.add_argument("--title", default=None)
    pl.set_defaults(fn=_cmd_plot)
    o = sub.add_parser("omd", help="OMD: tabular figures, or the seed's cartpole/mujoco command "
                       "lines translated to `fastmbrl train`", add_help=False)
    o.add_argument("rest", nargs=argparse.REMAINDER)
    o.set_defaults(fn=_cmd_omd)
    ve = sub.add_parser("value-expansion", help="the value_expansion seed's run_experiment.py "
                        "flags (-env -algo -H -model_type ...) translated to `fastmbrl train`",
                        add_help=False)
    ve.add_argument("rest", nargs=argparse.REMAINDER)
    ve.set_defaults(fn=_cmd_value_expansion)
    mb = sub.add_parser(
        "model-based-npg", help="run an mjrl v2 model-based NPG config file (PAL/MAL)",
        description="Translate mjrl's run_model_based_npg.py config (a dict literal, parsed "
        "safely) into `fastmbrl train algorithm=mbnpg ...` overrides, print that command and "
        "run it. See docs/npg.md.")
    mb.add_argument("--output", "-o", required=True, help="run directory")
    mb.add_argument("--config", "-c", required=True, help="mjrl config file (.txt)")
    mb.add_argument("--device", default=None,
                    help="override the file's device (e.g. cpu or auto on a machine without GPU)")
    mb.add_argument("--dry-run", action="store_true", help="only print the command")
    mb.add_argument("overrides", nargs="*", help="further Hydra overrides, e.g. resume=true")
    mb.set_defaults(fn=_cmd_model_based_npg)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # everything after `train` belongs to Hydra (--help, -m, ...)
        return _cmd_train(argparse.Namespace(overrides=argv[1:]))
    if argv[:1] == ["omd"]:  # the original's absl flags (--noflag, --config.x=...) pass as is
        return _cmd_omd(argparse.Namespace(rest=argv[1:]))
    if argv[:1] == ["value-expansion"]:  # single-dash flags (-env, -H) belong to the seed's parser
        return _cmd_value_expansion(argparse.Namespace(rest=argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help()
        return 2
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
