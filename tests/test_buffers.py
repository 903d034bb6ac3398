"""ReplayBuffer: FIFO semantics, batched adds, sampling, persistence."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fastmbrl.buffers import ReplayBuffer, TransitionBatch

O, A = 3, 2


def rows(start: int, n: int, dtype=torch.float32) -> TransitionBatch:
    """``n`` distinguishable transitions numbered ``start .. start+n-1`` (the reward is the id)."""
    ids = torch.arange(start, start + n, dtype=dtype)
    return TransitionBatch(
        obs=ids[:, None].expand(n, O) + torch.tensor([0.0, 0.1, 0.2], dtype=dtype),
        act=-ids[:, None].expand(n, A).clone(),
        next_obs=ids[:, None].expand(n, O) + 0.5,
        reward=ids.clone(),
        terminated=(torch.arange(start, start + n) % 3) == 0,
        truncated=(torch.arange(start, start + n) % 5) == 0,
    )


def ids_of(batch: TransitionBatch) -> list[int]:
    return [int(r) for r in batch.reward]


def consistent(batch: TransitionBatch) -> None:
    """Every row's fields belong to the same transition."""
    ref = rows(0, 1000)
    idx = batch.reward.long()
    for name in ("obs", "act", "next_obs", "terminated", "truncated"):
        assert torch.equal(getattr(batch, name), getattr(ref, name)[idx]), name


def test_add_single_and_get_all():
    buf = ReplayBuffer(10, (O,), (A,))
    assert len(buf) == 0
    for i in range(4):
        r = rows(i, 1)
        # numpy / python scalars, as from env.step
        buf.add(
            r.obs[0].numpy(),
            r.act[0].numpy(),
            r.next_obs[0].numpy(),
            float(r.reward[0]),
            bool(r.terminated[0]),
            np.bool_(r.truncated[0]),
        )
    assert len(buf) == 4 and buf.num_added == 4 and not buf.is_full
    data = buf.get_all()
    assert data.obs.shape == (4, O) and data.act.shape == (4, A) and data.reward.shape == (4,)
    assert data.terminated.dtype == torch.bool and data.obs.dtype == torch.float32
    assert ids_of(data) == [0, 1, 2, 3]
    consistent(data)
    # get_all returns views of the storage (no copy).
    assert data.obs.data_ptr() == buf.obs.data_ptr()


def test_fifo_overwrite_single():
    buf = ReplayBuffer(5, O, A)
    for i in range(8):
        r = rows(i, 1)
        buf.add(*(t[0] for t in r))
    assert len(buf) == 5 and buf.is_full and buf.num_added == 8
    assert sorted(ids_of(buf.get_all())) == [3, 4, 5, 6, 7]
    assert ids_of(buf.get_all(chronological=True)) == [3, 4, 5, 6, 7]
    consistent(buf.get_all())


@pytest.mark.parametrize("capacity", [1, 4, 7, 16])
def test_add_batch_matches_single_adds(capacity):
    sizes = [3, 0, 5, 1, 10, 2, 7, 20, 4]
    a = ReplayBuffer(capacity, O, A)
    b = ReplayBuffer(capacity, O, A)
    start = 0
    for n in sizes:
        batch = rows(start, n)
        a.add_batch(*batch)
        for i in range(n):
            b.add(*(t[i] for t in batch))
        start += n
        assert len(a) == len(b) == min(start, capacity)
        for x, y in zip(a.get_all(), b.get_all(), strict=True):
            assert torch.equal(x, y)
        # The newest rows, oldest first.
        assert ids_of(a.get_all(chronological=True)) == list(range(max(0, start - capacity), start))
    assert a.num_added == start


def test_add_batch_accepts_column_rewards_and_validates():
    buf = ReplayBuffer(8, O, A)
    r = rows(0, 4)
    buf.add_batch(r.obs, r.act, r.next_obs, r.reward[:, None], r.terminated, r.truncated)
    assert ids_of(buf.get_all()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"act has shape \(4, 3\), expected \(4, 2\)"):
        buf.add_batch(r.obs, torch.zeros(4, 3), r.next_obs, r.reward, r.terminated, r.truncated)
    with pytest.raises(ValueError, match="next_obs"):
        buf.add(r.obs[0], r.act[0], torch.zeros(5), 0.0, False, False)


def test_sample_only_filled_rows_and_generator():
    buf = ReplayBuffer(100, O, A)
    buf.add_batch(*rows(0, 10))
    g = torch.Generator().manual_seed(0)
    batch = buf.sample(2000, generator=g)
    assert batch.obs.shape == (2000, O)
    ids = torch.tensor(ids_of(batch))
    assert ids.min() >= 0 and ids.max() <= 9
    assert len(ids.unique()) == 10  # uniform over the filled rows: all of them appear
    consistent(batch)
    again = buf.sample(2000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.reward, batch.reward)
    # Roughly uniform.
    counts = torch.bincount(ids, minlength=10).float()
    assert (counts - 200).abs().max() < 80


def test_sample_empty_raises():
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(4, O, A).sample(2)


def test_iterate_covers_each_row_once():
    buf = ReplayBuffer(50, O, A)
    buf.add_batch(*rows(0, 37))
    g = torch.Generator().manual_seed(1)
    seen = [i for b in buf.iterate(8, generator=g) for i in ids_of(b)]
    assert sorted(seen) == list(range(37)) and seen != list(range(37))
    assert [b.obs.shape[0] for b in buf.iterate(8, shuffle=False, drop_last=True)] == [8] * 4


