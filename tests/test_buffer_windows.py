"""ReplayBuffer extras and window sampling (value expansion's Retrace windows)."""

from __future__ import annotations

import pytest
import torch

from fastmbrl.buffers import ReplayBuffer

EXTRAS = {"log_mu": ((), torch.float32), "state": ((3,), torch.float64)}


def filled(capacity: int, n: int, ends: set[int], truncs: set[int] = frozenset(),
           extras=EXTRAS) -> ReplayBuffer:
    """Rows 0..n-1 added one by one; obs[:, 0] holds the row's insertion number."""
    buf = ReplayBuffer(capacity, (2,), (1,), extras=extras)
    for i in range(n):
        kw = {"log_mu": float(-i), "state": [i, i, i]} if extras else {}
        buf.add([i, 0], [0.0], [i + 1, 0], 0.0, i in ends, i in truncs, **kw)
    return buf


def check_windows(buf: ReplayBuffer, idx, valid, stride: int, n_added: int):
    number = buf.obs[idx][..., 0].long()           # insertion number of every position
    ended = (buf.terminated | buf.truncated)[idx]
    oldest = n_added - len(buf)
    for b in range(idx.shape[0]):
        k = int(valid[b].sum())
        assert valid[b, :k].all() and not valid[b, k:].any()  # a prefix is valid
        seq = number[b, :k]
        assert (seq >= oldest).all() and (seq < n_added).all()
        assert (seq.diff() == stride).all()        # consecutive, never across the seam
        assert not ended[b, :k - 1].any()          # no episode end before the last valid row
        if k < idx.shape[1]:                       # cut: an episode end, or the newest row
            assert bool(ended[b, k - 1]) or int(seq[-1]) + stride >= n_added


def test_windows_are_consecutive_and_cut_at_episode_ends():
    buf = filled(100, 60, ends={9, 30}, truncs={45})
    g = torch.Generator().manual_seed(0)
    idx, valid = buf.sample_windows(4000, 5, generator=g)
    check_windows(buf, idx, valid, 1, 60)
    assert valid[:, 0].all()
    starts = set(buf.obs[idx[:, 0]][:, 0].long().tolist())
    assert starts == set(range(60))                # every transition starts windows
    full = valid.all(1)
    assert full.any() and not full.all()


def test_windows_never_cross_the_fifo_seam():
    buf = filled(16, 41, ends=set())               # wrapped around twice
    g = torch.Generator().manual_seed(1)
    idx, valid = buf.sample_windows(2000, 6, generator=g)
    check_windows(buf, idx, valid, 1, 41)
    newest = buf.obs[idx][..., 0].long().masked_select(valid).max()
    assert int(newest) == 40


def test_interleaved_rows_of_a_vector_env():
    N, steps = 3, 20
    buf = ReplayBuffer(N * steps, (2,), (1,))
    for t in range(steps):
        env = torch.arange(N, dtype=torch.float32)
        buf.add_batch(torch.stack([t * N + env, env], 1), torch.zeros(N, 1),
                      torch.zeros(N, 2), torch.zeros(N),
                      torch.tensor([t == 7, False, t == 12]), torch.zeros(N, dtype=torch.bool))
    idx, valid = buf.sample_windows(3000, 4, generator=torch.Generator().manual_seed(2),
                                    stride=N)
    check_windows(buf, idx, valid, N, N * steps)
    env_of = buf.obs[idx][..., 1]
    assert (env_of == env_of[:, :1]).all()         # one env per window


def test_window_argument_errors():
    buf = filled(8, 0, ends=set())
    with pytest.raises(ValueError, match="empty buffer"):
        buf.sample_windows(2, 3)
    buf = filled(8, 4, ends=set())
    with pytest.raises(ValueError, match="length"):
        buf.sample_windows(2, 0)


def test_extras_are_stored_sampled_and_saved(tmp_path):
    buf = filled(10, 14, ends={3})
    batch, idx = buf.sample(50, torch.Generator().manual_seed(0), return_indices=True)
    number = batch.obs[:, 0]
    assert torch.equal(buf.extras["log_mu"][idx], -number)
    assert torch.equal(buf.extras["state"][idx][:, 1], number.double())
    path = tmp_path / "buf.pt"
    buf.save(path)
    other = ReplayBuffer.from_file(path)
    assert other.extra_specs == buf.extra_specs
    for a, b in zip(buf.get_all(True), other.get_all(True), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(buf._extras_chronological()["state"],
                       other._extras_chronological()["state"])
    small = buf.resized(4)
    assert torch.equal(small.extras["log_mu"][:4].sort().values,
                       torch.tensor([-13.0, -12.0, -11.0, -10.0]))


def test_extras_batch_add_and_mismatch_errors():
    buf = ReplayBuffer(8, (2,), (1,), extras=EXTRAS)
    buf.add_batch(torch.zeros(3, 2), torch.zeros(3, 1), torch.zeros(3, 2), torch.zeros(3),
                  torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool),
                  log_mu=torch.arange(3.0), state=torch.ones(3, 3))
    assert torch.equal(buf.extras["log_mu"][:3], torch.arange(3.0))
    with pytest.raises(ValueError, match="missing extra 'state'"):
        buf.add([0, 0], [0], [0, 0], 0, False, False, log_mu=1.0)
    with pytest.raises(ValueError, match="unknown extra 'lgo_mu'"):
        buf.add([0, 0], [0], [0, 0], 0, False, False, lgo_mu=1.0, log_mu=1.0, state=[0, 0, 0])
    with pytest.raises(ValueError, match="state has shape"):
        buf.add([0, 0], [0], [0, 0], 0, False, False, log_mu=1.0, state=[0, 0])
    plain = ReplayBuffer(8, (2,), (1,))
    with pytest.raises(ValueError, match="stored extras"):
        plain.load_state_dict(buf.state_dict())
    with pytest.raises(ValueError, match="clashes"):
        ReplayBuffer(4, (1,), (1,), extras={"reward": ((), torch.float32)})
