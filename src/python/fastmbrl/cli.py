"""The ``fastmbrl`` command line.

    fastmbrl info          what was compiled, which devices are seen (and why none)
    fastmbrl demo          fit an ensemble on synthetic data with the fused NLL, loss printed
    fastmbrl train KEY=VALUE...   train (Hydra overrides), e.g.
                           fastmbrl train algorithm=mbpo overrides=mbpo_hopper seed=0
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
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help()
        return 2
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
