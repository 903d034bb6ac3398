// VaGraM, the value-gradient weighted model loss (Voelcker et al., ICLR 2022), fused forward:
// one pass over memory writes both the per-member loss and its gradient with respect to pred.
//
//   delta[e, b, d] = pred[e, b, d] - target[., b, d]        target per member [E, B, O] or shared [B, O]
//   g[k, e, b, d]  value gradients of K heads, [K, E, B, O] (stride S = E*B*O between heads)
//
//   bounded    member_loss[e] = 1/(B*O*K) sum_{b,d} sum_k (g_k delta)^2
//              dpred[e,b,d]   = 2/(B*O*K) sum_k g_k^2 delta
//   unbounded  member_loss[e] = 1/(B*K) sum_b sum_k s_k^2,   s_k = sum_d g_{k,d} delta_d
//              dpred[e,b,d]   = 2/(B*K) sum_k s_k g_{k,d}
//
// dpred is the gradient of member_loss[e] with respect to pred[e] ("unit" gradient); the
// autograd formula scales it by the incoming per-member gradient, so the backward never rereads
// value_grad (the largest input).
#pragma once

#include "fastmbrl/common.h"

namespace fastmbrl {
namespace vagram {

// Bounded mode, one element: w = sum_k g_k^2 (accumulated by the caller over the heads).
// Loss contribution w * delta^2; unit gradient scale * w * delta with scale = 2/(B*O*K).
template <typename T>
FASTMBRL_HD T bounded_value(T w, T delta) {
  return w * delta * delta;
}
template <typename T>
FASTMBRL_HD T bounded_grad(T w, T delta, T scale) {
  return scale * w * delta;
}

// `#pragma omp simd` on the host (built with -fopenmp-simd), nothing in CUDA sources.
#if defined(__CUDACC__)
#define FASTMBRL_VAGRAM_SIMD
#define FASTMBRL_VAGRAM_SIMD_SUM(var)
#else
#define FASTMBRL_VAGRAM_PRAGMA(x) _Pragma(#x)
#define FASTMBRL_VAGRAM_SIMD FASTMBRL_VAGRAM_PRAGMA(omp simd)
#define FASTMBRL_VAGRAM_SIMD_SUM(var) FASTMBRL_VAGRAM_PRAGMA(omp simd reduction(+ : var))
#endif

// Unbounded mode, one row (e, b): p, y, dp point at the row's O elements, g at head 0's row
// (head k at g + k * S). Writes dp[d] = scale * sum_k s_k g_{k,d} and returns sum_k s_k^2
// accumulated in Acc (double on the CPU).
template <typename T, typename Acc>
FASTMBRL_HD Acc unbounded_row(const T* __restrict__ p, const T* __restrict__ y,
                              const T* __restrict__ g, int64_t S, int64_t O, int64_t K, T scale,
                              T* __restrict__ dp) {
  Acc loss = Acc(0);
  for (int64_t k = 0; k < K; ++k) {
    const T* __restrict__ gk = g + k * S;
    T s = T(0);
    FASTMBRL_VAGRAM_SIMD_SUM(s)
    for (int64_t d = 0; d < O; ++d) s += gk[d] * (p[d] - y[d]);
    loss += static_cast<Acc>(s) * static_cast<Acc>(s);
    const T c = scale * s;
    if (k == 0) {
      FASTMBRL_VAGRAM_SIMD
      for (int64_t d = 0; d < O; ++d) dp[d] = c * gk[d];
    } else {
      FASTMBRL_VAGRAM_SIMD
      for (int64_t d = 0; d < O; ++d) dp[d] += c * gk[d];
    }
  }
  return loss;
}

// Normalisations of the member mean: n = B*O*K (bounded) or B*K (unbounded).
FASTMBRL_HD double loss_norm(int64_t B, int64_t O, int64_t K, bool bounded) {
  return static_cast<double>(bounded ? B * O : B) * static_cast<double>(K);
}

}  // namespace vagram

// ---- CPU entry point (src/cpp/vagram_cpu.cpp) ------------------------------------------
// pred [E, B, O]; target [E, B, O] or [B, O] (target_shared); value_grad [K, E, B, O].
// Writes member_loss[E] and dpred[E, B, O] (gradient of member_loss[e] w.r.t. pred[e]).
template <typename T>
void vagram_forward_cpu(const T* pred, const T* target, const T* value_grad, bool target_shared,
                        int64_t E, int64_t B, int64_t O, int64_t K, bool bounded, T* member_loss,
                        T* dpred);

// ---- CUDA entry points (src/cuda/vagram.cu); return a cudaError_t as int ---------------
// Number of elements of type T the forward needs as workspace (per-block partial sums).
int64_t vagram_cuda_workspace(int64_t E, int64_t B, int64_t O, bool bounded);

template <typename T>
int vagram_forward_cuda(const T* pred, const T* target, const T* value_grad, bool target_shared,
                        int64_t E, int64_t B, int64_t O, int64_t K, bool bounded, T* member_loss,
                        T* dpred, T* workspace, void* stream);

}  // namespace fastmbrl
