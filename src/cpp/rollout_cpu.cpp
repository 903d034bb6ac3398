// CPU kernels of the rollout step: the fused epilogue (include/fastmbrl/rollout.h) and a
// Philox normal fill used by the tests. The MLP layers run as torch GEMMs in Python.
#include "fastmbrl/rollout.h"

#include <thread>
#include <vector>

namespace fastmbrl {

namespace {

template <typename T>
void epilogue_rows(const rollout::EpilogueArgs<T>& args, int64_t begin, int64_t end) {
  const int64_t groups = (args.O + 1 + 3) / 4;
  for (int64_t i = begin; i < end; ++i) {
    bool alive = true;
    for (int64_t g = 0; g < groups; ++g) alive = rollout::epilogue_group(args, i, g) && alive;
    args.done[i] = alive ? 0 : 1;
  }
}

}  // namespace

template <typename T>
void rollout_epilogue_cpu(const rollout::EpilogueArgs<T>& args, int threads) {
  const int64_t work = args.N * (args.O + 1);
  int64_t n_threads = threads < 1 ? 1 : threads;
  if (work < 65536) n_threads = 1;  // not worth a thread start
  if (n_threads > args.N) n_threads = args.N;
  if (n_threads <= 1) {
    epilogue_rows(args, 0, args.N);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t chunk = (args.N + n_threads - 1) / n_threads;
  for (int64_t t = 1; t < n_threads; ++t) {
    const int64_t b = t * chunk, e = b + chunk < args.N ? b + chunk : args.N;
    if (b < e) pool.emplace_back([&args, b, e] { epilogue_rows(args, b, e); });
  }
  epilogue_rows(args, 0, chunk < args.N ? chunk : args.N);
  for (auto& th : pool) th.join();
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

template void rollout_epilogue_cpu<float>(const rollout::EpilogueArgs<float>&, int);
template void rollout_epilogue_cpu<double>(const rollout::EpilogueArgs<double>&, int);
template void philox_normal_cpu<float>(uint64_t, uint64_t, int64_t, int64_t, float*);
template void philox_normal_cpu<double>(uint64_t, uint64_t, int64_t, int64_t, double*);

}  // namespace fastmbrl
