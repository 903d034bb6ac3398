// Batched ensemble MLP (E independent MLPs, mbrl-lib's EnsembleLinearLayer layout W[E, in, out]):
//
//   z_l = h_{l-1} @ W_l + b_l          h_0 = x ([E, B, in], or [B, in] shared by the members)
//   h_l = act(z_l)                     hidden layers, act in {silu, relu, tanh}
//   y   = h_{L-1} @ W_L + b_L          last layer, no activation
//
// Optional Gaussian head (mbrl-lib GaussianMLP): the last layer has 2*D outputs; the logvar half
// (columns D..2D-1) is bounded softly, with raw = y[..., D + d]:
//
//   u  = max[d] - raw;   lv1 = max[d] - softplus(u)
//   v  = lv1 - min[d];   out = min[d] + softplus(v)
//
// and its gradients, with s(t) = sigmoid(t) = softplus'(t):
//
//   d out/d raw = s(v) s(u);   d out/d max = s(v) (1 - s(u));   d out/d min = 1 - s(v)
//
// Per-element math lives here as FASTMBRL_HD functions shared by the CPU and CUDA kernels.
// The CUDA kernels compute the GEMMs themselves (no cuBLAS on the build machines) with these
// epilogues fused. On CPU the op uses torch's GEMMs and torch's vectorised elementwise kernels,
// which measured faster than the scalar loops below (libm exp/log1p do not vectorise without
// -ffast-math); the CPU entry points remain as the host instantiation of the shared math, so the
// tests check the exact functions the CUDA epilogues use on a machine without a GPU.
#pragma once

#include "fastmbrl/common.h"

