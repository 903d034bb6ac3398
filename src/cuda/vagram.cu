// CUDA kernels of the fused VaGraM loss. COMPILED, NOT YET VERIFIED ON A GPU.
//
// Forward: grid (G, E). Each block walks a grid-stride slice of member e, writes the unit
// gradient dpred for every element it owns and its partial loss sum to workspace[e * G + block];
// then one block per member adds the G partials in a fixed order (deterministic, no atomics) and
// writes member_loss[e].
//   bounded    one thread per element (e, b, d), looping over the K heads (coalesced);
//   unbounded  one thread per row (e, b), looping over k and d (vagram::unbounded_row, the same
//              code the CPU kernel runs).
// Never allocates, never synchronises; launches on the stream it is given.
#include <cuda_runtime.h>

#include "fastmbrl/cuda_reduce.cuh"
#include "fastmbrl/vagram.h"

namespace fastmbrl {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocksPerMember = 256;

// Work items per member: elements (bounded, 4 per thread) or rows (unbounded, 1 per thread).
int64_t blocks_per_member(int64_t B, int64_t O, bool bounded) {
  return cuda::reduction_blocks(bounded ? B * O : B, bounded ? kThreads * 4 : kThreads,
                                kMaxBlocksPerMember);
}

template <typename T>
__global__ void vagram_bounded_kernel(const T* __restrict__ pred, const T* __restrict__ target,
                                      const T* __restrict__ value_grad, bool target_shared,
                                      int64_t N, int64_t S, int64_t K, T scale,
                                      T* __restrict__ dpred, T* __restrict__ partial) {
  const int64_t e = blockIdx.y;
  const T* p = pred + e * N;
  const T* y = target_shared ? target : target + e * N;
  const T* g = value_grad + e * N;
  T* dp = dpred + e * N;
  double acc = 0.0;  // double accumulation, as the CPU kernel
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < N;
       i += int64_t(gridDim.x) * kThreads) {
    T w = T(0);
    for (int64_t k = 0; k < K; ++k) {
      const T gk = g[k * S + i];
      w += gk * gk;
    }
    const T delta = p[i] - y[i];
    dp[i] = vagram::bounded_grad(w, delta, scale);
    acc += static_cast<double>(vagram::bounded_value(w, delta));
  }
  acc = cuda::block_sum<kThreads>(acc);
  if (threadIdx.x == 0) partial[e * gridDim.x + blockIdx.x] = static_cast<T>(acc);
}

template <typename T>
__global__ void vagram_unbounded_kernel(const T* __restrict__ pred, const T* __restrict__ target,
                                        const T* __restrict__ value_grad, bool target_shared,
                                        int64_t B, int64_t O, int64_t S, int64_t K, T scale,
                                        T* __restrict__ dpred, T* __restrict__ partial) {
  const int64_t e = blockIdx.y;
  const int64_t N = B * O;
  const T* p = pred + e * N;
  const T* y = target_shared ? target : target + e * N;
  const T* g = value_grad + e * N;
  T* dp = dpred + e * N;
  double acc = 0.0;  // double accumulation, as the CPU kernel
  for (int64_t b = blockIdx.x * int64_t(kThreads) + threadIdx.x; b < B;
       b += int64_t(gridDim.x) * kThreads) {
    const int64_t off = b * O;
    acc += vagram::unbounded_row<T, double>(p + off, y + off, g + off, S, O, K, scale, dp + off);
  }
  acc = cuda::block_sum<kThreads>(acc);
  if (threadIdx.x == 0) partial[e * gridDim.x + blockIdx.x] = static_cast<T>(acc);
}

template <typename T>
__global__ void vagram_finalize_kernel(const T* __restrict__ partial, int64_t G, double inv_norm,
                                       T* __restrict__ member_loss) {
  const int64_t e = blockIdx.x;
  double acc = 0.0;
  for (int64_t g = threadIdx.x; g < G; g += kThreads) acc += static_cast<double>(partial[e * G + g]);
  acc = cuda::block_sum<kThreads>(acc);
  if (threadIdx.x == 0) member_loss[e] = static_cast<T>(acc * inv_norm);
}

}  // namespace

int64_t vagram_cuda_workspace(int64_t E, int64_t B, int64_t O, bool bounded) {
  return E * blocks_per_member(B, O, bounded);
}

template <typename T>
int vagram_forward_cuda(const T* pred, const T* target, const T* value_grad, bool target_shared,
                        int64_t E, int64_t B, int64_t O, int64_t K, bool bounded, T* member_loss,
                        T* dpred, T* workspace, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int64_t N = B * O;
  const int64_t S = E * N;
  const double norm = vagram::loss_norm(B, O, K, bounded);
  const T scale = static_cast<T>(2.0 / norm);
  const int64_t G = blocks_per_member(B, O, bounded);
  dim3 grid(static_cast<unsigned>(G), static_cast<unsigned>(E));
  if (bounded) {
    vagram_bounded_kernel<T><<<grid, kThreads, 0, s>>>(pred, target, value_grad, target_shared, N,
                                                       S, K, scale, dpred, workspace);
  } else {
    vagram_unbounded_kernel<T><<<grid, kThreads, 0, s>>>(pred, target, value_grad, target_shared,
                                                         B, O, S, K, scale, dpred, workspace);
  }
  vagram_finalize_kernel<T><<<static_cast<unsigned>(E), kThreads, 0, s>>>(workspace, G,
                                                                         1.0 / norm, member_loss);
  return static_cast<int>(cudaGetLastError());
}

#define FASTMBRL_INSTANTIATE(T)                                                                \
  template int vagram_forward_cuda<T>(const T*, const T*, const T*, bool, int64_t, int64_t,    \
                                      int64_t, int64_t, bool, T*, T*, T*, void*);
FASTMBRL_INSTANTIATE(float)
FASTMBRL_INSTANTIATE(double)
#undef FASTMBRL_INSTANTIATE

}  // namespace fastmbrl
