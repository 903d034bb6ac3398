// One imagined-rollout step of an ensemble dynamics model (fastmbrl.ops.ensemble_rollout_step).
//
// The MLP layers run per member segment (CPU: torch GEMMs called from Python; CUDA: the grouped
// GEMM kernels in src/cuda/rollout.cu). Both hand the last layer's raw output to the same fused
// epilogue, defined here once for the CPU and CUDA kernels. For row i of N (D = O + 1):
//
//   member mode (K = 1):   y_d = raw[pos[i], d],  lv_d = bound(raw[pos[i], D + d])
//   expectation (K elites): y_d = mean_k raw[k, i, d],  lv_d = mean_k bound(raw[k, i, D + d])
//   out_d     = y_d + exp(lv_d / 2) * noise(seed, offset, i, d)     (Gaussian and sample)
//             = y_d                                                 (otherwise)
//   next[i,o] = state[i,o] + out_o  if delta_mask[o] else out_o     (o < O)
//   reward[i] = out_O
//   done[i]   = not (all_o box(next[i,o]) [and all_o isfinite(next[i,o])])  (TerminationRule)
//
// bound(v) = min + softplus(max - softplus(max - v) - min), softplus as torch (threshold 20).
#pragma once

#include <cstdint>

#include "fastmbrl/common.h"
#include "fastmbrl/philox.h"

