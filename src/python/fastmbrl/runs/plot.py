"""``fastmbrl plot``: learning curves, mean and spread across seeds, from run directories.

Each RUN_DIR is a run (it holds ``results.csv``) or a folder with runs below it (a Hydra
multirun folder, say): every directory under it holding ``results.csv`` is a run.

Runs are grouped into curves:

1. with ``labels`` (one per RUN_DIR argument), by label: runs sharing a label are one curve;
2. else by resolved config: runs whose ``.hydra/config.yaml`` (or ``config.yaml``) are equal
   once the ``ignore_keys`` (``DEFAULT_IGNORE_KEYS``: the seed and run-management keys such as
   ``resume``, at any depth) are removed are one curve,
   labelled by the config keys whose values differ between curves;
3. runs without a config file are grouped by the name of their parent directory
   (``runs/mbpo_hopper/seed0`` and ``runs/mbpo_hopper/seed1`` make the curve ``mbpo_hopper``).

Within a curve every run is linearly interpolated onto a common x grid spanning the x range
all its runs cover (so a shorter run truncates the curve rather than being extrapolated): the
union of the runs' x values there, or ``max_points`` evenly spaced points when that union is
larger. The line is the mean over runs; the shaded band is ``mean ± std`` (population std,
``spread="std"``, the default) or ``min .. max`` (``spread="minmax"``) over runs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .logger import read_csv

__all__ = ["GroupCurve", "PlotError", "aggregate", "find_runs", "group_runs", "plot_runs"]

CONFIG_FILES = (".hydra/config.yaml", "config.yaml")


class PlotError(ValueError):
    """A run directory, CSV or column needed for a plot is missing or unusable."""


@dataclass
class GroupCurve:
    """One curve: ``x [P]`` grid and ``mean``, ``std``, ``min``, ``max`` ``[P]`` over ``n`` runs."""

    label: str
    runs: list[Path]
    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    values: np.ndarray = field(repr=False)  # [n, P]: each run interpolated onto x

    @property
    def n(self) -> int:
        return len(self.runs)


# --------------------------------------------------------------------------- discovery
def find_runs(
    paths: Sequence[str | os.PathLike], csv_name: str = "results.csv"
) -> list[list[Path]]:
    """For each given path, the runs it stands for: itself if it holds ``csv_name``, else every
    directory below it that does (sorted). Raises ``PlotError`` for a missing path or none."""
    out = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise PlotError(f"run directory {p} does not exist")
        if not p.is_dir():
            raise PlotError(f"{p} is not a directory (give run directories, not files)")
        if (p / csv_name).is_file():
            out.append([p])
            continue
        found = []
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # skip .hydra, ...
            if csv_name in files:
                found.append(Path(root))
        if not found:
            raise PlotError(f"no {csv_name} in {p} or any directory below it")
        out.append(found)
    return out


def load_config(run_dir: Path) -> dict[str, Any] | None:
    """The run's config (``.hydra/config.yaml`` or ``config.yaml``) as a dict, or None."""
    for name in CONFIG_FILES:
        path = run_dir / name
        if path.is_file():
            from omegaconf import OmegaConf

            cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
            return cfg if isinstance(cfg, dict) else {"_": cfg}
    return None


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


# Keys that change how a run is managed, not what it computes: runs differing only in these
# (and the seed) are seeds of one curve.
DEFAULT_IGNORE_KEYS = (
    "seed", "resume", "progress", "torch_threads", "root_dir", "experiment", "debug_mode",
    "use_tensorboard", "use_wandb", "wandb_project_name", "wandb_group_name",
    "log_frequency_agent", "checkpoint_every_epochs", "keep_checkpoints",
    "checkpoint_model_buffer",
)


def _config_key(cfg: dict[str, Any], ignore_keys: Sequence[str]) -> tuple[tuple[str, str], ...]:
    flat = _flatten(cfg)
    ignored = set(ignore_keys)
    return tuple(
        sorted(
            (k, json.dumps(v, sort_keys=True, default=str))
            for k, v in flat.items()
            if k not in ignored and k.rsplit(".", 1)[-1] not in ignored
        )
    )


def _config_labels(keys: list[tuple[tuple[str, str], ...]], max_keys: int = 4) -> list[str]:
    """Label each config group by the keys whose values differ between the groups."""
    dicts = [dict(k) for k in keys]
    all_keys = sorted(set().union(*dicts))
    differing = [k for k in all_keys if len({d.get(k, "<unset>") for d in dicts}) > 1]
    labels = []
    for d in dicts:
        parts = [f"{k}={json.loads(d[k]) if k in d else '<unset>'}" for k in differing[:max_keys]]
        if len(differing) > max_keys:
            parts.append("...")
        labels.append(", ".join(parts) or "config")
    return labels


