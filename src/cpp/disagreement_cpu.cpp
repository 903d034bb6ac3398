// CPU kernel of the ensemble disagreement (include/fastmbrl/disagreement.h): row by row, every
// member pair's squared distance summed over the O contiguous outputs (vectorised inner loop),
// the maximum kept; sqrt once per row.
#include <cmath>

#include "fastmbrl/disagreement.h"

namespace fastmbrl {

template <typename T>
FASTMBRL_CPU_CLONES void disagreement_cpu(const T* pred, int64_t E, int64_t N, int64_t O,
                                          T* out) {
  const int64_t stride = N * O;  // between members
  for (int64_t n = 0; n < N; ++n) {
    const T* row = pred + n * O;
    T m = T(0);
    for (int64_t i = 0; i < E; ++i) {
      const T* __restrict__ pi = row + i * stride;
      for (int64_t j = i + 1; j < E; ++j) {
        const T* __restrict__ pj = row + j * stride;
        T s = T(0);
#pragma omp simd reduction(+ : s)
        for (int64_t d = 0; d < O; ++d) {
          const T diff = pi[d] - pj[d];
          s += diff * diff;
        }
        m = disagreement::nan_max(m, s);
      }
    }
    out[n] = std::sqrt(m);
  }
}

template void disagreement_cpu<float>(const float*, int64_t, int64_t, int64_t, float*);
template void disagreement_cpu<double>(const double*, int64_t, int64_t, int64_t, double*);

}  // namespace fastmbrl