namespace fastmbrl {
namespace rollout {

enum Activation : int { kIdentity = 0, kSiLU = 1, kReLU = 2, kTanh = 3 };

FASTMBRL_HD float fm_log1p(float x) { return log1pf(x); }
FASTMBRL_HD double fm_log1p(double x) { return log1p(x); }
FASTMBRL_HD float fm_tanh(float x) { return tanhf(x); }
FASTMBRL_HD double fm_tanh(double x) { return tanh(x); }

template <typename T>
FASTMBRL_HD bool fm_isinf(T x) {
#if defined(__CUDA_ARCH__)
  return isinf(x);
#else
  return std::isinf(x);
#endif
}

template <typename T>
FASTMBRL_HD bool fm_isfinite(T x) {
#if defined(__CUDA_ARCH__)
  return isfinite(x);
#else
  return std::isfinite(x);
#endif
}

// torch.nn.functional.softplus with beta 1 and threshold 20.
template <typename T>
FASTMBRL_HD T softplus(T x) {
  return x > T(20) ? x : fm_log1p(fm_exp(x));
}

template <typename T>
FASTMBRL_HD T bound_logvar(T v, T lo, T hi) {
  const T lv = hi - softplus(hi - v);
  return lo + softplus(lv - lo);
}

template <typename T>
FASTMBRL_HD T activate(T x, int act) {
  switch (act) {
    case kSiLU:
      return x / (T(1) + fm_exp(-x));
    case kReLU:
      return x > T(0) ? x : T(0);
    case kTanh:
      return fm_tanh(x);
    default:
      return x;
  }
}

template <typename T>
struct EpilogueArgs {
  const T* raw;           // member mode: [R, out_w] rows in any order; expectation: [K, N, out_w]
  const int64_t* pos;     // member mode: raw row of row i (null: identity); ignored for K > 1
  int64_t K;              // 1 (member mode) or number of averaged elites (expectation)
  int64_t N, O, out_w;    // rows, observation size, last-layer width (2*D Gaussian, D otherwise)
  bool gaussian;          // raw holds (mean, raw logvar)
  bool sample;            // add exp(lv/2) * noise (Gaussian only)
  bool std_given;         // K == 1 only: raw[., D + d] already holds exp(lv_d / 2) (the CPU
                          // path computes bounds and exp with vectorized torch ops)
  const T* min_logvar;    // [D] (Gaussian only)
  const T* max_logvar;    // [D]
  const T* state;         // [N, O]
  const uint8_t* delta_mask;  // [O] bool, null: all true
  const T* term_lower;    // [O] (null: no TerminationRule, never done)
  const T* term_upper;    // [O]
  bool term_inclusive, term_check_finite;
  uint64_t seed, offset;
  T* next_state;          // [N, O]
  T* reward;              // [N]
  uint8_t* done;          // [N] bool
};

// Output dims d = 4*group .. 4*group+3 (those < D) of row i: writes next_state / reward and
// returns whether those observation dims keep the row alive under the TerminationRule.
template <typename T>
FASTMBRL_HD bool epilogue_group(const EpilogueArgs<T>& a, int64_t i, int64_t group) {
  const int64_t D = a.O + 1;
  T z[4] = {T(0), T(0), T(0), T(0)};
  const bool noisy = a.gaussian && a.sample;
  if (noisy) {
    philox::normal4<T>(a.seed, a.offset, static_cast<uint32_t>(i), static_cast<uint32_t>(group),
                       z);
  }
  bool alive = true;
  for (int j = 0; j < 4; ++j) {
    const int64_t d = 4 * group + j;
    if (d >= D) break;
    T y, lv = T(0), scale = T(0);
    if (a.K == 1) {
      const int64_t r = a.pos ? a.pos[i] : i;
      const T* row = a.raw + r * a.out_w;
      y = row[d];
      if (noisy) {
        if (a.std_given) {
          scale = row[D + d];
        } else {
          lv = bound_logvar(row[D + d], a.min_logvar[d], a.max_logvar[d]);
        }
      }
    } else {
      y = T(0);
      for (int64_t k = 0; k < a.K; ++k) {
        const T* row = a.raw + (k * a.N + i) * a.out_w;
        y += row[d];
        if (noisy) lv += bound_logvar(row[D + d], a.min_logvar[d], a.max_logvar[d]);
      }
      y /= static_cast<T>(a.K);
      lv /= static_cast<T>(a.K);
    }
    if (noisy && !a.std_given) scale = fm_exp(lv * T(0.5));
    T out = noisy ? y + scale * z[j] : y;
    if (d == a.O) {
      a.reward[i] = out;
      continue;
    }
    if (a.delta_mask == nullptr || a.delta_mask[d]) out += a.state[i * a.O + d];
    a.next_state[i * a.O + d] = out;
    if (a.term_lower != nullptr) {
      const T lo = a.term_lower[d], hi = a.term_upper[d];
      const bool ok_lo = fm_isinf(lo) || (a.term_inclusive ? out >= lo : out > lo);
      const bool ok_hi = fm_isinf(hi) || (a.term_inclusive ? out <= hi : out < hi);
      alive = alive && ok_lo && ok_hi && (!a.term_check_finite || fm_isfinite(out));
    }
  }
  return alive;
}

}  // namespace rollout

// ---- CPU entry points (src/cpp/rollout_cpu.cpp) -------------------------------------------
// The fused epilogue over all N rows (layers were evaluated by torch GEMMs in Python), split
// into contiguous row ranges over `threads` std::threads (results do not depend on it).
template <typename T>
void rollout_epilogue_cpu(const rollout::EpilogueArgs<T>& args, int threads);

// Standard normals noise(seed, offset, i, d) for i < N, d < D into out [N, D] (for tests).
template <typename T>
void philox_normal_cpu(uint64_t seed, uint64_t offset, int64_t N, int64_t D, T* out);

// ---- CUDA entry points (src/cuda/rollout.cu); return a cudaError_t as int -----------------
// Row tile height of the grouped GEMM: Python sizes the tile table with it.
int rollout_cuda_tile_rows();

// One layer over member segments: out[r] = act(in[r] @ W[m(r)] + b[m(r)]) for virtual rows r
// grouped into S segments (segment s: rows seg_start[s] .. + seg_rows[s], member seg_member[s],
// first row tile seg_tile[s]); grid_tiles >= total row tiles (blocks past the end exit).
// First layer (in == null): row r reads [state, action][src[r]], normalized by in_mean/in_std.
template <typename T>
int rollout_layer_cuda(const T* in, const T* state, const T* action, int64_t O, int64_t A,
                       const T* in_mean, const T* in_std, const int64_t* src, const T* W,
                       const T* b, int64_t K_in, int64_t N_out, const int64_t* seg_member,
                       const int64_t* seg_start, const int64_t* seg_rows, const int64_t* seg_tile,
                       int64_t S, int64_t grid_tiles, int act, T* out, void* stream);

template <typename T>
int rollout_epilogue_cuda(const rollout::EpilogueArgs<T>& args, void* stream);

}  // namespace fastmbrl
