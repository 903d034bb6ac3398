// Ensemble Gaussian negative log-likelihood (mbrl-lib's definition, no 1/2 and no log 2*pi):
//
//   loss[e, i] = (mean[e, i] - target[., i])^2 * exp(-logvar[e, i]) + logvar[e, i]
//   member_mean[e] = (1/N) * sum_i loss[e, i]            with i over the N = B*D elements
//
// target is either per member [E, N] or shared [N] (broadcast over members).
#pragma once

#include "fastmbrl/common.h"

namespace fastmbrl {
namespace nll {

// Per-element math, shared by the CPU and CUDA kernels.
template <typename T>
FASTMBRL_HD T value(T mean, T logvar, T target) {
  const T d = mean - target;
  return d * d * fm_exp(-logvar) + logvar;
}

// Gradients of g * value(mean, logvar, target) with respect to mean and logvar;
// the gradient with respect to target is -d_mean.
template <typename T>
FASTMBRL_HD void grad(T mean, T logvar, T target, T g, T* d_mean, T* d_logvar) {
  const T d = mean - target;
  const T inv_var = fm_exp(-logvar);
  *d_mean = g * T(2) * d * inv_var;
  *d_logvar = g * (T(1) - d * d * inv_var);
}

}  // namespace nll

// ---- CPU entry points (src/cpp/gaussian_nll_cpu.cpp) -----------------------------------
// Writes loss[E, N] when `elementwise`, else member_mean[E]. Each output pointer is required
// only for its mode.
template <typename T>
void gaussian_nll_forward_cpu(const T* mean, const T* logvar, const T* target, bool target_shared,
                              int64_t E, int64_t N, bool elementwise, T* out);

// grad is [E, N] when `elementwise`, else [E] (gradient of member_mean). Writes d_mean and
// d_logvar [E, N] and d_target ([N] if target_shared, else [E, N]).
template <typename T>
void gaussian_nll_backward_cpu(const T* grad, const T* mean, const T* logvar, const T* target,
                               bool target_shared, int64_t E, int64_t N, bool elementwise,
                               T* d_mean, T* d_logvar, T* d_target);

// ---- CUDA entry points (src/cuda/gaussian_nll.cu); return a cudaError_t as int ----------
// Number of elements of type T the forward needs as workspace (0 when elementwise).
int64_t gaussian_nll_cuda_workspace(int64_t E, int64_t N, bool elementwise);

template <typename T>
int gaussian_nll_forward_cuda(const T* mean, const T* logvar, const T* target, bool target_shared,
                              int64_t E, int64_t N, bool elementwise, T* out, T* workspace,
                              void* stream);

template <typename T>
int gaussian_nll_backward_cuda(const T* grad, const T* mean, const T* logvar, const T* target,
                               bool target_shared, int64_t E, int64_t N, bool elementwise,
                               T* d_mean, T* d_logvar, T* d_target, void* stream);

}  // namespace fastmbrl
