// CUDA kernel of the ensemble disagreement (include/fastmbrl/disagreement.h).
// COMPILED, NOT YET VERIFIED ON A GPU.
//
// One warp per row n (kThreads / 32 rows per block, a grid-stride loop over rows). For every
// member pair (i, j) the lanes stride over the O outputs of pred[i, n, :] and pred[j, n, :]
// (coalesced), the squared distance is summed across the warp with shuffles (every lane ends
// with the total), and the running maximum stays in a register; lane 0 writes sqrt(max).
// One pass over pred per pair, no [E, E, N] temporary, no shared memory, no atomics.
// Never allocates, never synchronises; launches on the stream it is given.
#include <cuda_runtime.h>

#include "fastmbrl/cuda_reduce.cuh"
#include "fastmbrl/disagreement.h"

namespace fastmbrl {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxBlocks = 65535;

template <typename T>
__global__ void disagreement_kernel(const T* __restrict__ pred, int64_t E, int64_t N, int64_t O,
                                    T* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = threadIdx.x >> 5;
  const int64_t stride = N * O;
  for (int64_t n = blockIdx.x * int64_t(kWarps) + warp; n < N;
       n += int64_t(gridDim.x) * kWarps) {
    const T* row = pred + n * O;
    T m = T(0);
    for (int64_t i = 0; i < E; ++i) {
      const T* pi = row + i * stride;
      for (int64_t j = i + 1; j < E; ++j) {
        const T* pj = row + j * stride;
        T s = T(0);
        for (int64_t d = lane; d < O; d += 32) {
          const T diff = pi[d] - pj[d];
          s += diff * diff;
        }
        s = cuda::warp_sum_all(s);
        m = disagreement::nan_max(m, s);
      }
    }
    if (lane == 0) out[n] = sqrt(m);
  }
}

}  // namespace

template <typename T>
int disagreement_cuda(const T* pred, int64_t E, int64_t N, int64_t O, T* out, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int64_t blocks = cuda::reduction_blocks(N, kWarps, kMaxBlocks);
  disagreement_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(pred, E, N, O, out);
  return static_cast<int>(cudaGetLastError());
}

template int disagreement_cuda<float>(const float*, int64_t, int64_t, int64_t, float*, void*);
template int disagreement_cuda<double>(const double*, int64_t, int64_t, int64_t, double*, void*);

}  // namespace fastmbrl
