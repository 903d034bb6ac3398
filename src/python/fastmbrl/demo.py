"""``fastmbrl demo``: fit an ensemble of Gaussian MLPs to a noisy 1-D system with the fused NLL.

A minimal, self-contained use of the ops a user would call from their own training code:
``ensemble_mlp`` (forward with the softplus-bounded Gaussian head) and ``gaussian_nll``.
The data: ``y = sin(3x) + 0.5 x`` with noise whose scale grows with ``|x|``; each member sees its
own bootstrap sample. The loss falls and the ensemble learns both the mean and the noise level.
"""

from __future__ import annotations

import math
import time

import torch

from .ops import ensemble_mlp, gaussian_nll


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: torch sees no CUDA device (run `fastmbrl info`)")
    return torch.device(name)


def run_demo(steps: int = 600, device: str = "auto", seed: int = 0, backend: str | None = None,
             ensemble_size: int = 5, hidden: int = 64, batch: int = 256, log_every: int = 100):
    dev = _device(device)
    g = torch.Generator().manual_seed(seed)
    n = 4096
    x = torch.rand(n, 1, generator=g) * 4 - 2
    noise_std = 0.05 + 0.2 * x.abs()
    y = torch.sin(3 * x) + 0.5 * x + noise_std * torch.randn(n, 1, generator=g)
    x, y = x.to(dev), y.to(dev)

    sizes = [1, hidden, hidden, 2]  # Gaussian head: mean and logvar of one output
    weights, biases = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        w = torch.randn(ensemble_size, fan_in, fan_out, generator=g) / math.sqrt(fan_in)
        weights.append(w.to(dev).requires_grad_())
        biases.append(torch.zeros(ensemble_size, fan_out, device=dev, requires_grad=True))
    min_lv = torch.full((1,), -10.0, device=dev)
    max_lv = torch.full((1,), 0.5, device=dev)
    opt = torch.optim.Adam(weights + biases, lr=3e-3)
    boot = torch.randint(0, n, (ensemble_size, n), generator=g).to(dev)  # bootstrap per member

    print(f"fastmbrl demo: {ensemble_size}-member Gaussian ensemble, 2x{hidden} SiLU, "
          f"{n} samples, device {dev}, backend {backend or 'default'}")
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        idx = boot[:, torch.randint(0, n, (batch,), generator=g).to(dev)]  # [E, batch]
        xb, yb = x[idx], y[idx]  # [E, batch, 1]
        mean, logvar = ensemble_mlp(xb, weights, biases, "silu", min_lv, max_lv, backend=backend)
        loss = gaussian_nll(mean, logvar, yb, reduction="sum", backend=backend)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step == 1 or step % log_every == 0 or step == steps:
            print(f"  step {step:5d}   NLL (sum over members) {loss.item():9.4f}")
    with torch.no_grad():
        grid = torch.tensor([[-1.5], [0.0], [1.5]], device=dev)
        mean, logvar = ensemble_mlp(grid, weights, biases, "silu", min_lv, max_lv,
                                    backend=backend)
        truth = torch.sin(3 * grid) + 0.5 * grid
        std = (0.5 * logvar).exp().mean(0)
    print(f"done in {time.perf_counter() - t0:.1f}s")
    for i in range(3):
        print(f"  x={grid[i, 0].item():+.1f}: predicted {mean[:, i, 0].mean().item():+.3f} "
              f"(true {truth[i, 0].item():+.3f}), predicted noise std {std[i, 0].item():.3f} "
              f"(true {0.05 + 0.2 * abs(grid[i, 0].item()):.3f})")
    return loss.item()
