// CPU kernel of the VaGraM loss: one pass over memory writes each member's loss and the unit
// gradient dpred. Branch-free inner loops vectorise (built with -fno-trapping-math
// -fno-math-errno -fopenmp-simd; see CMakeLists.txt); member sums accumulate in double.
//
// Bounded: a member is processed in tiles of kTile elements; per tile, w = sum_k g_k^2 is built
// head by head in a stack buffer (each head's slice streamed once, contiguous), then one loop
// writes dpred and adds w * delta^2 to the member's sum.
// Unbounded: row by row (vagram::unbounded_row); a row of each head stays in L1 between the
// dot product s_k and the gradient update.
#include <algorithm>

#include "fastmbrl/vagram.h"

namespace fastmbrl {
namespace vagram_cpu {

constexpr int64_t kTile = 512;

template <typename T>
FASTMBRL_CPU_CLONES double bounded_member(const T* __restrict__ p, const T* __restrict__ y,
                                          const T* __restrict__ g, int64_t S, int64_t N,
                                          int64_t K, T scale, T* __restrict__ dp) {
  double acc = 0.0;
  T w[kTile];
  for (int64_t i0 = 0; i0 < N; i0 += kTile) {
    const int64_t n = std::min(kTile, N - i0);
    const T* __restrict__ g0 = g + i0;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) w[j] = g0[j] * g0[j];
    for (int64_t k = 1; k < K; ++k) {
      const T* __restrict__ gk = g0 + k * S;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) w[j] += gk[j] * gk[j];
    }
    const T* __restrict__ pt = p + i0;
    const T* __restrict__ yt = y + i0;
    T* __restrict__ dpt = dp + i0;
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < n; ++j) {
      const T delta = pt[j] - yt[j];
      dpt[j] = vagram::bounded_grad(w[j], delta, scale);
      acc += static_cast<double>(vagram::bounded_value(w[j], delta));
    }
  }
  return acc;
}

template <typename T>
FASTMBRL_CPU_CLONES double unbounded_member(const T* __restrict__ p, const T* __restrict__ y,
                                            const T* __restrict__ g, int64_t S, int64_t B,
                                            int64_t O, int64_t K, T scale, T* __restrict__ dp) {
  double acc = 0.0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t off = b * O;
    acc += vagram::unbounded_row<T, double>(p + off, y + off, g + off, S, O, K, scale, dp + off);
  }
  return acc;
}

}  // namespace vagram_cpu

template <typename T>
void vagram_forward_cpu(const T* pred, const T* target, const T* value_grad, bool target_shared,
                        int64_t E, int64_t B, int64_t O, int64_t K, bool bounded, T* member_loss,
                        T* dpred) {
  const int64_t N = B * O;
  const int64_t S = E * N;  // stride between value heads
  const double norm = vagram::loss_norm(B, O, K, bounded);
  const T scale = static_cast<T>(2.0 / norm);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t off = e * N;
    const T* y = target_shared ? target : target + off;
    const double sum =
        bounded ? vagram_cpu::bounded_member<T>(pred + off, y, value_grad + off, S, N, K, scale,
                                                dpred + off)
                : vagram_cpu::unbounded_member<T>(pred + off, y, value_grad + off, S, B, O, K,
                                                  scale, dpred + off);
    member_loss[e] = static_cast<T>(sum / norm);
  }
}

#define FASTMBRL_INSTANTIATE(T)                                                              \
  template void vagram_forward_cpu<T>(const T*, const T*, const T*, bool, int64_t, int64_t,  \
                                      int64_t, int64_t, bool, T*, T*);
FASTMBRL_INSTANTIATE(float)
FASTMBRL_INSTANTIATE(double)
#undef FASTMBRL_INSTANTIATE

}  // namespace fastmbrl
