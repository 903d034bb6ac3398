"""``fastmbrl value-expansion ...``: the value_expansion seed's command line
(``scripts/experiments/run_experiment.py``), translated onto ``fastmbrl train``.

    fastmbrl value-expansion -env inverted_pendulum -algo SAC-MVE -H 5 -model_type analytic \\
        -seed 0 -gpu 0

Every flag of the seed is accepted; the translator prints the equivalent
``fastmbrl train algorithm=value_expansion ...`` command and runs it (``-dry_run``: only
prints it). Trailing ``key=value`` arguments are passed through as Hydra overrides
(``root_dir=...``, ``resume=true``, ``overrides.eval_every=...``).

    seed flag            fastmbrl
    -env E               overrides=ve_E (cartpole: the task cartpole_swingup)
    -algo A-X            agent=a expansion=x (SAC|DDPG × MVE|RETRACE|VG)
    -H N                 H=N (N = 0: expansion=none, plain SAC/DDPG, for every -algo)
    -model_type M        model_type=M (analytic: the MuJoCo oracle; network: learned)
    -nparticles N        accepted and unused, as in the seed (its code never reads it)
    -seed S              seed=S
    -gpu G               device=cuda:G; -1: device=cpu; not given: device=auto (a GPU when
                         torch sees one; the seed's default is GPU 0, which fails on a CPU)
    -wandb_mode M        online: use_wandb=true (needs wandb); disabled: use_wandb=false
    -wandb_entity E      WANDB_ENTITY for wandb (environment variable)
    -wandb_project P     wandb_project_name=P
    -num_steps N         overrides.num_steps=N (added: a shorter run)
    -dry_run             print the command only (added)

The run directory is ``root_dir/value_expansion/<A-X>_H<N>_<M>/<task>/seed<S>``
(``experiment=<A-X>_H<N>_<M>``, so settings do not share directories).
"""

from __future__ import annotations

import argparse
import os
import sys

ENVS = {"inverted_pendulum": "ve_inverted_pendulum", "cartpole": "ve_cartpole",
        "hopper": "ve_hopper", "walker2d": "ve_walker2d", "halfcheetah": "ve_halfcheetah"}
ALGOS = ("SAC-RETRACE", "SAC-MVE", "SAC-VG", "DDPG-RETRACE", "DDPG-MVE", "DDPG-VG")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's message names the flag; exit status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fastmbrl value-expansion", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-env", default="inverted_pendulum", choices=list(ENVS))
    p.add_argument("-algo", default="SAC-MVE", choices=ALGOS)
    p.add_argument("-H", type=int, default=0, help="expansion horizon >= 0 (0: plain SAC/DDPG)")
    p.add_argument("-model_type", default="analytic", choices=["analytic", "network"])
    p.add_argument("-nparticles", type=int, default=1, help="accepted, unused (as the seed)")
    p.add_argument("-seed", type=int, default=1)
    p.add_argument("-gpu", type=int, default=None,
                   help="GPU index; -1: CPU; default: auto (GPU 0 in the seed)")
    p.add_argument("-wandb_mode", default="disabled", choices=["online", "disabled"],
                   help="the seed's default is online; here disabled (wandb is optional)")
    p.add_argument("-wandb_entity", default=None)
    p.add_argument("-wandb_project", default="value_expansion_iclr23")
    p.add_argument("-num_steps", type=int, default=None, help="transitions (shortens a run)")
    p.add_argument("-dry_run", action="store_true", help="only print the command")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="further Hydra overrides for fastmbrl train")
    return p


def translate(argv: list[str]) -> tuple[list[str], bool]:
    """``(fastmbrl train overrides, dry_run)`` of the seed's flags; argparse errors exit 2."""
    p = parser()
    a = p.parse_args(argv)
    agent, expansion = a.algo.split("-")
    if a.H < 0:
        p.exit(2, f"{p.prog}: error: argument -H: must be >= 0, got {a.H}\n")
    if a.num_steps is not None and a.num_steps < 1:
        p.exit(2, f"{p.prog}: error: argument -num_steps: must be >= 1, got {a.num_steps}\n")
    if a.nparticles < 1:
        p.exit(2, f"{p.prog}: error: argument -nparticles: must be >= 1, got {a.nparticles}\n")
    if a.gpu is not None and a.gpu < -1:
        p.exit(2, f"{p.prog}: error: argument -gpu: a GPU index or -1 (CPU), got {a.gpu}\n")
    for o in a.overrides:
        if "=" not in o:
            p.exit(2, f"{p.prog}: error: unexpected argument {o!r} (flags start with -, "
                   "overrides are KEY=VALUE)\n")
    exp = expansion.lower() if a.H > 0 else "none"  # H = 0: the one-step target of both
    out = ["algorithm=value_expansion", f"overrides={ENVS[a.env]}", f"agent={agent.lower()}",
           f"expansion={exp}", f"H={a.H}", f"model_type={a.model_type}", f"seed={a.seed}",
           f"device={'auto' if a.gpu is None else 'cpu' if a.gpu < 0 else f'cuda:{a.gpu}'}",
           f"experiment={a.algo}_H{a.H}_{a.model_type}"]
    if a.num_steps is not None:
        out.append(f"overrides.num_steps={a.num_steps}")
    if a.wandb_mode == "online":
        out += ["use_wandb=true", f"wandb_project_name={a.wandb_project}"]
        if a.wandb_entity:
            os.environ.setdefault("WANDB_ENTITY", a.wandb_entity)
    return out + list(a.overrides), a.dry_run


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    overrides, dry = translate(argv)
    from .train import run_translated

    return run_translated(overrides, dry)
