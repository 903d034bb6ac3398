// CPU instantiation of the ensemble MLP epilogues (the per-element math shared with the CUDA
// kernels). Not on the op's CPU hot path: torch's vectorised kernels measured faster (see
// include/fastmbrl/ensemble_mlp.h); tests use these to check the shared math without a GPU.
//
// Each loop is specialised per activation outside the element loop so the compiler sees a
// straight-line body; the head's bound-gradient sums over rows are accumulated in double.
#include <vector>

#include "fastmbrl/ensemble_mlp.h"

namespace fastmbrl {
namespace {

template <typename T, int A>
void act_forward_loop(const T* z, T* h, int64_t n) {
  for (int64_t i = 0; i < n; ++i) h[i] = mlp::act<T>(A, z[i]);
}

template <typename T, int A>
void act_backward_loop(const T* g, const T* z, const T* h, T* dz, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dz[i] = g[i] * mlp::act_grad<T>(A, z[i], h[i]);
}

}  // namespace

template <typename T>
void mlp_act_forward_cpu(int act, const T* z, T* h, int64_t n) {
  switch (act) {
    case mlp::kSilu:
      return act_forward_loop<T, mlp::kSilu>(z, h, n);
    case mlp::kRelu:
      return act_forward_loop<T, mlp::kRelu>(z, h, n);
    case mlp::kTanh:
      return act_forward_loop<T, mlp::kTanh>(z, h, n);
    default:
      return act_forward_loop<T, mlp::kNone>(z, h, n);
  }
}

template <typename T>
void mlp_act_backward_cpu(int act, const T* g, const T* z, const T* h, T* dz, int64_t n) {
  switch (act) {
    case mlp::kSilu:
      return act_backward_loop<T, mlp::kSilu>(g, z, h, dz, n);
    case mlp::kRelu:
      return act_backward_loop<T, mlp::kRelu>(g, z, h, dz, n);
    case mlp::kTanh:
      return act_backward_loop<T, mlp::kTanh>(g, z, h, dz, n);
    default:
      return act_backward_loop<T, mlp::kNone>(g, z, h, dz, n);
  }
}

template <typename T>
void mlp_head_forward_cpu(T* y, const T* lo, const T* hi, int64_t rows, int64_t D, T* raw) {
  for (int64_t r = 0; r < rows; ++r) {
    T* lv = y + r * 2 * D + D;
    T* rw = raw + r * D;
    for (int64_t d = 0; d < D; ++d) {
      rw[d] = lv[d];
      lv[d] = mlp::bound(lv[d], lo[d], hi[d]);
    }
  }
}

template <typename T>
void mlp_head_backward_cpu(const T* g, const T* raw, const T* lo, const T* hi, int64_t rows,
                           int64_t D, T* dy, T* d_lo, T* d_hi) {
  std::vector<double> acc_lo(static_cast<size_t>(D), 0.0), acc_hi(static_cast<size_t>(D), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const T* gr = g + r * 2 * D;
    T* dr = dy + r * 2 * D;
    const T* rw = raw + r * D;
    for (int64_t d = 0; d < D; ++d) dr[d] = gr[d];
    for (int64_t d = 0; d < D; ++d) {
      T d_raw, dl, dh;
      mlp::bound_grad(rw[d], lo[d], hi[d], gr[D + d], &d_raw, &dl, &dh);
      dr[D + d] = d_raw;
      acc_lo[d] += static_cast<double>(dl);
      acc_hi[d] += static_cast<double>(dh);
    }
  }
  for (int64_t d = 0; d < D; ++d) {
    d_lo[d] = static_cast<T>(acc_lo[d]);
    d_hi[d] = static_cast<T>(acc_hi[d]);
  }
}

#define FASTMBRL_INSTANTIATE(T)                                                               \
  template void mlp_act_forward_cpu<T>(int, const T*, T*, int64_t);                           \
  template void mlp_act_backward_cpu<T>(int, const T*, const T*, const T*, T*, int64_t);      \
  template void mlp_head_forward_cpu<T>(T*, const T*, const T*, int64_t, int64_t, T*);        \
  template void mlp_head_backward_cpu<T>(const T*, const T*, const T*, const T*, int64_t,     \
                                         int64_t, T*, T*, T*);
FASTMBRL_INSTANTIATE(float)
FASTMBRL_INSTANTIATE(double)
#undef FASTMBRL_INSTANTIATE

}  // namespace fastmbrl