namespace fastmbrl {
namespace mlp {

// Activation codes shared with fastmbrl/ops/ensemble_mlp.py.
constexpr int kSilu = 0;
constexpr int kRelu = 1;
constexpr int kTanh = 2;
constexpr int kNone = -1;

FASTMBRL_HD float fm_log1p(float x) { return log1pf(x); }
FASTMBRL_HD double fm_log1p(double x) { return log1p(x); }
FASTMBRL_HD float fm_tanh(float x) { return tanhf(x); }
FASTMBRL_HD double fm_tanh(double x) { return tanh(x); }

template <typename T>
FASTMBRL_HD T sigmoid(T x) {
  return T(1) / (T(1) + fm_exp(-x));
}

// torch.nn.functional.softplus (beta 1, threshold 20) and its derivative, as torch computes them.
template <typename T>
FASTMBRL_HD T softplus(T x) {
  return x > T(20) ? x : fm_log1p(fm_exp(x));
}
template <typename T>
FASTMBRL_HD T softplus_grad(T x) {
  if (x > T(20)) return T(1);
  const T z = fm_exp(x);
  return z / (z + T(1));
}

template <typename T>
FASTMBRL_HD T act(int a, T z) {
  switch (a) {
    case kSilu:
      return z * sigmoid(z);
    case kRelu:
      return z > T(0) ? z : T(0);
    case kTanh:
      return fm_tanh(z);
    default:
      return z;
  }
}

// d act / d z, from the pre-activation z and the post-activation h = act(z).
template <typename T>
FASTMBRL_HD T act_grad(int a, T z, T h) {
  switch (a) {
    case kSilu: {
      const T s = sigmoid(z);
      return s * (T(1) + z * (T(1) - s));
    }
    case kRelu:
      return h > T(0) ? T(1) : T(0);
    case kTanh:
      return T(1) - h * h;
    default:
      return T(1);
  }
}

// Bounded logvar from the raw last-layer output.
template <typename T>
FASTMBRL_HD T bound(T raw, T lo, T hi) {
  const T lv1 = hi - softplus(hi - raw);
  return lo + softplus(lv1 - lo);
}

// 1 - softplus_grad(x) = sigmoid(-x), computed without the cancellation of 1 - sigmoid(x) (which
// is exactly 0 in float from x ~ 17 on); 0 above the threshold, where softplus is the identity.
template <typename T>
FASTMBRL_HD T softplus_grad_complement(T x) {
  if (x > T(20)) return T(0);
  return T(1) / (fm_exp(x) + T(1));
}

// g times the partial derivatives of bound(raw, lo, hi) with respect to raw, lo and hi.
template <typename T>
FASTMBRL_HD void bound_grad(T raw, T lo, T hi, T g, T* d_raw, T* d_lo, T* d_hi) {
  const T u = hi - raw;
  const T su = softplus_grad(u);
  const T v = (hi - softplus(u)) - lo;
  const T sv = softplus_grad(v);
  *d_raw = g * sv * su;
  *d_hi = g * sv * softplus_grad_complement(u);
  *d_lo = g * softplus_grad_complement(v);
}

}  // namespace mlp

// ---- CPU entry points (src/cpp/ensemble_mlp_cpu.cpp): the epilogues as scalar loops --------
// h[i] = act(z[i]) for i < n.
template <typename T>
void mlp_act_forward_cpu(int act, const T* z, T* h, int64_t n);

// dz[i] = g[i] * act'(z[i], h[i]) for i < n.
template <typename T>
void mlp_act_backward_cpu(int act, const T* g, const T* z, const T* h, T* dz, int64_t n);

// y is [rows, 2D] (the last layer's output, bias added). Copies the logvar half into raw
// [rows, D] and replaces it in place with bound(raw, lo, hi).
template <typename T>
void mlp_head_forward_cpu(T* y, const T* lo, const T* hi, int64_t rows, int64_t D, T* raw);

// g [rows, 2D] is the gradient of the head output. Writes dy [rows, 2D] (the gradient of the
// raw last-layer output) and d_lo, d_hi [D] (summed over rows; double accumulation).
template <typename T>
void mlp_head_backward_cpu(const T* g, const T* raw, const T* lo, const T* hi, int64_t rows,
                           int64_t D, T* dy, T* d_lo, T* d_hi);

// ---- CUDA entry points (src/cuda/ensemble_mlp.cu); return a cudaError_t as int -------------
// COMPILED FOR sm_80/sm_90 BUT NOT YET VERIFIED ON A GPU (no device on the development machine).
//
// One layer forward, for every member e < E (grid z):
//   v[e, m, n] = sum_k x[e, m, k] W[e, k, n] + b[e, n]      m < M (batch), k < K (in), n < N (out)
// x is [E, M, K] (x_member_stride = M*K) or shared [M, K] (x_member_stride = 0).
// Epilogue: act >= 0: z = v (if z != nullptr), h = act(v).  act < 0: h = v, and when D > 0
// (Gaussian head, N = 2D) the logvar half is bounded with lo/hi and its raw values go to raw
// [E, M, D]. Outputs are [E, M, N].
template <typename T>
int mlp_layer_forward_cuda(const T* x, int64_t x_member_stride, const T* W, const T* b, int64_t E,
                           int64_t M, int64_t K, int64_t N, int act, T* z, T* h, const T* lo,
                           const T* hi, int64_t D, T* raw, void* stream);

// Gradient with respect to a layer's input, dx[e, m, n] = sum_k dz[e, m, k] W[e, n, k]
// (dz [E, M, K], W [E, N, K], i.e. the layer has N inputs and K outputs), times
// act'(z_prev, h_prev) when act >= 0 (then dx is the previous layer's dz). Output [E, M, N].
template <typename T>
int mlp_layer_backward_input_cuda(const T* dz, const T* W, int64_t E, int64_t M, int64_t K,
                                  int64_t N, int act, const T* z_prev, const T* h_prev, T* dx,
                                  void* stream);

// Weight and bias gradients of one layer: dW[e, i, o] = sum_m x[e, m, i] dz[e, m, o] and
// db[e, o] = sum_m dz[e, m, o]; x is [E, M, I] or shared [M, I] (x_member_stride = 0), dz
// [E, M, O]. Deterministic (fixed-order sums, no atomics).
template <typename T>
int mlp_layer_backward_params_cuda(const T* x, int64_t x_member_stride, const T* dz, int64_t E,
                                   int64_t M, int64_t I, int64_t O, T* dW, T* db, void* stream);

// out[i] = sum_e ws[e * n + i] (the gradient of a shared input), fixed order.
template <typename T>
int mlp_sum_members_cuda(const T* ws, int64_t E, int64_t n, T* out, void* stream);

// Gaussian head backward, as mlp_head_backward_cpu; d_lo/d_hi reduced by one block per d.
template <typename T>
int mlp_head_backward_cuda(const T* g, const T* raw, const T* lo, const T* hi, int64_t rows,
                           int64_t D, T* dy, T* d_lo, T* d_hi, void* stream);

}  // namespace fastmbrl
