// CPU kernels of the value-difference loss: one pass over memory writes the loss (or adds it to
// the total) and the unit gradient. Loops are branch-free, with the norm and the reduction as
// template parameters, so the compiler vectorises them (see CMakeLists.txt for the flags).
#include "fastmbrl/value_aware.h"

namespace fastmbrl {
namespace value_aware_cpu {

template <typename T, int Norm>
FASTMBRL_CPU_CLONES void row_elementwise(const T* __restrict__ y, const T* __restrict__ q,
                                         int64_t N, T* __restrict__ loss,
                                         T* __restrict__ unit) {
#pragma omp simd
  for (int64_t i = 0; i < N; ++i) {
    T l, u;
    value_aware::value_and_unit<T, Norm>(y[i], q[i], &l, &u);
    loss[i] = l;
    unit[i] = u;
  }
}

// The sum runs kLanes independent accumulators (a single vector accumulator would make the loop
// latency-bound on the adds) over chunks of kChunk elements, in T; the chunks' lane sums are
// added in double. The order is fixed, so the result is deterministic.
constexpr int kLanes = 64;
constexpr int64_t kChunk = 4096;

template <typename T, int Norm>
FASTMBRL_CPU_CLONES double row_sum(const T* __restrict__ y, const T* __restrict__ q, int64_t N,
                                   T* __restrict__ unit) {
  double total = 0.0;
  for (int64_t c0 = 0; c0 < N; c0 += kChunk) {
    const int64_t c1 = c0 + kChunk < N ? c0 + kChunk : N;
    T acc[kLanes] = {};
    int64_t i = c0;
    for (; i + kLanes <= c1; i += kLanes) {
#pragma omp simd
      for (int j = 0; j < kLanes; ++j) {
        T l, u;
        value_aware::value_and_unit<T, Norm>(y[i + j], q[i + j], &l, &u);
        unit[i + j] = u;
        acc[j] += l;
      }
    }
    for (; i < c1; ++i) {
      T l, u;
      value_aware::value_and_unit<T, Norm>(y[i], q[i], &l, &u);
      unit[i] = u;
      acc[0] += l;
    }
    for (int j = 0; j < kLanes; ++j) total += static_cast<double>(acc[j]);
  }
  return total;
}

template <typename T, int Norm>
void forward(const T* q_true, const T* q_model, bool shared, int64_t E, int64_t N,
             bool elementwise, T* loss, T* unit) {
  // a per-member q_true is one contiguous row of E*N elements
  const int64_t rows = shared ? E : 1;
  const int64_t len = shared ? N : E * N;
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t off = r * len;
    if (elementwise) {
      row_elementwise<T, Norm>(q_true + (shared ? 0 : off), q_model + off, len, loss + off,
                               unit + off);
    } else {
      total += row_sum<T, Norm>(q_true + (shared ? 0 : off), q_model + off, len, unit + off);
    }
  }
  if (!elementwise) loss[0] = static_cast<T>(total);
}

}  // namespace value_aware_cpu

template <typename T>
void value_aware_forward_cpu(const T* q_true, const T* q_model, bool q_true_shared, int64_t E,
                             int64_t N, int norm, bool elementwise, T* loss, T* unit) {
  if (norm == 1) {
    value_aware_cpu::forward<T, 1>(q_true, q_model, q_true_shared, E, N, elementwise, loss, unit);
  } else {
    value_aware_cpu::forward<T, 2>(q_true, q_model, q_true_shared, E, N, elementwise, loss, unit);
  }
}

#define FASTMBRL_INSTANTIATE(T)                                                              \
  template void value_aware_forward_cpu<T>(const T*, const T*, bool, int64_t, int64_t, int,  \
                                           bool, T*, T*);
FASTMBRL_INSTANTIATE(float)
FASTMBRL_INSTANTIATE(double)
#undef FASTMBRL_INSTANTIATE

}  // namespace fastmbrl
