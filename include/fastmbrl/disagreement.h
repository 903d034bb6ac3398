// Ensemble disagreement (MOReL): for each row n of pred [E, N, O],
//
//   u[n] = max_{i < j} || pred[i, n, :] - pred[j, n, :] ||_2
//
// one pass over pred, no [E, E, N] temporary. The maximum is taken over squared distances and
// the square root applied once; a NaN distance propagates to the result (as torch's amax).
#pragma once

#include "fastmbrl/common.h"

namespace fastmbrl {
namespace disagreement {

// Keep the larger of m and d; a NaN d (or a NaN m already kept) wins.
template <typename T>
FASTMBRL_HD T nan_max(T m, T d) {
  return (d > m || d != d) ? d : m;
}

}  // namespace disagreement

// CPU: u[N] from pred[E, N, O] (contiguous).
template <typename T>
void disagreement_cpu(const T* pred, int64_t E, int64_t N, int64_t O, T* out);

#ifdef FASTMBRL_WITH_CUDA
// CUDA: the same, one warp per row, launched on `stream`. Returns a cudaError_t as int.
template <typename T>
int disagreement_cuda(const T* pred, int64_t E, int64_t N, int64_t O, T* out, void* stream);
#endif

}  // namespace fastmbrl
