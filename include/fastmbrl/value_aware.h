// Value-difference model loss (VA-MBPO's model advantage; VAML-L2; IterVAML):
//
//   d[e, i]    = q_true[., i] - q_model[e, i]
//   loss[e, i] = |d|        (norm 1, MA-L1)     or  d^2       (norm 2, VAML-L2)
//   unit[e, i] = d loss / d q_model[e, i]
//              = -sign(d)   (0 where d == 0)     or  -2 d
//
// q_model is [E, N] (any shape, E its first dimension); q_true is [E, N] or shared [N]. The
// forward writes the loss (elementwise, or its total over all E*N elements) and the unit
// gradient in one pass, so the backward (plain torch, in ops/value_aware.py) only scales `unit`
// by the incoming gradient.
#pragma once

#include "fastmbrl/common.h"

namespace fastmbrl {
namespace value_aware {

// Per-element math, shared by the CPU and CUDA kernels. Branch-free (selects), so CPU loops
// vectorise; NaN in d propagates to both outputs.
template <typename T, int Norm>
FASTMBRL_HD void value_and_unit(T q_true, T q_model, T* loss, T* unit) {
  const T d = q_true - q_model;
  if (Norm == 1) {
    // -sign(d) from two compare masks (a nested select compiled to slow code on x86)
    const T s = static_cast<T>(d < T(0)) - static_cast<T>(d > T(0));
    *loss = fabs(d);
    *unit = d != d ? d : s;
  } else {
    *loss = d * d;
    *unit = T(-2) * d;
  }
}

}  // namespace value_aware

// ---- CPU entry points (src/cpp/value_aware_cpu.cpp) -------------------------------------
// norm is 1 (l1) or 2 (l2). Writes unit[E, N] and, when `elementwise`, loss[E, N]; otherwise
// loss[0] = the sum of all E*N losses (accumulated in double, fixed order).
template <typename T>
void value_aware_forward_cpu(const T* q_true, const T* q_model, bool q_true_shared, int64_t E,
                             int64_t N, int norm, bool elementwise, T* loss, T* unit);

// ---- CUDA entry points (src/cuda/value_aware.cu); return a cudaError_t as int -----------
// Number of elements of type T the forward needs as workspace (0 when elementwise).
int64_t value_aware_cuda_workspace(int64_t n, bool elementwise);

template <typename T>
int value_aware_forward_cuda(const T* q_true, const T* q_model, bool q_true_shared, int64_t E,
                             int64_t N, int norm, bool elementwise, T* loss, T* unit,
                             T* workspace, void* stream);

}  // namespace fastmbrl
