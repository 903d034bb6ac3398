"""One imagined-rollout step of an ensemble dynamics model, evaluating only each row's member.

Definition (mbrl-lib ``GaussianMLP`` + ``ModelEnv.step``, with D = O + 1 outputs: Δobs, then
reward)::

    x        = ([state, action] - input_mean) / input_std                     [N, O + A]
    member mode (members given: random_model / fixed_model propagation):
        y_i, lv_i = MLP_{members[i]}(x_i)                                     [D] each
    expectation (members None): average over the K elites of mean AND bounded logvar
        y_i  = mean_k MLP_{elites[k]}(x_i).mean,  lv_i = mean_k MLP_{elites[k]}(x_i).logvar
    out_i    = y_i + exp(lv_i / 2) * noise(seed, offset, i, :)    (Gaussian head and sample)
             = y_i                                                (deterministic or sample=False)
    next[i]  = where(delta_mask, state[i] + out_i[:O], out_i[:O])
    reward_i = out_i[O]
    done_i   = termination(next[i])       (TerminationRule, callable, or never)

The MLP is :func:`fastmbrl.ops.mlp.ensemble_mlp_reference` (weights ``[E, in, out]``,
biases ``[E, out]``, hidden activation, soft logvar bounds :func:`bound_logvar`). Only the
member of each row is evaluated: computing all E members and selecting (the MBPO lineage's
``FakeEnv``) costs E times the FLOPs (7x for E = 7).

Noise is a counter-based Philox4x32-10 stream (include/fastmbrl/philox.h, and
:func:`philox4x32_10` / :func:`philox_normal` below in pure PyTorch): element (i, d) is a pure
function of (seed, offset, i, d), so results do not depend on the backend's thread layout, and
the reference and the native kernels draw the *same* noise. With ``seed=None`` a seed is drawn
from ``generator`` (or torch's default CPU generator); reuse one seed and advance ``offset``
per step for a reproducible rollout.

Differences from mbrl-lib, on purpose:
- ``random_model`` draws an independent uniformly random elite per row (see
  :func:`member_indices`) instead of mbrl-lib's equal split of a permutation, so N need not be
  divisible by the number of elites.
- Noise comes from Philox, not ``torch.normal``; distributions are the same, draws are not.

Backends:
- reference: :func:`ensemble_rollout_step_reference` (loop over the members present).
- CPU native: rows grouped by member (stable argsort, sorted once), torch GEMMs per member
  segment, logvar bounds + exp as vectorized torch ops, then one fused C++ pass (std::threads)
  for Philox noise, delta add, reward and the TerminationRule, reading rows through the inverse
  permutation. Verdict by measurement (benchmarks/results/2026-11-21-cpu-rollout.*): see
  ``PREFER_NATIVE_CPU``.
- CUDA native (verified by emulation in CI, not yet run on a GPU): member grouping by torch
  ops on the device (argsort, scatter-add counts, cumsum; no host synchronization), one
  grouped-GEMM kernel per layer over member segments with fused bias + activation (the first
  layer gathers and normalizes [state, action] itself), then the fused epilogue kernel. No
  cuBLAS/cuRAND.

The native op is forward only (no autograd formula): rollouts run under ``torch.no_grad()``.
Called with inputs that require grad while grad mode is on, the step runs the reference (on
every backend), so gradients, and second derivatives, flow through it correctly.
``members`` and ``elites`` out of range raise on every device: on CPU at once, on CUDA through an
asynchronous device-side assert (no host synchronization; reported at the next synchronization,
at once with ``FASTMBRL_CUDA_SYNC=1``); not checked under torch.compile.
Under ``torch.compile`` pass ``seed`` explicitly (drawing one reads a generator on the host).
The torch Philox (:func:`philox_normal`) is excluded from compilation (``torch.compiler.disable``):
inductor did not finish compiling its 10 unrolled rounds in 4 minutes; the native op itself is
one opaque node and compiles fullgraph.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import _native
from ._library import LIB, impl_cuda
from ._validate import check_nonempty, check_same, check_shape, check_tensor
from .mlp import ACTIVATIONS, bound_logvar, ensemble_mlp_reference
from .termination import TerminationRule

OP = "ensemble_rollout_step"
MODES = ("random_model", "fixed_model", "expectation")

# Measured verdict for CPU tensors in "auto" mode (benchmarks/results/2026-11-21-cpu-rollout.txt,
# 2-core shared EPYC): native vs reference-eager 0.96x-1.74x at HalfCheetah/N=100k (GEMM-bound,
# same torch GEMMs) and 1.36x-2.32x at Humanoid/N=10k (the reference's torch Philox dominates).
PREFER_NATIVE_CPU = True

_MASK32 = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_TWO_POW_M32 = 2.3283064365386963e-10
_TWO_POW_M33 = 1.1641532182693481e-10
_ROW_CHUNK = 1 << 16  # rows per chunk of the torch Philox (bounds its int64 temporaries)


# ---------------------------------------------------------------------------------------------
# Philox4x32-10 in pure PyTorch (int64 tensors holding 32-bit values)
# ---------------------------------------------------------------------------------------------
def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of a * m for 32-bit a (int64 tensor) and constant m, no overflow."""
    t1 = a * (m & 0xFFFF)  # < 2^48
    t2 = a * (m >> 16)  # < 2^48
    s = (t1 >> 16) + t2  # < 2^49
    return s >> 16, ((s & 0xFFFF) << 16) | (t1 & 0xFFFF)


