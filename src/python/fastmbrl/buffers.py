"""Replay buffer: preallocated tensors on one device, FIFO once full.

One buffer holds transitions ``(obs, act, next_obs, reward, terminated, truncated)``::

    obs, next_obs  [C, *obs_shape]   dtype
    act            [C, *act_shape]   act_dtype (default: dtype; e.g. torch.long for cartpole)
    reward         [C]               dtype
    terminated     [C]               bool   (the MDP ended: no bootstrap)
    truncated      [C]               bool   (time limit: bootstrap)

``add`` stores one transition (numpy arrays, Python scalars or tensors) from an environment
step; ``add_batch`` stores ``N`` rows given as tensors (model rollouts) with at most two slice
copies and no per-row Python work. Once ``capacity`` rows are stored, new rows overwrite the
oldest ones. ``get_all`` returns views of the filled rows (what the model trainer takes),
``sample`` uniform minibatches of them, ``iterate`` shuffled minibatches of one pass.

Extras: named per-transition fields beyond the six (``extras={"log_mu": ((), torch.float32)}``,
stored as ``buffer.extras[name]`` ``[C, *shape]``), given by name to ``add``/``add_batch`` and
kept by ``resized``, ``state_dict`` and ``save`` (value expansion stores the behaviour
log-probability, the pre-tanh action and the simulator state). ``sample(...,
return_indices=True)`` and ``gather(idx)`` give the storage rows to read extras with;
``sample_windows`` draws runs of consecutive transitions of one episode (Retrace).

``save``/``load`` write the filled rows with ``torch.save`` through a temporary file and
``os.replace`` (a crash mid-write leaves the previous file intact), together with a SHA-256 of
the stored data; ``load`` reports a truncated, corrupt or mismatched file with a clear error.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch

from ._io import atomic_write

_FORMAT = "fastmbrl.ReplayBuffer"
_VERSION = 1
_FIELDS = ("obs", "act", "next_obs", "reward", "terminated", "truncated")


class TransitionBatch(NamedTuple):
    """Rows of transitions: ``obs [N, *O]``, ``act [N, *A]``, ``next_obs [N, *O]``,
    ``reward [N]``, ``terminated [N]`` bool, ``truncated [N]`` bool.

    A plain NamedTuple: ``len(batch)`` is 6 (the fields); the row count is ``batch.obs.shape[0]``.
    """

    obs: torch.Tensor
    act: torch.Tensor
    next_obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor

    def to(self, *args, **kwargs) -> TransitionBatch:
        return TransitionBatch(*(t.to(*args, **kwargs) for t in self))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


def _checksum(tensors: dict[str, torch.Tensor], names=_FIELDS) -> str:
    h = hashlib.sha256()
    for name in names:
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class ReplayBuffer:
    """FIFO replay buffer of preallocated tensors.

    Args:
        capacity: C, the number of transitions kept.
        obs_shape: shape of one observation (e.g. ``(11,)``).
        act_shape: shape of one action (``()`` for a discrete action index).
        device: where the storage lives (rows given to ``add_batch`` are moved there).
        dtype: float dtype of observations and rewards.
        act_dtype: dtype of actions (default ``dtype``).
        extras: ``{name: (row_shape, dtype)}`` of further per-transition fields.
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...] | int,
        act_shape: tuple[int, ...] | int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        act_dtype: torch.dtype | None = None,
        extras: dict[str, tuple[tuple[int, ...], torch.dtype]] | None = None,
    ):
        capacity = int(capacity)
        if capacity < 1:
            raise ValueError(f"ReplayBuffer: capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.obs_shape = (int(obs_shape),) if isinstance(obs_shape, int) else tuple(obs_shape)
        self.act_shape = (int(act_shape),) if isinstance(act_shape, int) else tuple(act_shape)
        self.device = torch.device(device)
        self.dtype = dtype
        self.act_dtype = dtype if act_dtype is None else act_dtype
        kw = dict(device=self.device)
        self.obs = torch.zeros((capacity, *self.obs_shape), dtype=dtype, **kw)
        self.next_obs = torch.zeros((capacity, *self.obs_shape), dtype=dtype, **kw)
        self.act = torch.zeros((capacity, *self.act_shape), dtype=self.act_dtype, **kw)
        self.reward = torch.zeros(capacity, dtype=dtype, **kw)
        self.terminated = torch.zeros(capacity, dtype=torch.bool, **kw)
        self.truncated = torch.zeros(capacity, dtype=torch.bool, **kw)
        self.extra_specs = {str(k): (tuple(int(d) for d in shape), dt)
                            for k, (shape, dt) in (extras or {}).items()}
        for name in self.extra_specs:
            if name in _FIELDS:
                raise ValueError(f"ReplayBuffer: extra {name!r} clashes with a transition field")
        self.extras = {k: torch.zeros((capacity, *shape), dtype=dt, **kw)
                       for k, (shape, dt) in self.extra_specs.items()}
        self._ptr = 0  # next row to write
        self._size = 0  # filled rows
        self.num_added = 0  # transitions ever added (including overwritten ones)

    # ------------------------------------------------------------------ adding
    def __len__(self) -> int:
        return self._size

    @property
    def is_full(self) -> bool:
        return self._size == self.capacity

    def _storage(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f) for f in _FIELDS)

    def _all_storage(self) -> tuple[torch.Tensor, ...]:
        return self._storage() + tuple(self.extras.values())

    def _convert(self, name: str, value: Any, row_shape: tuple[int, ...], n: int | None,
                 dtype: torch.dtype | None = None):
        if dtype is None:
            dtype = {"act": self.act_dtype, "terminated": torch.bool,
                     "truncated": torch.bool}.get(name, self.dtype)
        t = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
        expected = row_shape if n is None else (n, *row_shape)
        if name in ("reward", "terminated", "truncated") and n is not None:
            if t.dim() == 2 and t.shape[1] == 1:
                t = t.reshape(-1)
        if tuple(t.shape) != expected:
            if t.numel() == int(np.prod(expected)) and n is None:
                t = t.reshape(expected)
            else:
                raise ValueError(
                    f"ReplayBuffer.{'add' if n is None else 'add_batch'}: {name} has shape "
                    f"{tuple(t.shape)}, expected {expected}"
                )
        return t.to(device=self.device, dtype=dtype)

    def _convert_extras(self, extras: dict[str, Any], n: int | None) -> list[torch.Tensor]:
        where = "add" if n is None else "add_batch"
        unknown = sorted(set(extras) - set(self.extra_specs))
        missing = sorted(set(self.extra_specs) - set(extras))
        if unknown or missing:
            raise ValueError(
                f"ReplayBuffer.{where}: "
                + (f"unknown extra {', '.join(map(repr, unknown))}" if unknown else "")
                + ("; " if unknown and missing else "")
                + (f"missing extra {', '.join(map(repr, missing))}" if missing else "")
                + f" (this buffer's extras: {', '.join(self.extra_specs) or 'none'})")
        return [self._convert(k, extras[k], shape, n, dt)
                for k, (shape, dt) in self.extra_specs.items()]

    def add(self, obs, act, next_obs, reward, terminated, truncated, **extras) -> None:
        """Store one transition (arrays, scalars or tensors of one row's shape); ``extras`` by
        name, one for each of the buffer's extras."""
        row = (
            self._convert("obs", obs, self.obs_shape, None),
            self._convert("act", act, self.act_shape, None),
            self._convert("next_obs", next_obs, self.obs_shape, None),
            self._convert("reward", reward, (), None),
            self._convert("terminated", terminated, (), None),
            self._convert("truncated", truncated, (), None),
            *self._convert_extras(extras, None),
        )
        for store, value in zip(self._all_storage(), row, strict=True):
            store[self._ptr] = value
        self._ptr = (self._ptr + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)
        self.num_added += 1

    def add_batch(self, obs, act, next_obs, reward, terminated, truncated, **extras) -> None:
        """Store ``N`` rows: ``obs [N, *O]``, ``act [N, *A]``, ``next_obs [N, *O]``,
        ``reward [N]`` (or ``[N, 1]``), ``terminated [N]``, ``truncated [N]``, and each extra
        ``[N, *shape]`` by name.

        Rows keep their order; if ``N > capacity`` only the last ``capacity`` rows remain.
        """
        n = int(obs.shape[0])
        rows = (
            self._convert("obs", obs, self.obs_shape, n),
            self._convert("act", act, self.act_shape, n),
            self._convert("next_obs", next_obs, self.obs_shape, n),
            self._convert("reward", reward, (), n),
            self._convert("terminated", terminated, (), n),
            self._convert("truncated", truncated, (), n),
            *self._convert_extras(extras, n),
        )
        if n == 0:
            return
        C = self.capacity
        # Row i of the batch goes to (ptr + i) % C; of more than C rows only the last C survive.
        skip = max(0, n - C)
        start = (self._ptr + skip) % C
        m = n - skip
        first = min(m, C - start)
        for store, value in zip(self._all_storage(), rows, strict=True):
            value = value[skip:]
            store[start : start + first] = value[:first]
            if first < m:
                store[: m - first] = value[first:]
        self._ptr = (self._ptr + n) % C
        self._size = min(self._size + n, C)
        self.num_added += n

    def clear(self) -> None:
        """Forget every row (the storage is kept)."""
        self._ptr = self._size = self.num_added = 0

    # ---------------------------------------------------------------- reading
    def get_all(self, chronological: bool = False) -> TransitionBatch:
        """The filled rows ``[len(self), ...]``: views of the storage (no copy) unless
        ``chronological`` (oldest first, a copy when the buffer has wrapped around)."""
        n = self._size
        batch = TransitionBatch(*(t[:n] for t in self._storage()))
        if chronological and n == self.capacity and self._ptr != 0:
            batch = TransitionBatch(*(torch.roll(t, -self._ptr, 0) for t in batch))
        return batch

    def _indices(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        if self._size == 0:
            raise ValueError("ReplayBuffer: cannot sample from an empty buffer")
        device = generator.device if generator is not None else self.device
        idx = torch.randint(0, self._size, (n,), generator=generator, device=device)
        return idx.to(self.device)

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               return_indices: bool = False):
        """``batch_size`` rows drawn uniformly with replacement from the filled rows; with
        ``return_indices`` also their storage rows ``[batch_size]`` (for ``extras``)."""
        idx = self._indices(int(batch_size), generator)
        batch = self.gather(idx)
        return (batch, idx) if return_indices else batch

    def gather(self, idx: torch.Tensor) -> TransitionBatch:
        """The transitions at storage rows ``idx`` (any shape ``S``): fields ``[*S, ...]``."""
        return TransitionBatch(*(t[idx] for t in self._storage()))

    def sample_windows(self, batch_size: int, length: int,
                       generator: torch.Generator | None = None, stride: int = 1):
        """Windows of ``length`` consecutive transitions for multi-step targets (Retrace).

        A window starts at a filled row drawn uniformly (every transition can start one) and
        continues with the transitions that followed it: ``stride`` rows apart in insertion
        order (``stride = num_envs`` when a vector env adds its rows interleaved). A window is
        cut, never continued, where its episode ended (the row that terminated or was
        truncated is the last valid one) and at the newest row (the FIFO seam is never
        crossed: positions are counted from the oldest row).

        Returns:
            ``idx [B, length]`` storage rows and ``valid [B, length]`` bool; ``valid[:, 0]``
            is all True, and invalid positions repeat the window's first row.
        """
        if length < 1 or stride < 1:
            raise ValueError(f"ReplayBuffer.sample_windows: length ({length}) and stride "
                             f"({stride}) must be >= 1")
        n, C = self._size, self.capacity
        if n == 0:
            raise ValueError("ReplayBuffer.sample_windows: cannot sample from an empty buffer")
        device = generator.device if generator is not None else self.device
        start = torch.randint(0, n, (int(batch_size),), generator=generator, device=device)
        start = start.to(self.device)
        pos = start.unsqueeze(1) + stride * torch.arange(length, device=self.device)
        inside = pos < n                                   # not past the newest row
        oldest = self._ptr if n == C else 0
        idx = (oldest + pos.clamp(max=n - 1)) % C
        ended = (self.terminated[idx] | self.truncated[idx]).to(torch.int64)
        ends_before = ended.cumsum(1) - ended              # episode ends strictly before j
        valid = inside & (ends_before == 0)
        idx = torch.where(valid, idx, idx[:, :1])
        return idx, valid

    def iterate(
        self,
        batch_size: int,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[TransitionBatch]:
        """One pass over the filled rows in minibatches of ``batch_size`` (shuffled by default)."""
        n = self._size
        if shuffle:
            device = generator.device if generator is not None else self.device
            order = torch.randperm(n, generator=generator, device=device).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        data = self.get_all()
        stop = n - n % batch_size if drop_last else n
        for i in range(0, stop, batch_size):
            idx = order[i : i + batch_size]
            yield TransitionBatch(*(t[idx] for t in data))

    def resized(self, capacity: int) -> ReplayBuffer:
        """A new buffer of ``capacity`` holding the newest ``min(len, capacity)`` rows, in order
        (MBPO's model buffer grows with the rollout length)."""
        new = ReplayBuffer(
            capacity, self.obs_shape, self.act_shape, self.device, self.dtype, self.act_dtype,
            extras=self.extra_specs,
        )
        new.add_batch(*self.get_all(chronological=True), **self._extras_chronological())
        new.num_added = self.num_added
        return new

    def _extras_chronological(self) -> dict[str, torch.Tensor]:
        n = self._size
        wrapped = n == self.capacity and self._ptr != 0
        return {k: torch.roll(v[:n], -self._ptr, 0) if wrapped else v[:n]
                for k, v in self.extras.items()}

    # ------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Filled rows (on the CPU, oldest first) and metadata; see ``load_state_dict``."""
        data = {k: v.detach().cpu().clone() for k, v in self.get_all(True)._asdict().items()}
        extras = {k: v.detach().cpu().clone() for k, v in self._extras_chronological().items()}
        state = {
            "format": _FORMAT,
            "version": _VERSION,
            "capacity": self.capacity,
            "obs_shape": list(self.obs_shape),
            "act_shape": list(self.act_shape),
            "dtype": _dtype_name(self.dtype),
            "act_dtype": _dtype_name(self.act_dtype),
            "num_added": self.num_added,
            "data": data,
            "sha256": _checksum(data),
        }
        if self.extra_specs:  # absent when there are none: files of version 1 read unchanged
            state["extras"] = extras
            state["extra_specs"] = {k: [list(shape), _dtype_name(dt)]
                                    for k, (shape, dt) in self.extra_specs.items()}
            state["extras_sha256"] = _checksum(extras, sorted(extras))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the rows of ``state_dict()``; shapes and dtypes must match this buffer's.

        The capacity may differ: the newest ``min(len, capacity)`` rows are kept.
        """
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError("ReplayBuffer.load_state_dict: not a ReplayBuffer state dict")
        if state.get("version") != _VERSION:
            raise ValueError(
                f"ReplayBuffer.load_state_dict: format version {state.get('version')}, "
                f"this code reads version {_VERSION}"
            )
        for key, mine in (
            ("obs_shape", list(self.obs_shape)),
            ("act_shape", list(self.act_shape)),
            ("dtype", _dtype_name(self.dtype)),
            ("act_dtype", _dtype_name(self.act_dtype)),
        ):
            theirs = list(state[key]) if key.endswith("shape") else state[key]
            if theirs != mine:
                raise ValueError(
                    f"ReplayBuffer.load_state_dict: stored {key} is {theirs}, this buffer's "
                    f"is {mine}"
                )
        mine = {k: [list(shape), _dtype_name(dt)] for k, (shape, dt) in self.extra_specs.items()}
        theirs = {k: [list(v[0]), v[1]] for k, v in state.get("extra_specs", {}).items()}
        if theirs != mine:
            raise ValueError(f"ReplayBuffer.load_state_dict: stored extras are {theirs or 'none'},"
                             f" this buffer's are {mine or 'none'}")
        data = state["data"]
        extras = state.get("extras", {})
        if _checksum(data) != state["sha256"] or (
                extras and _checksum(extras, sorted(extras)) != state["extras_sha256"]):
            raise ValueError(
                "ReplayBuffer.load_state_dict: checksum mismatch, the stored data is corrupt"
            )
        self.clear()
        self.add_batch(*(data[f] for f in _FIELDS), **extras)
        self.num_added = int(state["num_added"])

    def save(self, path: str | os.PathLike) -> None:
        """Write ``state_dict()`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
        state = self.state_dict()
        atomic_write(path, lambda f: torch.save(state, f))

    def load(self, path: str | os.PathLike) -> None:
        """Restore this buffer from a file written by ``save``; corrupt files raise ValueError."""
        path = os.fspath(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as e:  # truncated zip, bad pickle, ...
            raise ValueError(
                f"ReplayBuffer.load: {path} is not a readable buffer file (truncated or "
                f"corrupt): {type(e).__name__}: {e}"
            ) from e
        try:
            self.load_state_dict(state)
        except ValueError as e:
            raise ValueError(f"ReplayBuffer.load: {path}: {e}") from e
        except (KeyError, TypeError) as e:
            raise ValueError(
                f"ReplayBuffer.load: {path} is not a valid buffer file: {type(e).__name__}: {e}"
            ) from e

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        device: torch.device | str = "cpu",
        capacity: int | None = None,
    ) -> ReplayBuffer:
        """A buffer built from a saved file's metadata and filled with its rows."""
        try:
            state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as e:
            raise ValueError(
                f"ReplayBuffer.from_file: {path} is not a readable buffer file (truncated or "
                f"corrupt): {type(e).__name__}: {e}"
            ) from e
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"ReplayBuffer.from_file: {path} is not a ReplayBuffer file")
        buf = cls(
            capacity or state["capacity"],
            tuple(state["obs_shape"]),
            tuple(state["act_shape"]),
            device,
            _dtype_from_name(state["dtype"]),
            _dtype_from_name(state["act_dtype"]),
            extras={k: (tuple(v[0]), _dtype_from_name(v[1]))
                    for k, v in state.get("extra_specs", {}).items()},
        )
        buf.load_state_dict(state)
        return buf

    def __repr__(self) -> str:
        return (
            f"ReplayBuffer(len={self._size}, capacity={self.capacity}, obs_shape={self.obs_shape},"
            f" act_shape={self.act_shape}, device={self.device}, dtype={self.dtype})"
        )
