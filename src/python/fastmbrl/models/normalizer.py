"""Input normalizer for dynamics models (mbrl-lib ``util/math.py::Normalizer``).

Statistics are fit in one pass on the data given (no running average), as mbrl-lib refits them
on the whole replay buffer before every model-training call::

    mean = data.mean(0)                 [size]
    std  = data.std(0)                  [size]  (unbiased, as torch.std)
    std[std < eps] = 1                  eps = 1e-12 (float64) or 1e-5 (float32)
    normalize(x)   = (x - mean) / std   computed in the normalizer's dtype, returned in x's dtype

MBPO keeps the statistics in float64 (``normalize_double_precision: true``); VaGraM in float32.
"""

from __future__ import annotations

import torch
from torch import nn


class Normalizer(nn.Module):
    """Mean/std input normalizer whose statistics live in buffers (so in the ``state_dict``).

    Args:
        size: the input dimension.
        dtype: dtype of the statistics (``torch.float64`` as mbrl-lib's MBPO, or float32).
        device: where the statistics live.

    Buffers:
        mean [size] (0 until fit), std [size] (1 until fit).

    ``.to(device)`` moves the statistics but keeps their dtype, also under ``.float()``
    (a double → float → double round trip does lose precision; prefer ``.to(device)``).
    """

    def __init__(self, size: int, dtype: torch.dtype = torch.float64, device=None):
        super().__init__()
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"Normalizer: dtype must be float32 or float64, got {dtype}")
        self.size = size
        self.dtype = dtype
        self.eps = 1e-12 if dtype == torch.float64 else 1e-5
        self.register_buffer("mean", torch.zeros(size, dtype=dtype, device=device))
        self.register_buffer("std", torch.ones(size, dtype=dtype, device=device))

    @torch.no_grad()
    def fit(self, data: torch.Tensor) -> None:
        """Set mean and std from ``data [M, size]`` (M ≥ 2; a column with std < eps gets std 1)."""
        if data.dim() != 2 or data.shape[1] != self.size:
            raise ValueError(
                f"Normalizer.fit: `data` must be [M, {self.size}], got {tuple(data.shape)}"
            )
        if data.shape[0] < 2:
            raise ValueError("Normalizer.fit: need at least 2 rows to estimate a std")
        data = data.to(device=self.mean.device, dtype=self.dtype)
        std = data.std(0)
        std[std < self.eps] = 1.0
        self.mean.copy_(data.mean(0))
        self.std.copy_(std)

    update_stats = fit  # mbrl-lib's name

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` for ``x [..., size]``, computed in the normalizer's dtype."""
        return ((x.to(self.dtype) - self.mean) / self.std).to(x.dtype)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """``x * std + mean`` for ``x [..., size]``, computed in the normalizer's dtype."""
        return (x.to(self.dtype) * self.std + self.mean).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x)

    def _apply(self, fn, *args, **kwargs):
        # Module.float()/.double()/.to(dtype) would cast the statistics; keep the chosen dtype.
        super()._apply(fn, *args, **kwargs)
        self.mean = self.mean.to(self.dtype)
        self.std = self.std.to(self.dtype)
        return self

    def extra_repr(self) -> str:
        return f"size={self.size}, dtype={self.dtype}, eps={self.eps}"