def philox4x32_10(ctr: tuple, key: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 of counters ``ctr = (c0, c1, c2, c3)`` (int64 tensors or ints holding
    32-bit values, broadcast together) and key ``(k0, k1)`` (ints). Returns 4 int64 tensors."""
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64) for c in ctr)
    k0, k1 = int(key[0]) & _MASK32, int(key[1]) & _MASK32
    for r in range(10):
        if r:
            k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


@torch.compiler.disable  # inductor did not finish compiling the 10 unrolled rounds in 4 min
def philox_normal(
    n: int,
    d: int,
    seed: int,
    offset: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    row_start: int = 0,
) -> torch.Tensor:
    """Standard normals ``[n, d]``: element (i, j) is noise(seed, offset, row_start + i, j).

    Counter ``(j // 4, i, offset_lo, offset_hi)``, key ``(seed_lo, seed_hi)``; Box-Muller on
    the four 32-bit outputs, ``u = x * 2^-32 + 2^-33`` in ``dtype`` (include/fastmbrl/philox.h).
    """
    groups = (d + 3) // 4
    out = torch.empty(n, groups * 4, dtype=dtype, device=device)
    key = (seed & _MASK32, (seed >> 32) & _MASK32)
    g = torch.arange(groups, dtype=torch.int64, device=device).unsqueeze(0)
    for start in range(0, n, _ROW_CHUNK):
        stop = min(n, start + _ROW_CHUNK)
        rows = torch.arange(row_start + start, row_start + stop, dtype=torch.int64, device=device)
        x = philox4x32_10((g, rows.unsqueeze(1), offset & _MASK32, (offset >> 32) & _MASK32), key)
        u = [xi.to(dtype) * _TWO_POW_M32 + _TWO_POW_M33 for xi in x]
        r0 = torch.sqrt(-2.0 * torch.log(u[0]))
        r1 = torch.sqrt(-2.0 * torch.log(u[2]))
        t0 = u[1] * (2.0 * math.pi)
        t1 = u[3] * (2.0 * math.pi)
        z = torch.stack([r0 * torch.cos(t0), r0 * torch.sin(t0), r1 * torch.cos(t1),
                         r1 * torch.sin(t1)], dim=-1)  # [rows, groups, 4]
        out[start:stop] = z.reshape(stop - start, groups * 4)
    return out[:, :d]


# ---------------------------------------------------------------------------------------------
# Propagation modes
# ---------------------------------------------------------------------------------------------
def member_indices(
    mode: str,
    n: int,
    elites: torch.Tensor,
    generator: torch.Generator | None = None,
    fixed: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """The ``members`` argument of :func:`ensemble_rollout_step` for a propagation mode.

    - ``random_model``: a fresh, independent, uniformly random elite per row (call it every
      step); LongTensor ``[n]`` on ``elites``' device.
    - ``fixed_model``: ``fixed`` (per-trajectory members, e.g. drawn once per rollout with
      ``random_model``), checked to be ``[n]`` int64.
    - ``expectation``: ``None`` (the op averages mean and logvar over ``elites``).
    """
    if mode not in MODES:
        raise ValueError(f"member_indices: `mode` must be one of {MODES}, got {mode!r}")
    if mode == "expectation":
        return None
    if mode == "fixed_model":
        if not isinstance(fixed, torch.Tensor) or fixed.dtype != torch.int64 or fixed.dim() != 1:
            raise ValueError("member_indices: fixed_model needs `fixed`, an int64 tensor [n]")
        if fixed.shape[0] != n:
            raise ValueError(f"member_indices: `fixed` must have shape [n] = ({n},), got "
                             f"{tuple(fixed.shape)}")
        return fixed
    if not isinstance(elites, torch.Tensor) or elites.dtype != torch.int64 or elites.dim() != 1 \
            or elites.numel() == 0:
        raise ValueError("member_indices: `elites` must be a non-empty int64 tensor [K]")
    gen_device = generator.device if generator is not None else elites.device
    pick = torch.randint(elites.numel(), (n,), generator=generator, device=gen_device)
    return elites[pick.to(elites.device)]


# ---------------------------------------------------------------------------------------------
# Reference: the definition of the op
# ---------------------------------------------------------------------------------------------
def _apply_termination(termination, next_state: torch.Tensor) -> torch.Tensor:
    N = next_state.shape[0]
    if termination is None:
        return torch.zeros(N, dtype=torch.bool, device=next_state.device)
    done = termination.done(next_state) if isinstance(termination, TerminationRule) \
        else termination(next_state)
    if not isinstance(done, torch.Tensor) or tuple(done.shape) != (N,):
        shape = tuple(done.shape) if isinstance(done, torch.Tensor) else type(done).__name__
        raise ValueError(f"{OP}: `termination(next_obs)` must return a tensor [N] = ({N},), "
                         f"got {shape}")
    return done.to(torch.bool)


def ensemble_rollout_step_reference(
    state: torch.Tensor,
    action: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    members: torch.Tensor | None = None,
    elites: torch.Tensor | None = None,
    input_mean: torch.Tensor | None = None,
    input_std: torch.Tensor | None = None,
    min_logvar: torch.Tensor | None = None,
    max_logvar: torch.Tensor | None = None,
    activation: str = "silu",
    delta_mask: torch.Tensor | None = None,
    termination: TerminationRule | Callable | None = None,
    sample: bool = True,
    seed: int = 0,
    offset: int = 0,
):
    """Pure-PyTorch rollout step; see the module docstring. Returns (next_state, reward, done)."""
    N, O = state.shape
    D = O + 1
    gaussian = min_logvar is not None
    x = torch.cat([state, action], dim=-1)
    if input_mean is not None:
        x = (x - input_mean) / input_std
    if members is None:
        idx = elites if elites is not None else torch.arange(weights[0].shape[0],
                                                             device=state.device)
        w = [wl[idx] for wl in weights]
        b = [bl[idx] for bl in biases]
        res = ensemble_mlp_reference(x, w, b, activation, min_logvar, max_logvar)  # [K, N, .]
        if gaussian:
            mean, logvar = res[0].mean(0), res[1].mean(0)
        else:
            mean, logvar = res.mean(0), None
    else:
        mean = x.new_empty(N, D)
        logvar = x.new_empty(N, D) if gaussian else None
        for m in torch.unique(members).tolist():
            rows = (members == m).nonzero().squeeze(1)
            res = ensemble_mlp_reference(x[rows], [wl[m:m + 1] for wl in weights],
                                         [bl[m:m + 1] for bl in biases], activation,
                                         min_logvar, max_logvar)
            if gaussian:
                mean[rows], logvar[rows] = res[0][0], res[1][0]
            else:
                mean[rows] = res[0]
    if gaussian and sample:
        noise = philox_normal(N, D, seed, offset, dtype=state.dtype, device=state.device)
        out = mean + torch.exp(0.5 * logvar) * noise
    else:
        out = mean
    delta, reward = out[:, :O], out[:, O]
    next_state = state + delta if delta_mask is None else torch.where(delta_mask, state + delta,
                                                                      delta)
    return next_state, reward, _apply_termination(termination, next_state)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def _check_index(name: str, t, length: int | None, layout: str, device) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{OP}: `{name}` must be a torch.Tensor {layout}, got {type(t).__name__}")
    if t.dtype != torch.int64:
        raise TypeError(f"{OP}: `{name}` must be int64 (LongTensor), got {t.dtype}")
    if t.dim() != 1 or (length is not None and t.shape[0] != length):
        want = f"({length},)" if length is not None else "1 dimension"
        raise ValueError(f"{OP}: `{name}` must have shape {layout} = {want}, "
                         f"got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{OP}: `{name}` must be on {device} like `state`, got {t.device}")


def _check_range(name: str, t: torch.Tensor, E: int) -> None:
    # CPU, eager: checked on the host with the values in the message. Any other device: an
    # asynchronous device-side assert (no host synchronisation in the hot path), reported at the
    # next synchronisation (at once with FASTMBRL_CUDA_SYNC=1). Skipped under torch.compile (a
    # data-dependent branch).
    if torch.compiler.is_compiling() or t.numel() == 0:
        return
    if t.device.type == "cpu":
        if int(t.min()) < 0 or int(t.max()) >= E:
            raise ValueError(f"{OP}: `{name}` must index members in [0, {E}), got values in "
                             f"[{int(t.min())}, {int(t.max())}]")
    else:
        torch._assert_async(((t >= 0) & (t < E)).all(),
                            f"{OP}: `{name}` must index members in [0, {E})")


def _validate(state, action, weights, biases, members, elites, input_mean, input_std,
              min_logvar, max_logvar, activation, delta_mask, termination, seed, offset):
    if activation not in ACTIVATIONS:
        raise ValueError(f"{OP}: `activation` must be one of {ACTIVATIONS}, got {activation!r}")
    check_tensor(OP, "state", state, 2, "[N, O]")
    check_tensor(OP, "action", action, 2, "[N, A]")
    N, O = state.shape
    check_nonempty(OP, {"N (rows)": N, "O (observation size)": O})
    check_shape(OP, "action", action, (N, action.shape[1]), "[N, A]")
    A = action.shape[1]
    if N >= 2**32:
        raise ValueError(f"{OP}: N must be below 2^32 (Philox row counter), got {N}")
    if not isinstance(weights, (list, tuple)) or not isinstance(biases, (list, tuple)):
        raise TypeError(f"{OP}: `weights` and `biases` must be lists of tensors")
    if len(weights) == 0 or len(weights) != len(biases):
        raise ValueError(f"{OP}: need one bias per weight and at least one layer, got "
                         f"{len(weights)} weights and {len(biases)} biases")
    tensors = {"state": state, "action": action}
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        check_tensor(OP, f"weights[{i}]", w, 3, "[E, in, out]")
        check_tensor(OP, f"biases[{i}]", b, 2, "[E, out]")
        tensors[f"weights[{i}]"], tensors[f"biases[{i}]"] = w, b
    gaussian = min_logvar is not None
    if (min_logvar is None) != (max_logvar is None):
        raise ValueError(f"{OP}: give both `min_logvar` and `max_logvar`, or neither")
    if (input_mean is None) != (input_std is None):
        raise ValueError(f"{OP}: give both `input_mean` and `input_std`, or neither")
    D = O + 1
    for name, t, n, layout in (("input_mean", input_mean, O + A, "[O + A]"),
                               ("input_std", input_std, O + A, "[O + A]"),
                               ("min_logvar", min_logvar, D, "[D] = [O + 1]"),
                               ("max_logvar", max_logvar, D, "[D] = [O + 1]")):
        if t is not None:
            check_tensor(OP, name, t, 1, layout)
            check_shape(OP, name, t, (n,), layout)
            tensors[name] = t
    check_same(OP, tensors)
    E = weights[0].shape[0]
    check_nonempty(OP, {"E (ensemble size)": E})
    fan_in = O + A
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        check_shape(OP, f"weights[{i}]", w, (E, fan_in, w.shape[2]),
                    "[E, in_l, out_l]" + (" with in_1 = O + A" if i == 0 else ""))
        check_shape(OP, f"biases[{i}]", b, (E, w.shape[2]), "[E, out_l]")
        fan_in = w.shape[2]
    want = 2 * D if gaussian else D
    if fan_in != want:
        kind = "2 * (O + 1) for a Gaussian head" if gaussian else "O + 1 (deterministic)"
        raise ValueError(f"{OP}: the last layer must have {kind} = {want} outputs, got {fan_in}")
    if members is not None:
        _check_index("members", members, N, "[N]", state.device)
        _check_range("members", members, E)
    if elites is not None:
        _check_index("elites", elites, None, "[K]", state.device)
        if elites.numel() == 0:
            raise ValueError(f"{OP}: `elites` must name at least one member, got shape (0,)")
        _check_range("elites", elites, E)
    if delta_mask is not None:
        if not isinstance(delta_mask, torch.Tensor) or delta_mask.dtype != torch.bool:
            raise TypeError(f"{OP}: `delta_mask` must be a bool tensor [O], got "
                            f"{getattr(delta_mask, 'dtype', type(delta_mask).__name__)}")
        check_shape(OP, "delta_mask", delta_mask, (O,), "[O]")
        if delta_mask.device != state.device:
            raise ValueError(f"{OP}: `delta_mask` must be on {state.device} like `state`, got "
                             f"{delta_mask.device}")
    if isinstance(termination, TerminationRule):
        if len(termination.lower) > O:
            raise ValueError(f"{OP}: TerminationRule {termination.name} constrains "
                             f"{len(termination.lower)} dimensions, the observation has {O}")
    elif termination is not None and not callable(termination):
        raise TypeError(f"{OP}: `termination` must be a TerminationRule, a callable "
                        f"next_obs -> done [N] or None, got {type(termination).__name__}")
    for name, v in (("seed", seed), ("offset", offset)):
        if v is None and name == "seed":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, torch.SymInt)):
            raise TypeError(f"{OP}: `{name}` must be an int, got {type(v).__name__}")
        if isinstance(v, int) and not 0 <= v < 2**63:
            raise ValueError(f"{OP}: `{name}` must be in [0, 2^63), got {v}")


# ---------------------------------------------------------------------------------------------
# torch.library registration: fastmbrl::ensemble_rollout_step (forward only)
# ---------------------------------------------------------------------------------------------
LIB.define(
    "ensemble_rollout_step(Tensor state, Tensor action, Tensor[] weights, Tensor[] biases, "
    "Tensor? members, Tensor? elites, Tensor? input_mean, Tensor? input_std, "
    "Tensor? min_logvar, Tensor? max_logvar, str activation, Tensor? delta_mask, "
    "Tensor? term_lower, Tensor? term_upper, bool term_inclusive, bool term_check_finite, "
    "bool sample, int seed, int offset) -> (Tensor, Tensor, Tensor)"
)

_ACT_CODES = {"silu": 1, "relu": 2, "tanh": 3}
_ACT_INPLACE = {
    "silu": lambda h: F.silu(h, inplace=True),
    "relu": torch.relu_,
    "tanh": torch.tanh_,
}


def _epilogue_args(raw, pos, K, state, out_w, min_logvar, max_logvar, delta_mask, term_lower,
                   term_upper, term_inclusive, term_check_finite, sample, seed, offset, outputs):
    P = _native.ptr

    def opt(t):
        return 0 if t is None else P(t)

    N, O = state.shape
    next_state, reward, done = outputs
    return (_native.dtype_code(state), P(raw), opt(pos), K, N, O, out_w, min_logvar is not None,
            bool(sample), opt(min_logvar), opt(max_logvar), P(state), opt(delta_mask),
            opt(term_lower), opt(term_upper), bool(term_inclusive), bool(term_check_finite),
            int(seed), int(offset), P(next_state), P(reward), P(done))


def _contig(t):
    return None if t is None else t.contiguous()


def _outputs(state):
    N, O = state.shape
    return (_native.empty((N, O), state), _native.empty((N,), state),
            torch.empty(N, dtype=torch.bool, device=state.device))


def _cpu_impl(state, action, weights, biases, members, elites, input_mean, input_std,
              min_logvar, max_logvar, activation, delta_mask, term_lower, term_upper,
              term_inclusive, term_check_finite, sample, seed, offset):
    state = state.contiguous()
    N, O = state.shape
    E = weights[0].shape[0]
    out_w = weights[-1].shape[2]
    x = torch.cat([state, action], dim=-1)
    if input_mean is not None:
        x = (x - input_mean) / input_std
    act = _ACT_INPLACE[activation]
    last = len(weights) - 1

    def mlp(h, m, out):  # one member's MLP on rows h [n, in], raw result into out [n, out_w]
        for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
            if layer < last:
                h = act(torch.addmm(b[m], h, w[m]))
            else:
                torch.addmm(b[m], h, w[m], out=out)

    pos = None
    if members is None:
        K = elites.shape[0]
        raw = _native.empty((K, N, out_w), state)
        for k, m in enumerate(elites.tolist()):
            mlp(x, m, raw[k])
    else:
        # Group rows by member: x sorted once, each member's rows a contiguous slice; the
        # epilogue reads the raw output through pos (row -> sorted position), no un-permute.
        K = 1
        raw = _native.empty((N, out_w), state)
        counts = torch.bincount(members, minlength=E).tolist()
        if max(counts) == N:  # a single member
            mlp(x, counts.index(N), raw)
        else:
            perm = torch.argsort(members, stable=True)
            pos = torch.empty_like(perm).scatter_(0, perm, torch.arange(N))
            xs = x.index_select(0, perm)
            start = 0
            for m, c in enumerate(counts):
                if c:
                    mlp(xs[start:start + c], m, raw[start:start + c])
                    start += c
    # Logvar bounds and exp are transcendental-heavy: vectorized torch ops beat the scalar C++
    # loop, so the CPU path hands the epilogue std = exp(bounded logvar / 2) (measured).
    std_given = min_logvar is not None and bool(sample)
    if std_given:
        D = O + 1
        lv = bound_logvar(raw[..., D:], min_logvar, max_logvar)
        if K > 1:  # expectation: average mean and bounded logvar over the elites
            raw = torch.cat([raw[..., :D].mean(0), torch.exp(0.5 * lv.mean(0))], dim=-1)
            K = 1
        else:
            raw[..., D:] = torch.exp(0.5 * lv)
    outputs = _outputs(state)
    _native._C.rollout_epilogue_cpu(*_epilogue_args(
        raw, pos, K, state, out_w, _contig(min_logvar), _contig(max_logvar),
        _contig(delta_mask), _contig(term_lower), _contig(term_upper), term_inclusive,
        term_check_finite, sample, seed, offset, outputs), torch.get_num_threads(), std_given)
    return outputs


def _group_rows(members, elites, N: int, E: int, tile_rows: int, device) -> dict:
    """Segment tables of the grouped GEMM, built by device-side torch ops only (no host sync).

    Virtual rows r < R: member mode R = N, rows sorted by member (stable); expectation R = K*N,
    segment k holding every row for elite k. ``src[r]`` is the original row of virtual row r,
    ``pos[i]`` the virtual row of original row i (member mode; None for expectation). Segment s
    spans ``seg_start[s] .. + seg_rows[s]`` with member ``seg_member[s]``, its row tiles start at
    ``seg_tile[s]``; ``grid_tiles`` >= the total number of row tiles (a host-known bound).
    """
    i64 = dict(dtype=torch.int64, device=device)
    row_tiles = (N + tile_rows - 1) // tile_rows
    if members is None:
        K = elites.shape[0]
        return dict(
            K=K, S=K, R=K * N, src=torch.arange(N, **i64).repeat(K), pos=None,
            seg_member=elites.contiguous(), seg_start=torch.arange(K, **i64) * N,
            seg_rows=torch.full((K,), N, **i64), seg_tile=torch.arange(K, **i64) * row_tiles,
            grid_tiles=K * row_tiles)
    src = torch.argsort(members, stable=True)
    seg_rows = torch.zeros(E, **i64).scatter_add_(0, members, torch.ones_like(members))
    tiles = (seg_rows + tile_rows - 1) // tile_rows
    return dict(
        K=1, S=E, R=N, src=src,
        pos=torch.empty_like(src).scatter_(0, src, torch.arange(N, **i64)),
        seg_member=torch.arange(E, **i64), seg_start=torch.cumsum(seg_rows, 0) - seg_rows,
        seg_rows=seg_rows, seg_tile=torch.cumsum(tiles, 0) - tiles,
        grid_tiles=row_tiles + E)  # >= sum_e ceil(count_e / tile_rows)


def _grouped_forward(state, action, weights, biases, members, elites, input_mean, input_std,
                     activation, tile_rows, layer_fn):
    """Run the layers as grouped GEMMs: ``layer_fn(h_in | None, w, b, act_code, out, groups)``
    per layer (None: the first layer gathers [state, action] itself). Returns (raw, groups)."""
    N = state.shape[0]
    groups = _group_rows(members, elites, N, weights[0].shape[0], tile_rows, state.device)
    R = groups["R"]
    widths = [w.shape[2] for w in weights]
    hidden = max(widths[:-1], default=0)
    work = _native.empty((2 * R * hidden,), state) if hidden else None
    raw = _native.empty((R, widths[-1]), state)
    h = None
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
        n_out = w.shape[2]
        is_last = layer == len(weights) - 1
        out = raw if is_last else work[(layer % 2) * R * hidden:][:R * n_out].view(R, n_out)
        layer_fn(h, w, b, 0 if is_last else _ACT_CODES[activation], out, groups)
        h = out
    return raw, groups


def _cuda_impl(state, action, weights, biases, members, elites, input_mean, input_std,
               min_logvar, max_logvar, activation, delta_mask, term_lower, term_upper,
               term_inclusive, term_check_finite, sample, seed, offset):
    C, P = _native._C, _native.ptr
    state, action = state.contiguous(), action.contiguous()
    input_mean, input_std = _contig(input_mean), _contig(input_std)
    weights = [w.contiguous() for w in weights]
    biases = [b.contiguous() for b in biases]
    N, O = state.shape
    A = action.shape[1]
    stream = _native.cuda_stream(state.device)
    dt = _native.dtype_code(state)

    def layer_fn(h, w, b, act_code, out, g):
        C.rollout_layer_cuda(
            dt, 0 if h is None else P(h), P(state), P(action), O, A,
            0 if input_mean is None else P(input_mean), 0 if input_std is None else P(input_std),
            P(g["src"]), P(w), P(b), w.shape[1], w.shape[2], P(g["seg_member"]),
            P(g["seg_start"]), P(g["seg_rows"]), P(g["seg_tile"]), g["S"], g["grid_tiles"],
            act_code, P(out), stream)

    raw, g = _grouped_forward(state, action, weights, biases, members, elites, input_mean,
                              input_std, activation, C.rollout_cuda_tile_rows(), layer_fn)
    outputs = _outputs(state)
    C.rollout_epilogue_cuda(*_epilogue_args(
        raw, g["pos"], g["K"], state, weights[-1].shape[2], _contig(min_logvar),
        _contig(max_logvar), _contig(delta_mask), _contig(term_lower), _contig(term_upper),
        term_inclusive, term_check_finite, sample, seed, offset, outputs), stream)
    return outputs


def _fake(state, action, weights, biases, members, elites, input_mean, input_std, min_logvar,
          max_logvar, activation, delta_mask, term_lower, term_upper, term_inclusive,
          term_check_finite, sample, seed, offset):
    N, O = state.shape
    return (state.new_empty(N, O), state.new_empty(N),
            state.new_empty(N, dtype=torch.bool))


if _native.HAS_NATIVE:
    LIB.impl(OP, _cpu_impl, "CPU")
impl_cuda(OP, _cuda_impl)
torch.library.register_fake(f"fastmbrl::{OP}", _fake, lib=LIB)


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------
_BOUNDS_CACHE: dict = {}


def _rule_bounds(rule: TerminationRule, O: int, like: torch.Tensor):
    if torch.compiler.is_compiling():
        return rule.bounds(O, like)
    key = (rule, O, like.dtype, like.device)
    hit = _BOUNDS_CACHE.get(key)
    if hit is None:
        if len(_BOUNDS_CACHE) > 64:
            _BOUNDS_CACHE.clear()
        hit = _BOUNDS_CACHE[key] = rule.bounds(O, like)
    return hit


def draw_seed(generator: torch.Generator | None = None) -> int:
    """A Philox seed in [0, 2^63) drawn from ``generator`` (default: torch's CPU generator)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=device).item())


def ensemble_rollout_step(
    state: torch.Tensor,
    action: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    members: torch.Tensor | None = None,
    elites: torch.Tensor | None = None,
    input_mean: torch.Tensor | None = None,
    input_std: torch.Tensor | None = None,
    min_logvar: torch.Tensor | None = None,
    max_logvar: torch.Tensor | None = None,
    activation: str = "silu",
    delta_mask: torch.Tensor | None = None,
    termination: TerminationRule | Callable | None = None,
    sample: bool = True,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    offset: int = 0,
    backend: str | None = None,
):
    """One rollout step of an ensemble model; formula and shapes in the module docstring.

    Args:
        state: ``[N, O]``; action: ``[N, A]`` (float32 or float64, one device).
        weights, biases: per layer ``[E, in_l, out_l]`` and ``[E, out_l]``; ``in_1 = O + A``;
            the last layer has ``2 * (O + 1)`` outputs (Gaussian head) or ``O + 1``.
        members: int64 ``[N]``, the member evaluated for each row (``random_model`` /
            ``fixed_model``, see :func:`member_indices`); ``None``: expectation over ``elites``.
        elites: int64 ``[K]``, the members averaged for expectation (default: all E).
        input_mean, input_std: ``[O + A]`` input normalizer (None: identity).
        min_logvar, max_logvar: ``[O + 1]`` soft logvar bounds; None: deterministic model.
        activation: hidden activation, ``silu`` | ``relu`` | ``tanh``.
        delta_mask: bool ``[O]``; False dims predict the next value directly (no_delta_list).
        termination: a :class:`TerminationRule` (evaluated inside the kernel), any callable
            ``next_obs -> done [N]`` (applied after it), or None (never done).
        sample: add Gaussian noise (ignored for a deterministic model).
        generator, seed, offset: the Philox noise is keyed by ``(seed, offset)``; with
            ``seed=None`` a seed is drawn from ``generator``.
        backend: ``None`` (process default), ``"auto"``, ``"reference"`` or ``"native"``.

    Returns:
        ``(next_state [N, O], reward [N], done [N] bool)``.
    """
    _validate(state, action, weights, biases, members, elites, input_mean, input_std,
              min_logvar, max_logvar, activation, delta_mask, termination, seed, offset)
    if seed is None:
        seed = draw_seed(generator)
    # the native op has no autograd formula: gradients through a step (inputs that require
    # grad, outside no_grad) take the reference, which autograd differentiates to any order
    wants_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (state, action, *weights, *biases, input_mean,
                                                    input_std, min_logvar, max_logvar))
    if wants_grad or not _native.use_native(state.device, backend,
                                            prefer_native_cpu=PREFER_NATIVE_CPU):
        return ensemble_rollout_step_reference(
            state, action, weights, biases, members, elites, input_mean, input_std, min_logvar,
            max_logvar, activation, delta_mask, termination, sample, seed, offset)
    if members is None and elites is None:
        elites = torch.arange(weights[0].shape[0], device=state.device)
    rule = termination if isinstance(termination, TerminationRule) else None
    lower, upper = _rule_bounds(rule, state.shape[1], state) if rule is not None else (None, None)
    next_state, reward, done = torch.ops.fastmbrl.ensemble_rollout_step(
        state, action, list(weights), list(biases), members, elites, input_mean, input_std,
        min_logvar, max_logvar, activation, delta_mask, lower, upper,
        rule.inclusive if rule is not None else False,
        rule.check_finite if rule is not None else False, bool(sample), seed, offset)
    if termination is not None and rule is None:
        done = _apply_termination(termination, next_state)
    return next_state, reward, done