def test_discrete_actions():
    buf = ReplayBuffer(4, (4,), (), act_dtype=torch.long)
    buf.add(np.zeros(4, np.float32), np.int64(1), np.ones(4, np.float32), 1.0, False, False)
    buf.add_batch(torch.zeros(2, 4), torch.tensor([0, 1]), torch.ones(2, 4), torch.ones(2),
                  torch.zeros(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool))  # fmt: skip
    assert buf.get_all().act.tolist() == [1, 0, 1] and buf.act.dtype == torch.long


def test_resized_keeps_newest_rows():
    buf = ReplayBuffer(6, O, A)
    buf.add_batch(*rows(0, 9))
    small, big = buf.resized(4), buf.resized(20)
    assert ids_of(small.get_all(chronological=True)) == [5, 6, 7, 8]
    assert ids_of(big.get_all(chronological=True)) == [3, 4, 5, 6, 7, 8]
    big.add_batch(*rows(9, 2))
    assert ids_of(big.get_all(chronological=True)) == list(range(3, 11))
    assert big.num_added == 11


@pytest.mark.parametrize("n", [0, 5, 13])
def test_save_load_round_trip(tmp_path, n):
    buf = ReplayBuffer(8, O, A)
    buf.add_batch(*rows(0, n))
    path = tmp_path / "buf.pt"
    buf.save(path)
    assert os.listdir(tmp_path) == ["buf.pt"]  # no temporary file left behind

    other = ReplayBuffer(8, O, A)
    other.add_batch(*rows(100, 3))  # overwritten by the load
    other.load(path)
    assert len(other) == len(buf) and other.num_added == buf.num_added
    for x, y in zip(other.get_all(True), buf.get_all(True), strict=True):
        assert torch.equal(x, y)
    # It continues as the saved one would (FIFO order preserved).
    buf.add_batch(*rows(n, 3))
    other.add_batch(*rows(n, 3))
    assert ids_of(other.get_all(True)) == ids_of(buf.get_all(True))

    fresh = ReplayBuffer.from_file(path)
    assert fresh.capacity == 8 and fresh.obs_shape == (O,) and len(fresh) == min(n, 8)


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "buf.pt"
    a = ReplayBuffer(8, O, A)
    a.add_batch(*rows(0, 3))
    a.save(path)
    a.add_batch(*rows(3, 2))
    a.save(path)
    assert len(ReplayBuffer.from_file(path)) == 5
    assert os.listdir(tmp_path) == ["buf.pt"]


def test_corrupt_file_detected(tmp_path):
    buf = ReplayBuffer(64, O, A)
    buf.add_batch(*rows(0, 64))
    path = tmp_path / "buf.pt"
    buf.save(path)
    raw = path.read_bytes()

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        ReplayBuffer(64, O, A).load(truncated)

    # Flip bytes inside the stored observations (float 1.0 = 00 00 80 3f): whether the zip
    # reader or the checksum notices, the error says the file is corrupt.
    pos = raw.index(np.float32(7.1).tobytes())
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(raw[:pos] + bytes(b ^ 0xFF for b in raw[pos : pos + 4]) + raw[pos + 4 :])
    with pytest.raises(ValueError, match="corrupt"):
        ReplayBuffer(64, O, A).load(flipped)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a buffer")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        ReplayBuffer.from_file(garbage)

    with pytest.raises(FileNotFoundError):
        ReplayBuffer(64, O, A).load(tmp_path / "missing.pt")


def test_load_mismatched_buffer(tmp_path):
    buf = ReplayBuffer(8, O, A)
    buf.add_batch(*rows(0, 3))
    path = tmp_path / "buf.pt"
    buf.save(path)
    with pytest.raises(ValueError, match=r"obs_shape is \[3\], this buffer's is \[4\]"):
        ReplayBuffer(8, 4, A).load(path)
    with pytest.raises(ValueError, match="dtype"):
        ReplayBuffer(8, O, A, dtype=torch.float64).load(path)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a ReplayBuffer"):
        ReplayBuffer(8, O, A).load(tmp_path / "other.pt")


def test_float64_storage():
    buf = ReplayBuffer(4, O, A, dtype=torch.float64)
    buf.add_batch(*rows(0, 2, dtype=torch.float64))
    assert buf.get_all().obs.dtype == torch.float64


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_buffer(tmp_path):
    buf = ReplayBuffer(16, O, A, device="cuda")
    buf.add_batch(*rows(0, 20).to("cuda"))
    buf.add(*(t[0] for t in rows(20, 1)))  # CPU row into a CUDA buffer
    assert ids_of(buf.get_all(True)) == list(range(5, 21))
    g = torch.Generator(device="cuda").manual_seed(0)
    s = buf.sample(64, generator=g)
    assert s.obs.is_cuda and int(s.reward.min()) >= 5
    s = buf.sample(64, generator=torch.Generator().manual_seed(0))
    assert s.obs.is_cuda
    buf.save(tmp_path / "b.pt")
    back = ReplayBuffer.from_file(tmp_path / "b.pt", device="cuda")
    assert torch.equal(back.get_all(True).obs, buf.get_all(True).obs)
