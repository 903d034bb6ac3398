// CUDA kernels of the value-difference loss (compiled, not yet verified on a GPU).
//
// Forward, elementwise: one thread per element writes loss and unit gradient.
// Forward, reduced: G blocks grid-stride over all n = E*N elements, write the unit gradient and
// each block's partial sum to workspace[block]; one block then adds the G partials in a fixed
// order (in double) and writes the total. Deterministic, no atomics.
// Backward: d_model[k] = g[k] * unit[k] (elementwise) or g[0] * unit[k].
#include <cuda_runtime.h>

#include "fastmbrl/cuda_reduce.cuh"
#include "fastmbrl/value_aware.h"

namespace fastmbrl {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1024;

int64_t reduce_blocks(int64_t n) { return cuda::reduction_blocks(n, kThreads * 4, kMaxBlocks); }

int grid_for(int64_t n) {
  int64_t g = (n + kThreads - 1) / kThreads;
  if (g > 65535 * 8) g = 65535 * 8;
  return static_cast<int>(g < 1 ? 1 : g);
}

template <typename T, int Norm>
__global__ void va_elementwise_kernel(const T* __restrict__ q_true, const T* __restrict__ q_model,
                                      bool shared, int64_t N, int64_t n, T* __restrict__ loss,
                                      T* __restrict__ unit) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n;
       k += int64_t(gridDim.x) * blockDim.x) {
    const T y = shared ? q_true[k % N] : q_true[k];
    T l, u;
    value_aware::value_and_unit<T, Norm>(y, q_model[k], &l, &u);
    loss[k] = l;
    unit[k] = u;
  }
}

template <typename T, int Norm>
__global__ void va_partial_kernel(const T* __restrict__ q_true, const T* __restrict__ q_model,
                                  bool shared, int64_t N, int64_t n, T* __restrict__ unit,
                                  T* __restrict__ partial) {
  double acc = 0.0;  // double accumulation, as the CPU kernel
  for (int64_t k = blockIdx.x * int64_t(kThreads) + threadIdx.x; k < n;
       k += int64_t(gridDim.x) * kThreads) {
    const T y = shared ? q_true[k % N] : q_true[k];
    T l, u;
    value_aware::value_and_unit<T, Norm>(y, q_model[k], &l, &u);
    unit[k] = u;
    acc += static_cast<double>(l);
  }
  acc = cuda::block_sum<kThreads>(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = static_cast<T>(acc);
}

template <typename T>
__global__ void va_finalize_kernel(const T* __restrict__ partial, int64_t G, T* __restrict__ out) {
  double acc = 0.0;
  for (int64_t g = threadIdx.x; g < G; g += kThreads) acc += static_cast<double>(partial[g]);
  acc = cuda::block_sum<kThreads>(acc);
  if (threadIdx.x == 0) out[0] = static_cast<T>(acc);
}

template <typename T, int Norm>
void launch_forward(const T* q_true, const T* q_model, bool shared, int64_t N, int64_t n,
                    bool elementwise, T* loss, T* unit, T* workspace, cudaStream_t s) {
  if (elementwise) {
    va_elementwise_kernel<T, Norm><<<grid_for(n), kThreads, 0, s>>>(q_true, q_model, shared, N,
                                                                    n, loss, unit);
  } else {
    const int64_t G = reduce_blocks(n);
    va_partial_kernel<T, Norm><<<static_cast<unsigned>(G), kThreads, 0, s>>>(
        q_true, q_model, shared, N, n, unit, workspace);
    va_finalize_kernel<T><<<1, kThreads, 0, s>>>(workspace, G, loss);
  }
}

}  // namespace

int64_t value_aware_cuda_workspace(int64_t n, bool elementwise) {
  return elementwise ? 0 : reduce_blocks(n);
}

template <typename T>
int value_aware_forward_cuda(const T* q_true, const T* q_model, bool q_true_shared, int64_t E,
                             int64_t N, int norm, bool elementwise, T* loss, T* unit,
                             T* workspace, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int64_t n = E * N;
  if (norm == 1) {
    launch_forward<T, 1>(q_true, q_model, q_true_shared, N, n, elementwise, loss, unit,
                         workspace, s);
  } else {
    launch_forward<T, 2>(q_true, q_model, q_true_shared, N, n, elementwise, loss, unit,
                         workspace, s);
  }
  return static_cast<int>(cudaGetLastError());
}

#define FASTMBRL_INSTANTIATE(T)                                                               \
  template int value_aware_forward_cuda<T>(const T*, const T*, bool, int64_t, int64_t, int,   \
                                           bool, T*, T*, T*, void*);
FASTMBRL_INSTANTIATE(float)
FASTMBRL_INSTANTIATE(double)
#undef FASTMBRL_INSTANTIATE

}  // namespace fastmbrl
