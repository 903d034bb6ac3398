"""Checkpoints: atomic, checksummed files, the run's checkpoint directory, RNG states.

File format (version 1)::

    b"FASTMBRL-CKPT\\n"                                     magic line
    {"version": 1, "payload_bytes": N, "sha256": "...", "meta": {...}}\\n   one JSON line
    N bytes                                                torch.save(state)

``save_checkpoint`` serialises ``state`` in memory, writes header and payload to a temporary file
in the target directory, fsyncs it and renames it over the target with ``os.replace``: a crash
leaves either the old file or the new one, never a mix. ``load_checkpoint`` checks the magic,
the header, the payload length and its SHA-256 before unpickling, and raises ``CheckpointError``
naming the file for anything truncated, corrupt or of an unknown format; it never returns a
partial state.

In a run directory checkpoints live in ``checkpoints/ckpt_<step, 12 digits>.pt``
(``checkpoint_path``); ``latest_checkpoint`` picks the highest step, ``save_run_checkpoint``
writes one and optionally keeps only the last K.

``rng_state`` / ``set_rng_state`` capture and restore Python's ``random``, numpy's global RNG,
torch's CPU RNG, every CUDA device's RNG (once CUDA is initialised) and any given
``torch.Generator`` or ``numpy.random.Generator`` (e.g. a gymnasium env's ``np_random``), as
plain Python values and CPU tensors, so they load with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write

__all__ = [
    "CheckpointError",
    "checkpoint_info",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "prune_checkpoints",
    "rng_state",
    "save_checkpoint",
    "save_run_checkpoint",
    "set_rng_state",
]

MAGIC = b"FASTMBRL-CKPT\n"
FORMAT_VERSION = 1
_MAX_HEADER = 1 << 16
CHECKPOINT_DIR = "checkpoints"
_NAME_RE = re.compile(r"^ckpt_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or not a fastmbrl checkpoint."""


# --------------------------------------------------------------------------- files
def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | os.PathLike, state: dict[str, Any], meta: dict[str, Any] | None = None
) -> Path:
    """Write ``state`` (anything ``torch.save`` takes) to ``path`` atomically, with a SHA-256.

    ``meta`` (JSON-serialisable, e.g. ``{"step": 12000}``) goes into the header, readable
    without loading the payload (``checkpoint_info``). Parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getbuffer()
    header = {
        "version": FORMAT_VERSION,
        "payload_bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "torch": torch.__version__,
        "meta": dict(meta or {}),
    }
    header_line = json.dumps(header, sort_keys=True).encode() + b"\n"
    def write(f) -> None:
        f.write(MAGIC)
        f.write(header_line)
        f.write(payload)

    atomic_write(path, write)
    _fsync_dir(path.parent)
    return path


def _read_header(f, path: Path) -> dict[str, Any]:
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        if len(magic) < len(MAGIC) and MAGIC.startswith(magic):
            raise CheckpointError(f"checkpoint {path} is truncated (the file ends in its header)")
        raise CheckpointError(
            f"{path} is not a fastmbrl checkpoint (no {MAGIC[:-1].decode()} magic at its start)"
        )
    line = f.readline(_MAX_HEADER)
    if not line.endswith(b"\n"):
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt (incomplete header)")
    try:
        header = json.loads(line)
        version = int(header["version"])
        int(header["payload_bytes"])
        str(header["sha256"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} has a corrupt header: {e}") from e
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}; this fastmbrl reads up to "
            f"{FORMAT_VERSION} (upgrade fastmbrl)"
        )
    return header


def checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """The header of a checkpoint (``version``, ``payload_bytes``, ``sha256``, ``meta``, ...),
    read without loading or verifying the payload."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _read_header(f, path)
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint {path} does not exist") from e


