"""Timing harness shared by every benchmark script (a script, never a test).

Each implementation of an op is timed side by side in one process: warm-up calls, then the
median of many repeats (CUDA events on a GPU, perf_counter with synchronisation on CPU).
Results are JSON records ``{op, shape, device, impl, median_us, ...}`` and a printed table of
every implementation's speed relative to ``reference-eager``.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

BASELINE = "reference-eager"


@dataclass
class Record:
    op: str
    shape: str
    device: str
    impl: str
    median_us: float
    repeats: int
    extra: dict = field(default_factory=dict)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_fn(
    fn: Callable[[], object],
    device: str,
    warmup: int = 10,
    repeats: int = 50,
    min_time_s: float = 0.0,
    max_time_s: float = 20.0,
) -> tuple[float, int]:
    """Median wall time of ``fn()`` in microseconds, and the number of timed repeats.

    Repeats continue past ``repeats`` until ``min_time_s`` has been spent, and stop early once
    ``max_time_s`` is exceeded (at least 5 repeats are always timed).
    """
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    start_all = time.perf_counter()
    cuda = device.startswith("cuda")
    while True:
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) * 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e6)
        spent = time.perf_counter() - start_all
        n = len(times)
        if n >= 5 and spent > max_time_s:
            break
        if n >= repeats and spent >= min_time_s:
            break
    return statistics.median(times), len(times)


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    device: str,
    warmup: int = 10,
    repeats: int = 50,
    max_time_s: float = 120.0,
) -> dict[str, tuple[float, int, float]]:
    """Like :func:`time_fn` for several implementations, timed round-robin (one call of each
    per round), so a noisy shared machine loads every implementation alike. Returns
    ``{impl: (median_us, repeats, min_us)}``; the minimum is the better estimate of the
    uncontended time on a loaded machine. An implementation that raises is left out and
    reported."""
    live: dict[str, Callable[[], object]] = {}
    for name, fn in fns.items():
        try:
            for _ in range(warmup):
                fn()
        except Exception as exc:  # a peer that cannot run here is reported, not fatal
            print(f"skip {name}: {type(exc).__name__}: {exc}")
            continue
        live[name] = fn
    times: dict[str, list[float]] = {name: [] for name in live}
    if not live:
        return {}
    start_all = time.perf_counter()
    for _ in range(repeats):
        for name, fn in live.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - t0) * 1e6)
        if time.perf_counter() - start_all > max_time_s and min(map(len, times.values())) >= 5:
            break
    return {name: (statistics.median(ts), len(ts), min(ts)) for name, ts in times.items()}


def environment() -> dict:
    """Where the numbers were measured: machine, versions, command line, date."""
    import fastmbrl
    from fastmbrl import _native

    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fastmbrl": fastmbrl.__version__,
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "native_build": _native._C.build_info() if _native.HAS_NATIVE else None,
    }
    try:
        info["cpu_model"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def format_table(records: list[Record]) -> str:
    """One row per (op, shape, device, impl): median and speed-up over reference-eager."""
    lines = [
        f"{'op':<26} {'shape':<34} {'device':<6} {'impl':<22} {'median_us':>12} {'vs eager':>9}",
        "-" * 114,
    ]
    groups: dict[tuple, list[Record]] = {}
    for r in records:
        groups.setdefault((r.op, r.shape, r.device), []).append(r)
    for (op, shape, device), rs in groups.items():
        base = next((r.median_us for r in rs if r.impl == BASELINE), None)
        for r in rs:
            ratio = f"{base / r.median_us:8.2f}x" if base else "       -"
            lines.append(
                f"{op:<26} {shape:<34} {device:<6} {r.impl:<22} {r.median_us:12.1f} {ratio:>9}"
            )
    return "\n".join(lines)


def save(records: list[Record], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"environment": environment(), "records": [asdict(r) for r in records]}
    path.write_text(json.dumps(payload, indent=1) + "\n")
