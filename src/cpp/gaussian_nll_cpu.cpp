// CPU kernels of the ensemble Gaussian NLL: one pass over memory. Loops are written without
// branches so the compiler vectorises them (built with -fno-trapping-math -fno-math-errno
// -fopenmp-simd; see CMakeLists.txt); member sums accumulate in double.
#include "fastmbrl/gaussian_nll.h"

namespace fastmbrl {
namespace nll_cpu {

// One member's loss, elementwise or summed (in double).
template <typename T>
FASTMBRL_CPU_CLONES void member_elementwise(const T* __restrict__ m, const T* __restrict__ lv,
                                            const T* __restrict__ y, int64_t N,
                                            T* __restrict__ o) {
#pragma omp simd
  for (int64_t i = 0; i < N; ++i) o[i] = nll::value(m[i], lv[i], y[i]);
}

template <typename T>
FASTMBRL_CPU_CLONES double member_sum(const T* __restrict__ m, const T* __restrict__ lv,
                                      const T* __restrict__ y, int64_t N) {
  double acc = 0.0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < N; ++i) acc += static_cast<double>(nll::value(m[i], lv[i], y[i]));
  return acc;
}

// One member's gradients; `Elementwise` and `Shared` are compile-time so the loop has no branch.
template <typename T, bool Elementwise, bool Shared>
FASTMBRL_CPU_CLONES void backward_member(const T* __restrict__ grad, T g_member, const T* __restrict__ m,
                         const T* __restrict__ lv, const T* __restrict__ y, int64_t N,
                         T* __restrict__ dm, T* __restrict__ dlv, T* __restrict__ dy) {
#pragma omp simd
  for (int64_t i = 0; i < N; ++i) {
    const T g = Elementwise ? grad[i] : g_member;
    T a, b;
    nll::grad(m[i], lv[i], y[i], g, &a, &b);
    dm[i] = a;
    dlv[i] = b;
    if (Shared) {
      dy[i] -= a;
    } else {
      dy[i] = -a;
    }
  }
}

}  // namespace nll_cpu

template <typename T>
void gaussian_nll_forward_cpu(const T* mean, const T* logvar, const T* target, bool target_shared,
                              int64_t E, int64_t N, bool elementwise, T* out) {
  for (int64_t e = 0; e < E; ++e) {
    const T* m = mean + e * N;
    const T* lv = logvar + e * N;
    const T* y = target_shared ? target : target + e * N;
    if (elementwise) {
      nll_cpu::member_elementwise<T>(m, lv, y, N, out + e * N);
    } else {
      out[e] = static_cast<T>(nll_cpu::member_sum<T>(m, lv, y, N) / static_cast<double>(N));
    }
  }
}

template <typename T>
void gaussian_nll_backward_cpu(const T* grad, const T* mean, const T* logvar, const T* target,
                               bool target_shared, int64_t E, int64_t N, bool elementwise,
                               T* d_mean, T* d_logvar, T* d_target) {
  if (target_shared) {
    for (int64_t i = 0; i < N; ++i) d_target[i] = T(0);
  }
  const T inv_n = T(1) / static_cast<T>(N);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t off = e * N;
    const T* y = target_shared ? target : target + off;
    T* dy = target_shared ? d_target : d_target + off;
    const T* g = elementwise ? grad + off : nullptr;
    const T g_member = elementwise ? T(0) : grad[e] * inv_n;
    const T *m = mean + off, *lv = logvar + off;
    T *dm = d_mean + off, *dlv = d_logvar + off;
    if (elementwise && target_shared) {
      nll_cpu::backward_member<T, true, true>(g, g_member, m, lv, y, N, dm, dlv, dy);
    } else if (elementwise) {
      nll_cpu::backward_member<T, true, false>(g, g_member, m, lv, y, N, dm, dlv, dy);
    } else if (target_shared) {
      nll_cpu::backward_member<T, false, true>(g, g_member, m, lv, y, N, dm, dlv, dy);
    } else {
      nll_cpu::backward_member<T, false, false>(g, g_member, m, lv, y, N, dm, dlv, dy);
    }
  }
}

#define FASTMBRL_INSTANTIATE(T)                                                              \
  template void gaussian_nll_forward_cpu<T>(const T*, const T*, const T*, bool, int64_t,     \
                                            int64_t, bool, T*);                             \
  template void gaussian_nll_backward_cpu<T>(const T*, const T*, const T*, const T*, bool,   \
                                             int64_t, int64_t, bool, T*, T*, T*);
FASTMBRL_INSTANTIATE(float)
FASTMBRL_INSTANTIATE(double)
#undef FASTMBRL_INSTANTIATE

}  // namespace fastmbrl
