"""Scalar logging for a run directory: CSV files per group, TensorBoard, optional wandb.

Each *group* of scalars has its own CSV file ``<run_dir>/<group>.csv``:

- ``results.csv`` (group ``"results"``, the default): evaluation rows, e.g.
  ``env_step, episode_return, ...``; this is what ``fastmbrl plot`` reads;
- ``train.csv`` (group ``"train"``): training scalars, e.g. ``env_step, model_loss, ...``;
- any other group name gives another file.

The first column of every CSV is the step (``step_key``, ``env_step`` by default); the other
columns appear in the order their keys were first logged. When a row brings a key the file has
not seen, the file is rewritten (atomically) with the wider header and earlier rows get an
empty cell in the new column, so a reader always sees one consistent header. Values are
written with ``repr`` precision; tensors are read with ``.item()`` (logging is the one place
where a host sync is expected, so log sparingly).

Resume: ``truncate_after(step)`` (or ``RunLogger(..., resume_step=step)``) drops the CSV rows
with ``step > step`` and restarts TensorBoard with ``purge_step=step + 1``, so the rows logged
after the checkpoint by the killed process are replaced by those the resumed process logs
again, and the CSVs end up with the same content as those of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write

__all__ = ["RunLogger", "write_config", "read_csv", "run_log", "say", "run_log_file"]

# The run's human-readable log: what a run prints (start, resume, one line per evaluation,
# errors) also goes to ``<run_dir>/train.log`` while ``run_log_file`` is open (fastmbrl.train.run
# opens it for every algorithm, after the start checks). Not propagated: say() prints itself.
run_log = logging.getLogger("fastmbrl.run")
run_log.propagate = False
run_log.setLevel(logging.INFO)


def say(message: str) -> None:
    """Print ``message`` and add it to the run's ``train.log`` (when one is open)."""
    print(message, flush=True)
    run_log.info(message)


@contextlib.contextmanager
def run_log_file(run_dir: str | os.PathLike, name: str = "train.log"):
    """Append what :func:`say` (and ``StepProgress.write``) reports to ``run_dir/name``, one
    timestamped line each, for the duration of the ``with``; an exception leaving the block
    is written there with its traceback. A resumed run appends to the same file."""
    handler = logging.FileHandler(Path(run_dir) / name, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s"))
    run_log.addHandler(handler)
    try:
        yield handler
    except BaseException as exc:
        # a traceback for errors; a one-line note for Ctrl-C and exits
        trace = not isinstance(exc, KeyboardInterrupt | SystemExit)
        run_log.error("stopped by %s: %s", type(exc).__name__, exc, exc_info=exc if trace else None)
        raise
    finally:
        run_log.removeHandler(handler)
        handler.close()


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), binary=False)


def _to_scalar(key: str, value: Any) -> int | float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"RunLogger.log: {key} is a tensor of shape {tuple(value.shape)}, expected one "
                "element"
            )
        value = value.item()
    elif isinstance(value, np.ndarray | np.generic):
        if np.size(value) != 1:
            raise ValueError(
                f"RunLogger.log: {key} is an array of shape {np.shape(value)}, expected one "
                "element"
            )
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"RunLogger.log: {key}={value!r} is not a number or a one-element tensor")


