"""The rules of a run directory, applied by ``fastmbrl.train.run`` to every algorithm.

- **Lock** (:class:`RunLock`): one process at a time. ``fcntl.flock`` on ``<run_dir>/.lock``,
  which holds the holder's pid, host and start time. The kernel releases the lock when the
  process ends, however it ends (SIGKILL included), so a lock is never stale; the file itself
  stays. A second process gets :class:`RunDirError` at once, naming the holder's pid.
- **Start** (:func:`prepare_run_dir`), decided before anything in the directory is rewritten:

  ==========================================  ===========================================
  run directory holds                         ``resume=false``           ``resume=true``
  ==========================================  ===========================================
  nothing of a run                            start                      start (says so)
  CSVs / tb/ but no checkpoint (killed        refuse (RunDirError)       delete them, start
  before its first checkpoint)                                           afresh (says which)
  checkpoints                                 refuse (ConfigError)       resume from the newest
                                                                         intact one
  ==========================================  ===========================================

  Resuming verifies checkpoints newest first (header, length, SHA-256); a corrupt one is
  renamed to ``<name>.corrupt`` (kept aside) with a warning naming it, and the next older one
  is tried. When none is intact nothing is renamed and the start stops with a message.
  Then every CSV is cut back to the rows it had when the chosen checkpoint was saved
  (``save_run_checkpoint`` records the row counts in the checkpoint's header), so rows the
  killed process logged after it are not duplicated when they are logged again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .._io import atomic_write
from ..schema import ConfigError
from .checkpoint import CheckpointError, _read_header, list_checkpoints

__all__ = ["LOCK_NAME", "RunDirError", "RunLock", "RunStart", "csv_row_counts",
           "prepare_run_dir", "truncate_csvs", "verify_checkpoint"]

LOCK_NAME = ".lock"


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (locked, or holds an unfinished run); the
    message says what to do. ``fastmbrl train`` exits with status 2."""


# --------------------------------------------------------------------------- lock
class RunLock:
    """Exclusive lock on a run directory (created if missing) for the life of this object.

    Usage::

        with RunLock(run_dir):
            ...   # only this process writes run_dir

    Raises :class:`RunDirError` naming the holder's pid when another process (or another
    ``RunLock`` in this process) holds it. Uses ``flock``: released by the kernel when the
    process dies, even by SIGKILL. On NFS, ``flock`` works only where the client maps it to
    NFS locks (Linux does since 2.6.12).
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "pid unknown"
            os.close(fd)
            raise RunDirError(
                f"run directory {self.run_dir} is in use by another process ({holder}); wait "
                "for it to end or stop it, or choose another experiment=, seed= or root_dir="
            ) from None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# --------------------------------------------------------------------------- checkpoints
def verify_checkpoint(path: str | os.PathLike) -> dict:
    """Check a checkpoint's magic, header, length and SHA-256 without unpickling it; returns
    its header, or raises ``CheckpointError`` naming the file and what is wrong."""
    path = Path(path)
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        header = _read_header(f, path)
        while chunk := f.read(1 << 22):
            h.update(chunk)
            n += len(chunk)
    expected = int(header["payload_bytes"])
    if n != expected:
        what = "truncated" if n < expected else "corrupt (trailing bytes)"
        raise CheckpointError(f"checkpoint {path} is {what}: {n} payload bytes, the header "
                              f"says {expected}")
    if h.hexdigest() != header["sha256"]:
        raise CheckpointError(f"checkpoint {path} is corrupt: the SHA-256 of its payload does "
                              "not match its header")
    return header


def _set_aside(path: Path) -> Path:
    target = path.with_name(path.name + ".corrupt")
    i = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt.{i}")
        i += 1
    os.replace(path, target)
    return target


# --------------------------------------------------------------------------- CSVs
def _run_csvs(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.glob("*.csv") if p.is_file())


def csv_row_counts(run_dir: str | os.PathLike) -> dict[str, int]:
    """``{file name: data rows}`` of the CSVs in ``run_dir`` (complete lines after the
    header): recorded in every run checkpoint's header by ``save_run_checkpoint``."""
    counts = {}
    for p in _run_csvs(Path(run_dir)):
        data = p.read_bytes()
        counts[p.name] = max(data.count(b"\n") - 1, 0)
    return counts


