// CPU kernels of the rollout step: the fused epilogue (include/fastmbrl/rollout.h) and a
// Philox normal fill used by the tests. The MLP layers run as torch GEMMs in Python.
#include "fastmbrl/rollout.h"

namespace fastmbrl {

template <typename T>
void rollout_epilogue_cpu(const rollout::EpilogueArgs<T>& args) {
  const int64_t groups = (args.O + 1 + 3) / 4;
  for (int64_t i = 0; i < args.N; ++i) {
    bool alive = true;
    for (int64_t g = 0; g < groups; ++g) alive = rollout::epilogue_group(args, i, g) && alive;
    args.done[i] = alive ? 0 : 1;
  }
}

template <typename T>
void philox_normal_cpu(uint64_t seed, uint64_t offset, int64_t N, int64_t D, T* out) {
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t g = 0; 4 * g < D; ++g) {
      T z[4];
      philox::normal4<T>(seed, offset, static_cast<uint32_t>(i), static_cast<uint32_t>(g), z);
      for (int64_t j = 0; j < 4 && 4 * g + j < D; ++j) out[i * D + 4 * g + j] = z[j];
    }
  }
}

template void rollout_epilogue_cpu<float>(const rollout::EpilogueArgs<float>&);
template void rollout_epilogue_cpu<double>(const rollout::EpilogueArgs<double>&);
template void philox_normal_cpu<float>(uint64_t, uint64_t, int64_t, int64_t, float*);
template void philox_normal_cpu<double>(uint64_t, uint64_t, int64_t, int64_t, double*);

}  // namespace fastmbrl
