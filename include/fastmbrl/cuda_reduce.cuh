// Block-level reductions shared by the CUDA kernels (device code only).
#pragma once

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

}  // namespace cuda
}  // namespace fastmbrl
