// CPU kernels of the ensemble Gaussian NLL: one pass over memory, double accumulation.
#include "fastmbrl/gaussian_nll.h"

namespace fastmbrl {

template <typename T>
void gaussian_nll_forward_cpu(const T* mean, const T* logvar, const T* target, bool target_shared,
                              int64_t E, int64_t N, bool elementwise, T* out) {
  for (int64_t e = 0; e < E; ++e) {
    const T* m = mean + e * N;
    const T* lv = logvar + e * N;
    const T* y = target_shared ? target : target + e * N;
    if (elementwise) {
      T* o = out + e * N;
      for (int64_t i = 0; i < N; ++i) o[i] = nll::value(m[i], lv[i], y[i]);
    } else {
      double acc = 0.0;
      for (int64_t i = 0; i < N; ++i) acc += static_cast<double>(nll::value(m[i], lv[i], y[i]));
      out[e] = static_cast<T>(acc / static_cast<double>(N));
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
    const T g_member = elementwise ? T(0) : grad[e] * inv_n;
    for (int64_t i = 0; i < N; ++i) {
      const T g = elementwise ? grad[off + i] : g_member;
      T dm, dlv;
      nll::grad(mean[off + i], logvar[off + i], y[i], g, &dm, &dlv);
      d_mean[off + i] = dm;
      d_logvar[off + i] = dlv;
      if (target_shared) {
        d_target[i] -= dm;
      } else {
        d_target[off + i] = -dm;
      }
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
