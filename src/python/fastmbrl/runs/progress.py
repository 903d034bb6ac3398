"""A progress bar over environment steps: steps/s and the latest episode return.

    with StepProgress(total=cfg.num_steps, initial=start_step) as bar:
        for step in range(start_step, cfg.num_steps):
            ...
            bar.update()
            if done:
                bar.set_return(episode_return)

Disabled automatically when the stream it writes to (stderr, tqdm's default) is not a terminal,
so log files of batch jobs get no bar; ``disable=True`` / ``False`` forces it off / on.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from tqdm import tqdm

from .logger import run_log

__all__ = ["StepProgress"]


class StepProgress:
    """tqdm over env steps showing ``step/s`` and ``return=<latest>`` in its postfix.

    Args:
        total: the last env step (the bar's length).
        initial: the step to start from (a resumed run starts at its checkpoint's step).
        desc: the bar's label.
        disable: ``None`` (default) disables the bar when ``file`` is not a TTY.
        file: the stream to write to (default ``sys.stderr``).
    """

    def __init__(
        self,
        total: int | None,
        initial: int = 0,
        desc: str = "env steps",
        disable: bool | None = None,
        file: IO[str] | None = None,
        **tqdm_kwargs: Any,
    ):
        file = sys.stderr if file is None else file
        if disable is None:
            isatty = getattr(file, "isatty", None)
            disable = not (isatty is not None and isatty())
        self.disabled = disable
        self._postfix: dict[str, Any] = {}
        self._n = int(initial)  # counted here too: a disabled tqdm counts nothing
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit="step",
            unit_scale=True,
            dynamic_ncols=True,
            smoothing=0.05,
            file=file,
            disable=disable,
            **tqdm_kwargs,
        )

    @property
    def n(self) -> int:
        """The current step (``initial`` plus every ``update``)."""
        return self._n

    def update(self, n: int = 1) -> None:
        self._n += n
        self._bar.update(n)

    def set_return(self, value: float) -> None:
        """Show the latest episode return (a float; convert tensors before, once per episode)."""
        self.set_postfix(**{"return": f"{float(value):.4g}"})

    def set_postfix(self, **values: Any) -> None:
        self._postfix.update(values)
        self._bar.set_postfix(self._postfix, refresh=False)

    def write(self, message: str) -> None:
        """Print a line without breaking the bar (and add it to the run's ``train.log``)."""
        if self.disabled:
            print(message, flush=True)
        else:
            self._bar.write(message)
        run_log.info(message)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