def load_checkpoint(
    path: str | os.PathLike,
    map_location: Any = "cpu",
    weights_only: bool = True,
) -> dict[str, Any]:
    """Verify and load a checkpoint written by ``save_checkpoint``.

    Raises ``CheckpointError`` (naming ``path``) when the file is missing, truncated, fails its
    SHA-256 check, is not a fastmbrl checkpoint, or cannot be unpickled. ``weights_only=True``
    (the default) loads tensors and plain Python containers only; pass ``False`` for trusted
    files holding other objects.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            header = _read_header(f, path)
            payload = f.read()
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint {path} does not exist") from e
    expected = int(header["payload_bytes"])
    if len(payload) != expected:
        what = "truncated" if len(payload) < expected else "corrupt (trailing bytes)"
        raise CheckpointError(
            f"checkpoint {path} is {what}: {len(payload)} payload bytes, the header says "
            f"{expected}"
        )
    digest = hashlib.sha256(payload).hexdigest()
    if digest != header["sha256"]:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: SHA-256 of its payload is {digest}, the header "
            f"says {header['sha256']}"
        )
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=weights_only)
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {path} passed its checksum but could not be loaded: "
            f"{type(e).__name__}: {e}"
        ) from e


# --------------------------------------------------------------------------- run directory
def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    """``<run_dir>/checkpoints/ckpt_<step:012d>.pt``."""
    if step < 0:
        raise ValueError(f"checkpoint_path: step must be >= 0, got {step}")
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt_{int(step):012d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``[(step, path), ...]`` of the run's checkpoints, by increasing step."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _NAME_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The run's checkpoint with the highest step, or ``None`` when it has none."""
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` highest-step checkpoints and any temporary files left
    by an interrupted save in the checkpoint directory; returns the deleted paths."""
    if keep_last < 1:
        raise ValueError(f"prune_checkpoints: keep_last must be >= 1, got {keep_last}")
    removed = [p for _, p in list_checkpoints(run_dir)[:-keep_last]]
    directory = Path(run_dir) / CHECKPOINT_DIR
    if directory.is_dir():
        removed += [p for p in directory.glob(".tmp-ckpt_*") if p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def save_run_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    state: dict[str, Any],
    keep_last: int | None = None,
) -> Path:
    """Save ``state`` as the run's checkpoint at ``step``, then keep only the last
    ``keep_last`` checkpoints when it is given. Returns the path written.

    The header's ``meta`` holds ``step`` and ``csv_rows``, the number of rows of each CSV in
    ``run_dir`` now (flush the logger first): a resume cuts the CSVs back to them
    (``runs.rundir.prepare_run_dir``). ``step`` should be the step column of the run's CSVs.
    """
    from .rundir import csv_row_counts

    meta = {"step": int(step), "csv_rows": csv_row_counts(run_dir)}
    path = save_checkpoint(checkpoint_path(run_dir, step), state, meta=meta)
    if keep_last is not None:
        prune_checkpoints(run_dir, keep_last)
    return path


# --------------------------------------------------------------------------- RNG states
def rng_state(
    generators: Sequence[torch.Generator] = (),
    numpy_generators: Sequence[np.random.Generator] = (),
) -> dict[str, Any]:
    """Snapshot every random number generator a run draws from.

    Returns ``{"python", "numpy", "torch", "cuda", "generators", "numpy_generators"}``: Python
    values and CPU uint8 tensors only (``cuda``, one state per device, is ``None`` while the
    process has not initialised CUDA).
    """
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        # only once CUDA is initialised: before that no CUDA RNG has drawn anything, and
        # reading the states would initialise CUDA in a process that may never use it
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "generators": [g.get_state() for g in generators],
        "numpy_generators": [g.bit_generator.state for g in numpy_generators],
    }


def set_rng_state(
    state: dict[str, Any],
    generators: Sequence[torch.Generator] = (),
    numpy_generators: Sequence[np.random.Generator] = (),
) -> None:
    """Restore a snapshot from ``rng_state``; ``generators`` / ``numpy_generators`` must be
    the same number, in the same order, as when it was taken.

    CUDA states saved on a machine with a different number of devices are not restored (a
    warning says so); without a saved CUDA state the CUDA RNGs are left alone.
    """
    if len(generators) != len(state["generators"]):
        raise ValueError(
            f"set_rng_state: the state holds {len(state['generators'])} torch generators, "
            f"{len(generators)} given"
        )
    if len(numpy_generators) != len(state["numpy_generators"]):
        raise ValueError(
            f"set_rng_state: the state holds {len(state['numpy_generators'])} numpy "
            f"generators, {len(numpy_generators)} given"
        )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
         n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:
            have = torch.cuda.device_count() if torch.cuda.is_available() else 0
            warnings.warn(
                f"set_rng_state: the state holds {len(cuda)} CUDA RNG states, this machine "
                f"has {have} CUDA devices; CUDA RNGs not restored",
                stacklevel=2,
            )
    for g, s in zip(generators, state["generators"], strict=True):
        g.set_state(s.cpu())
    for g, s in zip(numpy_generators, state["numpy_generators"], strict=True):
        g.bit_generator.state = s
