// CUDA kernels of the ensemble Gaussian NLL.
//
// Forward (reduced): grid (G, E); each block sums a grid-stride slice of member e into
// workspace[e * G + block], then one block per member adds the G partials in a fixed order
// (deterministic, no atomics) and writes member_mean[e].
// Backward: one thread per element i of the B*D plane, looping over the E members, so a
// shared target's gradient is summed over members without atomics.
#include <cuda_runtime.h>

#include "fastmbrl/cuda_reduce.cuh"
#include "fastmbrl/gaussian_nll.h"

namespace fastmbrl {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocksPerMember = 256;

int64_t blocks_per_member(int64_t N) {
  return cuda::reduction_blocks(N, kThreads * 4, kMaxBlocksPerMember);
}

template <typename T>
__global__ void nll_elementwise_kernel(const T* __restrict__ mean, const T* __restrict__ logvar,
                                       const T* __restrict__ target, bool target_shared,
                                       int64_t E, int64_t N, T* __restrict__ out) {
  const int64_t total = E * N;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * blockDim.x) {
    const T y = target_shared ? target[k % N] : target[k];
    out[k] = nll::value(mean[k], logvar[k], y);
  }
}

template <typename T>
__global__ void nll_partial_kernel(const T* __restrict__ mean, const T* __restrict__ logvar,
                                   const T* __restrict__ target, bool target_shared, int64_t N,
                                   T* __restrict__ partial) {
  const int64_t e = blockIdx.y;
  const T* m = mean + e * N;
  const T* lv = logvar + e * N;
  const T* y = target_shared ? target : target + e * N;
  double acc = 0.0;  // double accumulation, as the CPU kernel
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < N;
       i += int64_t(gridDim.x) * kThreads) {
    acc += static_cast<double>(nll::value(m[i], lv[i], y[i]));
  }
  acc = cuda::block_sum<kThreads>(acc);
  if (threadIdx.x == 0) partial[e * gridDim.x + blockIdx.x] = static_cast<T>(acc);
}

template <typename T>
__global__ void nll_finalize_kernel(const T* __restrict__ partial, int64_t G, int64_t N,
                                    T* __restrict__ out) {
  const int64_t e = blockIdx.x;
  double acc = 0.0;
  for (int64_t g = threadIdx.x; g < G; g += kThreads) acc += static_cast<double>(partial[e * G + g]);
  acc = cuda::block_sum<kThreads>(acc);
  if (threadIdx.x == 0) out[e] = static_cast<T>(acc / static_cast<double>(N));
}

template <typename T>
__global__ void nll_backward_kernel(const T* __restrict__ grad, const T* __restrict__ mean,
                                    const T* __restrict__ logvar, const T* __restrict__ target,
                                    bool target_shared, int64_t E, int64_t N, bool elementwise,
                                    T* __restrict__ d_mean, T* __restrict__ d_logvar,
                                    T* __restrict__ d_target) {
  const T inv_n = T(1) / static_cast<T>(N);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N;
       i += int64_t(gridDim.x) * blockDim.x) {
    T target_acc = T(0);
    for (int64_t e = 0; e < E; ++e) {
      const int64_t k = e * N + i;
      const T y = target_shared ? target[i] : target[k];
      const T g = elementwise ? grad[k] : grad[e] * inv_n;
      T dm, dlv;
      nll::grad(mean[k], logvar[k], y, g, &dm, &dlv);
      d_mean[k] = dm;
      d_logvar[k] = dlv;
      if (target_shared) {
        target_acc -= dm;
      } else {
        d_target[k] = -dm;
      }
    }
    if (target_shared) d_target[i] = target_acc;
  }
}

int grid_for(int64_t n) {
  int64_t g = (n + kThreads - 1) / kThreads;
  if (g > 65535 * 8) g = 65535 * 8;
  return static_cast<int>(g < 1 ? 1 : g);
}

}  // namespace

int64_t gaussian_nll_cuda_workspace(int64_t E, int64_t N, bool elementwise) {
  return elementwise ? 0 : E * blocks_per_member(N);
}

template <typename T>
int gaussian_nll_forward_cuda(const T* mean, const T* logvar, const T* target, bool target_shared,
                              int64_t E, int64_t N, bool elementwise, T* out, T* workspace,
                              void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (elementwise) {
    nll_elementwise_kernel<T><<<grid_for(E * N), kThreads, 0, s>>>(mean, logvar, target,
                                                                   target_shared, E, N, out);
  } else {
    const int64_t G = blocks_per_member(N);
    dim3 grid(static_cast<unsigned>(G), static_cast<unsigned>(E));
    nll_partial_kernel<T><<<grid, kThreads, 0, s>>>(mean, logvar, target, target_shared, N,
                                                    workspace);
    nll_finalize_kernel<T><<<static_cast<unsigned>(E), kThreads, 0, s>>>(workspace, G, N, out);
  }
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int gaussian_nll_backward_cuda(const T* grad, const T* mean, const T* logvar, const T* target,
                               bool target_shared, int64_t E, int64_t N, bool elementwise,
                               T* d_mean, T* d_logvar, T* d_target, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  nll_backward_kernel<T><<<grid_for(N), kThreads, 0, s>>>(grad, mean, logvar, target,
                                                          target_shared, E, N, elementwise,
                                                          d_mean, d_logvar, d_target);
  return static_cast<int>(cudaGetLastError());
}

#define FASTMBRL_INSTANTIATE(T)                                                               \
  template int gaussian_nll_forward_cuda<T>(const T*, const T*, const T*, bool, int64_t,      \
                                            int64_t, bool, T*, T*, void*);                   \
  template int gaussian_nll_backward_cuda<T>(const T*, const T*, const T*, const T*, bool,    \
                                             int64_t, int64_t, bool, T*, T*, T*, void*);
FASTMBRL_INSTANTIATE(float)
FASTMBRL_INSTANTIATE(double)
#undef FASTMBRL_INSTANTIATE

}  // namespace fastmbrl