def read_csv(path: str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows (dicts of strings) of a CSV written by ``RunLogger``."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _drop_partial_last_line(path: Path) -> None:
    """A process killed mid-write can leave a line without its newline: drop that fragment."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


class _CsvGroup:
    """One append-only CSV whose header can grow."""

    def __init__(self, path: Path, step_key: str):
        self.path = path
        self.step_key = step_key
        self.columns: list[str] = [step_key]
        self._file: io.TextIOWrapper | None = None
        if path.exists() and path.stat().st_size > 0:
            _drop_partial_last_line(path)
            header, _ = read_csv(path)
            if header and header[0] != step_key:
                raise ValueError(
                    f"RunLogger: {path} has first column {header[0]!r}, expected the step "
                    f"column {step_key!r}"
                )
            if header:
                self.columns = header
        if not path.exists() or path.stat().st_size == 0:
            self._rewrite([])
        self._open()

    def _open(self) -> None:
        self._file = open(self.path, "a", newline="")  # noqa: SIM115 (kept open for appends)
        self._writer = csv.writer(self._file, lineterminator="\n")

    def _rewrite(self, rows: list[Mapping[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _atomic_write_text(self.path, buf.getvalue())

    def append(self, row: Mapping[str, int | float]) -> None:
        new = [k for k in row if k not in self.columns]
        if new:
            self.close()
            _, rows = read_csv(self.path)
            self.columns = self.columns + new
            self._rewrite(rows)
            self._open()
        self._writer.writerow([row.get(c, "") for c in self.columns])
        self._file.flush()

    def truncate_after(self, step: float) -> int:
        """Drop rows whose step is greater than ``step``; returns how many were dropped."""
        self.close()
        _, rows = read_csv(self.path)
        kept = [r for r in rows if not float(r[self.step_key]) > step]
        if len(kept) != len(rows):
            self._rewrite(kept)
        self._open()
        return len(rows) - len(kept)

    def flush(self, fsync: bool = True) -> None:
        if self._file is not None:
            self._file.flush()
            if fsync:
                os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_config(run_dir: str | os.PathLike, cfg: Any, name: str = "config.yaml") -> Path:
    """Write a resolved config (OmegaConf ``DictConfig`` or a plain dict) to ``run_dir/name``.

    Runs started through ``@hydra.main`` already have ``.hydra/config.yaml``; this is for runs
    started otherwise (the compose API, tests, notebooks).
    """
    from omegaconf import OmegaConf

    path = Path(run_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not OmegaConf.is_config(cfg):
        cfg = OmegaConf.create(cfg)
    _atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
    return path


class RunLogger:
    """Log scalars of a run to ``<run_dir>/<group>.csv``, TensorBoard and, optionally, wandb.

    Args:
        run_dir: the run directory (created if missing).
        use_tensorboard: write event files under ``<run_dir>/tb`` (tags ``<group>/<key>``).
        use_wandb: also log to wandb (imported only then; ``pip install wandb``). wandb gets
            ``<group>/<key>`` with ``step_key`` as its step metric.
        wandb_kwargs: passed to ``wandb.init`` (``project``, ``name``, ``config``, ``id``,
            ``resume``, ...); ``dir`` defaults to ``run_dir``.
        step_key: name of the step column (default ``env_step``).
        resume_step: when resuming from a checkpoint taken at this step, drop the CSV rows
            after it and purge later TensorBoard events (see ``truncate_after``).

    Usage::

        logger = RunLogger(run_dir)
        logger.log(step, episode_return=ret)                  # -> results.csv
        logger.log(step, group="train", model_loss=loss)      # -> train.csv
        logger.flush()                                        # before saving a checkpoint
        logger.close()
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        use_tensorboard: bool = True,
        use_wandb: bool = False,
        wandb_kwargs: dict[str, Any] | None = None,
        step_key: str = "env_step",
        resume_step: int | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.step_key = step_key
        self._groups: dict[str, _CsvGroup] = {}
        self._tb = None
        self._wandb_run = None
        self._wandb_groups: set[str] = set()
        self.use_tensorboard = use_tensorboard
        if use_wandb:
            self._wandb_run = self._init_wandb(dict(wandb_kwargs or {}))
        if resume_step is not None:
            self._truncate_csvs(resume_step)
        if use_tensorboard:
            self._open_tb(purge_step=None if resume_step is None else resume_step + 1)

    # ----------------------------------------------------------------- backends
    def _open_tb(self, purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=purge_step)

    def _init_wandb(self, kwargs: dict[str, Any]):
        try:
            import wandb
        except ImportError as e:
            raise ImportError(
                "RunLogger(use_wandb=True) needs wandb, which is not installed: "
                "pip install wandb  (or pip install 'fastmbrl[wandb]'); wandb is optional, "
                "CSV and TensorBoard logs are written without it"
            ) from e
        kwargs.setdefault("dir", str(self.run_dir))
        run = wandb.init(**kwargs)
        run.define_metric(self.step_key)
        return run

    def _group(self, name: str) -> _CsvGroup:
        g = self._groups.get(name)
        if g is None:
            if not name or os.sep in name or name.startswith("."):
                raise ValueError(f"RunLogger: bad group name {name!r}")
            g = self._groups[name] = _CsvGroup(self.run_dir / f"{name}.csv", self.step_key)
        return g

    # ----------------------------------------------------------------- API
    def csv_path(self, group: str = "results") -> Path:
        return self.run_dir / f"{group}.csv"

    def log(self, step: int, group: str = "results", **scalars: Any) -> None:
        """Append one row ``{step_key: step, **scalars}`` to ``<group>.csv`` (and TB, wandb).

        Values may be Python or numpy numbers or one-element tensors (read with ``.item()``).
        """
        if self.step_key in scalars:
            raise ValueError(
                f"RunLogger.log: {self.step_key!r} is the step column, pass it as step"
            )
        step = int(step)
        row: dict[str, int | float] = {self.step_key: step}
        for k, v in scalars.items():
            row[k] = _to_scalar(k, v)
        self._group(group).append(row)
        if self._tb is not None:
            for k, v in row.items():
                if k != self.step_key:
                    self._tb.add_scalar(f"{group}/{k}", v, global_step=step)
        if self._wandb_run is not None:
            if group not in self._wandb_groups:
                self._wandb_run.define_metric(f"{group}/*", step_metric=self.step_key)
                self._wandb_groups.add(group)
            data = {f"{group}/{k}": v for k, v in row.items() if k != self.step_key}
            data[self.step_key] = step
            self._wandb_run.log(data)

    def _csv_files(self) -> list[Path]:
        """This logger's groups plus any CSV in run_dir whose first column is the step."""
        paths = {g.path for g in self._groups.values()}
        for p in self.run_dir.glob("*.csv"):
            if p in paths or p.stat().st_size == 0:
                continue
            with open(p, newline="") as f:
                header = next(csv.reader(f), [])
            if header and header[0] == self.step_key:
                paths.add(p)
        return sorted(paths)

    def _truncate_csvs(self, step: float) -> dict[str, int]:
        dropped = {}
        for path in self._csv_files():
            name = path.stem
            dropped[name] = self._group(name).truncate_after(step)
        return dropped

    def truncate_after(self, step: int) -> dict[str, int]:
        """Drop every CSV row with step > ``step`` and purge later TensorBoard events.

        Call it when resuming from a checkpoint taken at ``step`` (``RunLogger(...,
        resume_step=step)`` does it on construction). Returns ``{group: rows dropped}``.
        wandb rows already sent cannot be removed (resume the wandb run with ``resume`` /
        ``id`` in ``wandb_kwargs``; wandb itself ignores steps it has already seen).
        """
        if math.isnan(step):
            raise ValueError("RunLogger.truncate_after: step is NaN")
        dropped = self._truncate_csvs(step)
        if self.use_tensorboard:
            if self._tb is not None:
                self._tb.close()
            self._open_tb(purge_step=int(step) + 1)
        return dropped

    def flush(self) -> None:
        """Flush (and fsync) the CSVs and flush TensorBoard: call before saving a checkpoint."""
        for g in self._groups.values():
            g.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        for g in self._groups.values():
            g.flush(fsync=False)
            g.close()
        self._groups.clear()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