def truncate_csvs(run_dir: str | os.PathLike, rows: dict[str, int] | None,
                  step: float) -> dict[str, int]:
    """Cut the run's CSVs back to a checkpoint: a file named in ``rows`` keeps its header and
    first ``rows[name]`` rows; any other CSV (created after the checkpoint, or a checkpoint
    without row counts) keeps the rows whose first column (the step) is ``<= step``.
    A line cut off by a crash is dropped. Returns ``{file name: rows dropped}``."""
    dropped = {}
    for p in _run_csvs(Path(run_dir)):
        text = p.read_text()
        complete = text[: text.rfind("\n") + 1] if "\n" in text else ""
        lines = complete.splitlines(keepends=True)
        if not lines:
            continue
        header, body = lines[0], lines[1:]
        if rows is not None and p.name in rows:
            kept = body[: rows[p.name]]
        else:
            kept = []
            for line in body:
                first = next(csv.reader(io.StringIO(line)), [""])[0]
                try:
                    if float(first) <= step:
                        kept.append(line)
                except ValueError:
                    kept.append(line)
        if len(kept) != len(body) or complete != text:
            new = header + "".join(kept)
            atomic_write(p, lambda f, new=new: f.write(new), binary=False)
        if len(kept) != len(body):
            dropped[p.name] = len(body) - len(kept)
    return dropped


def _previous_run_files(run_dir: Path) -> list[Path]:
    """What a killed run leaves before its first checkpoint: CSVs and TensorBoard logs."""
    found = [p for p in _run_csvs(run_dir) if p.stat().st_size > 0]
    if (run_dir / "tb").is_dir():
        found.append(run_dir / "tb")
    return found


# --------------------------------------------------------------------------- start
@dataclass
class RunStart:
    """What :func:`prepare_run_dir` decided: the checkpoint to resume from (``None``: a new
    run) and its step, and the messages it printed."""

    checkpoint: Path | None = None
    step: int | None = None
    messages: list[str] = field(default_factory=list)


def prepare_run_dir(run_dir: str | os.PathLike, resume: bool) -> RunStart:
    """Apply the start rules of the module docstring to ``run_dir`` (hold its lock first).

    Raises ``ConfigError`` (a checkpoint but ``resume=false``) or :class:`RunDirError` (files
    of an unfinished run but ``resume=false``; no intact checkpoint) before changing anything.
    """
    run_dir = Path(run_dir)
    start = RunStart()

    def say(msg: str) -> None:
        start.messages.append(msg)
        print(msg, flush=True)

    ckpts = list_checkpoints(run_dir)
    if ckpts and not resume:
        raise ConfigError(
            f"resume=false but run directory {run_dir} already holds a checkpoint "
            f"({ckpts[-1][1].name}); pass resume=true to continue it, or choose another "
            "experiment=, seed= or root_dir=")
    if ckpts:
        bad: list[tuple[Path, str]] = []
        for step, path in reversed(ckpts):
            try:
                header = verify_checkpoint(path)
            except (CheckpointError, OSError) as exc:
                bad.append((path, str(exc)))
                continue
            for p, why in bad:
                aside = _set_aside(p)
                msg = (f"warning: {why}; kept aside as {aside.name}, resuming from the older "
                       f"{path.name}")
                warnings.warn(msg, stacklevel=2)
                start.messages.append(msg)
            meta = header.get("meta", {})
            dropped = truncate_csvs(run_dir, meta.get("csv_rows"), meta.get("step", step))
            start.checkpoint, start.step = path, int(meta.get("step", step))
            if dropped:
                say(f"resume: dropped the rows logged after {path.name}: "
                    + ", ".join(f"{n} in {name}" for name, n in dropped.items()))
            return start
        names = "; ".join(why for _, why in bad)
        raise RunDirError(
            f"no intact checkpoint in {run_dir / 'checkpoints'} ({names}); to start this run "
            f"afresh delete {run_dir}, or choose another experiment=, seed= or root_dir=")
    leftovers = _previous_run_files(run_dir)
    if leftovers:
        names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in leftovers)
        if not resume:
            raise RunDirError(
                f"run directory {run_dir} holds files of a run stopped before its first "
                f"checkpoint ({names}); pass resume=true to delete them and start it again, "
                "or choose another experiment=, seed= or root_dir=")
        for p in leftovers:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
        say(f"resume=true: no checkpoint in {run_dir}; deleted the files of the attempt "
            f"stopped before its first checkpoint ({names}) and started the run afresh")
    elif resume:
        say(f"resume=true: no checkpoint in {run_dir}, starting a new run")
    return start

