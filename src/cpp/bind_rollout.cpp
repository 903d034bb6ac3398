// Bindings of the rollout-step kernels (include/fastmbrl/rollout.h, philox.h).
#include <pybind11/stl.h>

#include <array>

#include "fastmbrl/bindings.h"
#include "fastmbrl/philox.h"
#include "fastmbrl/rollout.h"

namespace py = pybind11;
using namespace fastmbrl::bind;
using std::uintptr_t;

namespace {

template <typename T>
fastmbrl::rollout::EpilogueArgs<T> epilogue_args(
    uintptr_t raw, uintptr_t pos, int64_t K, int64_t N, int64_t O, int64_t out_w, bool gaussian,
    bool sample, uintptr_t min_lv, uintptr_t max_lv, uintptr_t state, uintptr_t delta_mask,
    uintptr_t term_lower, uintptr_t term_upper, bool inclusive, bool check_finite, uint64_t seed,
    uint64_t offset, uintptr_t next_state, uintptr_t reward, uintptr_t done) {
  fastmbrl::rollout::EpilogueArgs<T> a;
  a.raw = cptr<T>(raw);
  a.pos = cptr<int64_t>(pos);
  a.K = K;
  a.N = N;
  a.O = O;
  a.out_w = out_w;
  a.gaussian = gaussian;
  a.sample = sample;
  a.std_given = false;
  a.min_logvar = cptr<T>(min_lv);
  a.max_logvar = cptr<T>(max_lv);
  a.state = cptr<T>(state);
  a.delta_mask = cptr<uint8_t>(delta_mask);
  a.term_lower = cptr<T>(term_lower);
  a.term_upper = cptr<T>(term_upper);
  a.term_inclusive = inclusive;
  a.term_check_finite = check_finite;
  a.seed = seed;
  a.offset = offset;
  a.next_state = mptr<T>(next_state);
  a.reward = mptr<T>(reward);
  a.done = mptr<uint8_t>(done);
  return a;
}

}  // namespace

FASTMBRL_BINDINGS(rollout) {
  m.def("philox4x32_10",
        [](std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
          std::array<uint32_t, 4> out;
          fastmbrl::philox::philox4x32_10(ctr.data(), key.data(), out.data());
          return out;
        },
        "Philox4x32-10 of one counter and key (the native implementation, for tests)");
  m.def("philox_normal_cpu",
        [](int dtype, uint64_t seed, uint64_t offset, int64_t N, int64_t D, uintptr_t out) {
          py::gil_scoped_release release;
          dispatch_float(dtype, "philox_normal_cpu", [&](auto tag) {
            using T = decltype(tag);
            fastmbrl::philox_normal_cpu<T>(seed, offset, N, D, mptr<T>(out));
          });
        });
  // Pointer arguments that are optional are passed as 0 (null). std_given (K == 1 only): the
  // raw logvar columns already hold exp(bounded logvar / 2).
  m.def("rollout_epilogue_cpu",
        [](int dtype, uintptr_t raw, uintptr_t pos, int64_t K, int64_t N, int64_t O,
           int64_t out_w, bool gaussian, bool sample, uintptr_t min_lv, uintptr_t max_lv,
           uintptr_t state, uintptr_t delta_mask, uintptr_t term_lower, uintptr_t term_upper,
           bool inclusive, bool check_finite, uint64_t seed, uint64_t offset,
           uintptr_t next_state, uintptr_t reward, uintptr_t done, int threads,
           bool std_given) {
          py::gil_scoped_release release;
          dispatch_float(dtype, "rollout_epilogue_cpu", [&](auto tag) {
            using T = decltype(tag);
            auto args = epilogue_args<T>(raw, pos, K, N, O, out_w, gaussian, sample, min_lv,
                                         max_lv, state, delta_mask, term_lower, term_upper,
                                         inclusive, check_finite, seed, offset, next_state,
                                         reward, done);
            args.std_given = std_given && K == 1;
            fastmbrl::rollout_epilogue_cpu<T>(args, threads);
          });
        });
#ifdef FASTMBRL_WITH_CUDA
  m.def("rollout_cuda_tile_rows", &fastmbrl::rollout_cuda_tile_rows);
  m.def("rollout_layer_cuda",
        [](int dtype, uintptr_t in, uintptr_t state, uintptr_t action, int64_t O, int64_t A,
           uintptr_t in_mean, uintptr_t in_std, uintptr_t src, uintptr_t W, uintptr_t b,
           int64_t K_in, int64_t N_out, uintptr_t seg_member, uintptr_t seg_start,
           uintptr_t seg_rows, uintptr_t seg_tile, int64_t S, int64_t grid_tiles, int act,
           uintptr_t out, uintptr_t stream) {
          dispatch_float(dtype, "rollout_layer_cuda", [&](auto tag) {
            using T = decltype(tag);
            check_cuda(fastmbrl::rollout_layer_cuda<T>(
                           cptr<T>(in), cptr<T>(state), cptr<T>(action), O, A, cptr<T>(in_mean),
                           cptr<T>(in_std), cptr<int64_t>(src), cptr<T>(W), cptr<T>(b), K_in,
                           N_out, cptr<int64_t>(seg_member), cptr<int64_t>(seg_start),
                           cptr<int64_t>(seg_rows), cptr<int64_t>(seg_tile), S, grid_tiles, act,
                           mptr<T>(out), stream_ptr(stream)),
                       "rollout_layer_cuda");
          });
        });
  m.def("rollout_epilogue_cuda",
        [](int dtype, uintptr_t raw, uintptr_t pos, int64_t K, int64_t N, int64_t O,
           int64_t out_w, bool gaussian, bool sample, uintptr_t min_lv, uintptr_t max_lv,
           uintptr_t state, uintptr_t delta_mask, uintptr_t term_lower, uintptr_t term_upper,
           bool inclusive, bool check_finite, uint64_t seed, uint64_t offset,
           uintptr_t next_state, uintptr_t reward, uintptr_t done, uintptr_t stream) {
          dispatch_float(dtype, "rollout_epilogue_cuda", [&](auto tag) {
            using T = decltype(tag);
            check_cuda(fastmbrl::rollout_epilogue_cuda<T>(
                           epilogue_args<T>(raw, pos, K, N, O, out_w, gaussian, sample, min_lv,
                                            max_lv, state, delta_mask, term_lower, term_upper,
                                            inclusive, check_finite, seed, offset, next_state,
                                            reward, done),
                           stream_ptr(stream)),
                       "rollout_epilogue_cuda");
          });
        });
#endif
}