def group_runs(
    run_groups: Sequence[Sequence[Path]],
    labels: Sequence[str] | None = None,
    ignore_keys: Sequence[str] = DEFAULT_IGNORE_KEYS,
) -> dict[str, list[Path]]:
    """``{label: [run, ...]}`` in order of first appearance (see the module docstring)."""
    if labels is not None:
        if len(labels) != len(run_groups):
            raise PlotError(
                f"{len(labels)} labels for {len(run_groups)} run directories: give one --label "
                "per RUN_DIR, or none"
            )
        grouped: dict[str, list[Path]] = {}
        for label, runs in zip(labels, run_groups, strict=True):
            grouped.setdefault(label, []).extend(runs)
        return grouped

    runs = list(dict.fromkeys(r.resolve() for group in run_groups for r in group))
    by_key: dict[Any, list[Path]] = {}
    for r in runs:
        cfg = load_config(r)
        key = ("config", _config_key(cfg, ignore_keys)) if cfg is not None else ("dir", r.parent)
        by_key.setdefault(key, []).append(r)

    config_keys = [k[1] for k in by_key if k[0] == "config"]
    config_labels = dict(zip(config_keys, _config_labels(config_keys), strict=True))
    if len(config_keys) == 1:  # a single config curve: name it after its runs' folder
        parents = {r.parent for r in by_key[("config", config_keys[0])]}
        only = next(iter(parents))
        config_labels[config_keys[0]] = only.name if len(parents) == 1 and only.name else "runs"
    grouped = {}
    for key, members in by_key.items():
        label = config_labels[key[1]] if key[0] == "config" else (key[1].name or str(key[1]))
        base, i = label, 2
        while label in grouped:  # two different groups with the same display name
            label, i = f"{base} ({i})", i + 1
        grouped[label] = members
    return grouped


# --------------------------------------------------------------------------- data
def read_series(run_dir: Path, x: str, y: str, csv_name: str = "results.csv"):
    """``(x [N], y [N])`` of a run: rows with both values, sorted by x, last row per x kept."""
    path = run_dir / csv_name
    if not path.is_file():
        raise PlotError(f"run {run_dir} has no {csv_name}")
    header, rows = read_csv(path)
    for col in (x, y):
        if col not in header:
            raise PlotError(
                f"{path} has no column {col!r}; available columns: {', '.join(header) or '(none)'}"
            )
    pairs: dict[float, float] = {}
    for row in rows:
        try:
            xv, yv = float(row[x]), float(row[y])
        except (TypeError, ValueError):
            continue  # empty cell: this row logged other keys
        if math.isfinite(xv) and math.isfinite(yv):
            pairs.pop(xv, None)
            pairs[xv] = yv
    if not pairs:
        raise PlotError(f"{path} has no row with numeric values for both {x!r} and {y!r}")
    xs = np.array(sorted(pairs), dtype=np.float64)
    return xs, np.array([pairs[v] for v in xs], dtype=np.float64)


def _curve(label: str, runs: list[Path], series, max_points: int) -> GroupCurve:
    lo = max(float(s[0][0]) for s in series)
    hi = min(float(s[0][-1]) for s in series)
    if lo > hi:
        raise PlotError(
            f"the runs of {label!r} cover no common {lo:g}..{hi:g} x range: "
            + ", ".join(
                f"{r} [{s[0][0]:g}, {s[0][-1]:g}]" for r, s in zip(runs, series, strict=True)
            )
        )
    grid = np.unique(np.concatenate([s[0][(s[0] >= lo) & (s[0] <= hi)] for s in series]))
    if len(grid) > max_points:
        grid = np.linspace(lo, hi, max_points)
    values = np.stack([np.interp(grid, sx, sy) for sx, sy in series])
    return GroupCurve(
        label=label,
        runs=runs,
        x=grid,
        mean=values.mean(axis=0),
        std=values.std(axis=0),
        min=values.min(axis=0),
        max=values.max(axis=0),
        values=values,
    )


def aggregate(
    run_dirs: Sequence[str | os.PathLike],
    x: str = "env_step",
    y: str = "episode_return",
    labels: Sequence[str] | None = None,
    csv_name: str = "results.csv",
    ignore_keys: Sequence[str] = DEFAULT_IGNORE_KEYS,
    max_points: int = 500,
) -> list[GroupCurve]:
    """Group the runs and average each group over its runs on a common x grid."""
    groups = group_runs(find_runs(run_dirs, csv_name), labels, ignore_keys)
    curves = []
    for label, runs in groups.items():
        series = [read_series(r, x, y, csv_name) for r in runs]
        curves.append(_curve(label, runs, series, max_points))
    return curves


SPREADS = ("std", "minmax", "none")


def plot_runs(
    run_dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    x: str = "env_step",
    y: str = "episode_return",
    labels: Sequence[str] | None = None,
    spread: str = "std",
    csv_name: str = "results.csv",
    ignore_keys: Sequence[str] = DEFAULT_IGNORE_KEYS,
    title: str | None = None,
) -> Path:
    """Draw one mean curve per group with a shaded spread and write a PNG; returns its path.

    ``out`` defaults to ``<y>_vs_<x>.png`` in the current directory.
    """
    if spread not in SPREADS:
        raise PlotError(f"spread must be one of {', '.join(SPREADS)}, got {spread!r}")
    curves = aggregate(run_dirs, x, y, labels, csv_name, ignore_keys)
    out = Path(out) if out is not None else Path(f"{y}_vs_{x}.png")
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)

    from matplotlib.figure import Figure  # Agg canvas, no pyplot / GUI backend involved

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for c in curves:
        (line,) = ax.plot(c.x, c.mean, label=f"{c.label} (n={c.n})", lw=1.6)
        if spread != "none" and c.n > 1:
            lo, hi = (c.mean - c.std, c.mean + c.std) if spread == "std" else (c.min, c.max)
            ax.fill_between(c.x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    band = {"std": "mean ± 1 std over runs", "minmax": "mean, min-max over runs",
            "none": "mean over runs"}[spread]
    ax.set_title(title if title is not None else f"{y} ({band})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(out, dpi=120)
    return out
