// Block-level reductions shared by the CUDA kernels (device code only).
#pragma once

#include <cstdint>

namespace fastmbrl {
namespace cuda {

// Sum of v over a block of kThreads threads (a multiple of 32, at most 1024). warp_sums is
// shared memory of kThreads / 32 elements. The result is valid in thread 0; the trailing
// barrier lets the caller reuse warp_sums straight away.
template <int kThreads, typename T>
__device__ __forceinline__ T block_sum(T v, T* warp_sums) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block size must be a multiple of 32");
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : T(0);
  if (warp == 0) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  __syncthreads();
  return v;
}

// Sum of v over the 32 lanes of a full warp; every lane gets the total (butterfly shuffles).
template <typename T>
__device__ __forceinline__ T warp_sum_all(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The same with its own shared scratch (one array per block size and type in each kernel).
template <int kThreads, typename T>
__device__ __forceinline__ T block_sum(T v) {
  __shared__ T warp_sums[kThreads / 32];
  return block_sum<kThreads>(v, warp_sums);
}

// Blocks of a grid-stride reduction over `items` work items, `per_block` per block, clamped to
// [1, max_blocks] (host code: sizes the grid and the partial-sum workspace).
inline int64_t reduction_blocks(int64_t items, int64_t per_block, int64_t max_blocks) {
  const int64_t g = (items + per_block - 1) / per_block;
  return g < 1 ? 1 : (g < max_blocks ? g : max_blocks);
}

}  // namespace cuda
}  // namespace fastmbrl
