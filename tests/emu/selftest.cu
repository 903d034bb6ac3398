// Self-test of the SIMT emulation layer (tests/emu/simt.h): small kernels, each in a correct and
// a deliberately broken variant, and the check that the layer tells them apart. The broken
// variants are the faults the layer claims to catch; they are toys, not mutations of the real
// kernels. Run by tests/test_cuda_emulation.py::test_layer_catches_injected_faults (and, built
// with ASan+UBSan, by the sanitizer test). Exit status 0 when every expectation holds.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr int kThreads = 128;

// Reverse a block's slice through shared memory. Broken: no barrier between write and read.
template <bool kSync>
__global__ void reverse_kernel(const float* x, float* out) {
  __shared__ float s[kThreads];
  const int t = threadIdx.x;
  s[t] = x[blockIdx.x * kThreads + t];
  if (kSync) __syncthreads();
  out[blockIdx.x * kThreads + t] = s[kThreads - 1 - t];
}

// Scale n elements with a rounded-up grid. Broken: no bounds check.
template <bool kCheck>
__global__ void scale_kernel(const float* x, int n, float* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (kCheck && i >= n) return;
  out[i] = 2.0f * x[i];
}

// Warp sum of 32 lanes. Broken (kMask = 0x0000ffff): a partial-warp mask, lanes 16..31 call the
// shuffle although their lane is not in the mask.
template <unsigned kMask>
__global__ void warp_sum_kernel(const float* x, float* out) {
  float v = x[threadIdx.x];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(kMask, v, o);
  if (threadIdx.x == 0) out[0] = v;
}

// Lanes 0..15 reduce among themselves. Broken: the mask names only them but the offsets reach
// lanes 16..31 (a value from a lane outside the mask is undefined: poisoned, NaN).
template <bool kWidth16>
__global__ void half_warp_sum_kernel(const float* x, float* out) {
  float v = x[threadIdx.x];
  if (threadIdx.x < 16) {
    for (int o = kWidth16 ? 8 : 16; o > 0; o >>= 1) v += __shfl_down_sync(0x0000ffffu, v, o);
    if (threadIdx.x == 0) out[0] = v;
  }
}

// Every thread writes the same shared word: the value read after the barrier depends on the
// thread order (a race without NaN). Correct: only thread 0 writes.
template <bool kRace>
__global__ void race_kernel(float* out) {
  __shared__ float w;
  if (kRace || threadIdx.x == 0) w = static_cast<float>(threadIdx.x);
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = w;
}

// A barrier inside a branch only some threads take (they exit early).
template <bool kDivergent>
__global__ void early_exit_kernel(const float* x, int n, float* out) {
  __shared__ float s[kThreads];
  const int i = blockIdx.x * kThreads + threadIdx.x;
  if (kDivergent && i >= n) return;
  s[threadIdx.x] = i < n ? x[i] : 0.0f;
  __syncthreads();
  if (i < n) out[i] = s[threadIdx.x] + s[(threadIdx.x + 1) % kThreads];
}

// Votes and xor shuffles with a width: the sum of each 8-lane group, and whether all lanes agree.
__global__ void group_kernel(const float* x, float* out, unsigned* votes) {
  float v = x[threadIdx.x];
  for (int o = 4; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, 8);
  out[threadIdx.x] = v;
  const unsigned b = __ballot_sync(0xffffffffu, x[threadIdx.x] > 0.0f);
  const int all = __all_sync(0xffffffffu, x[threadIdx.x] > -100.0f);
  const int any = __any_sync(0xffffffffu, x[threadIdx.x] > 100.0f);
  if (threadIdx.x == 0) {
    votes[0] = b;
    votes[1] = static_cast<unsigned>(all);
    votes[2] = static_cast<unsigned>(any);
  }
  __syncwarp();
}

__global__ void noop_kernel(float* out) {
  if (threadIdx.x == 0 && blockIdx.x == 0) out[0] = 1.0f;
}

__global__ void __launch_bounds__(64) bounded64_kernel(float* out) {
  if (threadIdx.x == 0) out[blockIdx.x] = 1.0f;
}
__global__ void __launch_bounds__(128) bounded128_kernel(float* out) {
  if (threadIdx.x == 0) out[blockIdx.x] = 1.0f;
}

// ---- checks -----------------------------------------------------------------------------------
int g_failures = 0;

void expect(bool ok, const std::string& what) {
  std::printf("%s  %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++g_failures;
}

// Runs `run` under the three orders. Returns "" when every run succeeded, matched `want` (when
// given) and was bit-identical across orders; otherwise what the layer saw.
template <class Run>
std::string verdict(Run run, const std::vector<float>* want) {
  std::vector<float> first;
  for (int order = 0; order < 3; ++order) {
    simt::set_order(order, 12345 + order);
    std::vector<float> got;
    const cudaError_t err = run(&got);
    if (err != cudaSuccess) return std::string("error: ") + cudaGetErrorString(err);
    for (float v : got) {
      if (std::isnan(v)) return "NaN in the output (order " + std::to_string(order) + ")";
    }
    if (want != nullptr && std::memcmp(got.data(), want->data(), got.size() * 4) != 0) {
      return "wrong result (order " + std::to_string(order) + ")";
    }
    if (order == 0) {
      first = got;
    } else if (std::memcmp(got.data(), first.data(), got.size() * 4) != 0) {
      return "results differ between thread/block orders (order " + std::to_string(order) + ")";
    }
  }
  simt::set_order(0, 0);
  return "";
}

void expect_caught(const std::string& name, const std::string& v) {
  expect(!v.empty(), name + ": caught (" + (v.empty() ? "not caught" : v) + ")");
}
void expect_clean(const std::string& name, const std::string& v) {
  expect(v.empty(), name + ": clean" + (v.empty() ? "" : " (" + v + ")"));
}

cudaStream_t S() { return simt::caller_stream(); }

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "oob") {
    // The broken scale kernel on exact-size buffers: the sanitizer build must report it.
    const int n = 200;
    std::vector<float> in(n, 1.0f), out(n, 0.0f);
    scale_kernel<false><<<(n + 127) / 128, 128, 0, S()>>>(in.data(), n, out.data());
    std::printf("out-of-bounds kernel ran: %s\n", cudaGetErrorString(cudaGetLastError()));
    return 0;
  }
  std::vector<float> x(4 * kThreads);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 97) - 40.0f;

  // 1. missing __syncthreads
  {
    std::vector<float> want(x.size());
    for (int b = 0; b < 4; ++b)
      for (int t = 0; t < kThreads; ++t) want[b * kThreads + t] = x[b * kThreads + kThreads - 1 - t];
    auto run = [&](auto kernel) {
      return [&, kernel](std::vector<float>* out) {
        out->assign(x.size(), NAN);
        kernel<<<4, kThreads, 0, S()>>>(x.data(), out->data());
        return cudaGetLastError();
      };
    };
    expect_clean("reverse with __syncthreads", verdict(run(reverse_kernel<true>), &want));
    expect_caught("reverse without __syncthreads", verdict(run(reverse_kernel<false>), &want));
  }
  // 2. missing bounds check: n = 200 with 2 blocks of 128; canaries after the output and NaN
  // after the input show the out-of-range accesses (ASan reports them in the sanitizer build)
  {
    const int n = 200;
    auto run = [&](auto kernel) {
      return [&, kernel](std::vector<float>* out) {
        std::vector<float> in(256 + 64, NAN), buf(256 + 64, -7.0f);
        std::memcpy(in.data(), x.data(), n * 4);
        kernel<<<(n + 127) / 128, 128, 0, S()>>>(in.data(), n, buf.data());
        const cudaError_t e = cudaGetLastError();
        out->assign(buf.begin(), buf.end());  // includes the canary region after n
        for (int i = 0; i < n; ++i) (*out)[i] = buf[i];
        return e;
      };
    };
    std::vector<float> want(256 + 64, -7.0f);
    for (int i = 0; i < n; ++i) want[i] = 2.0f * x[i];
    expect_clean("scale with bounds check", verdict(run(scale_kernel<true>), &want));
#if !defined(__SANITIZE_ADDRESS__)
    // (in the sanitizer build the buffers above are large enough to stay silent; the ASan run
    // of the broken variant is the separate check below)
    expect_caught("scale without bounds check", verdict(run(scale_kernel<false>), &want));
#endif
  }
  // 3. partial-warp masks
  {
    float want_sum = 0.0f;
    std::vector<float> w32(1);
    auto run = [&](auto kernel) {
      return [&, kernel](std::vector<float>* out) {
        out->assign(1, NAN);
        kernel<<<1, 32, 0, S()>>>(x.data(), out->data());
        return cudaGetLastError();
      };
    };
    simt::set_order(0, 0);
    std::vector<float> ref(1, NAN);
    warp_sum_kernel<0xffffffffu><<<1, 32, 0, S()>>>(x.data(), ref.data());
    want_sum = ref[0];
    w32[0] = want_sum;
    float exact = 0.0f;
    for (int i = 0; i < 32; ++i) exact += x[i];
    expect(cudaGetLastError() == cudaSuccess && std::fabs(want_sum - exact) < 1e-3f,
           "full-warp shuffle sum is the sum");
    expect_clean("warp sum, full mask", verdict(run(warp_sum_kernel<0xffffffffu>), &w32));
    expect_caught("warp sum, lanes outside the mask call", verdict(run(warp_sum_kernel<0xffffu>),
                                                                  nullptr));
    expect_clean("half-warp sum, offsets within the mask",
                 verdict(run(half_warp_sum_kernel<true>), nullptr));
    expect_caught("half-warp sum, offsets reaching outside the mask",
                  verdict(run(half_warp_sum_kernel<false>), nullptr));
    // a full mask in a block of 48 threads: warp 1 has 16 lanes only
    std::vector<float> o(48, NAN);
    warp_sum_kernel<0xffffffffu><<<1, 48, 0, S()>>>(x.data(), o.data());
    const cudaError_t e = cudaGetLastError();
    expect(e == cudaErrorLaunchFailure, std::string("full mask in a partial warp: ") +
                                            cudaGetErrorString(e));
  }
  // 4. an order-dependent race (no NaN involved)
  {
    auto run = [&](auto kernel) {
      return [&, kernel](std::vector<float>* out) {
        out->assign(3, NAN);
        kernel<<<3, kThreads, 0, S()>>>(out->data());
        return cudaGetLastError();
      };
    };
    expect_clean("one writer", verdict(run(race_kernel<false>), nullptr));
    expect_caught("every thread writes one shared word", verdict(run(race_kernel<true>), nullptr));
  }
  // 5. a barrier some threads skip
  {
    const int n = 200;
    auto run = [&](auto kernel) {
      return [&, kernel](std::vector<float>* out) {
        out->assign(n, NAN);
        kernel<<<2, kThreads, 0, S()>>>(x.data(), n, out->data());
        return cudaGetLastError();
      };
    };
    expect_clean("barrier reached by every thread", verdict(run(early_exit_kernel<false>), nullptr));
    expect_caught("barrier after an early exit", verdict(run(early_exit_kernel<true>), nullptr));
  }
  // 6. shuffles with a width, votes, __syncwarp
  {
    std::vector<float> out(32, NAN);
    std::vector<unsigned> votes(3, 7);
    std::vector<float> xs(32);
    for (int i = 0; i < 32; ++i) xs[i] = (i % 3 == 0) ? 1.0f + i : -1.0f - i;
    group_kernel<<<1, 32, 0, S()>>>(xs.data(), out.data(), votes.data());
    bool ok = cudaGetLastError() == cudaSuccess;
    unsigned ballot = 0;
    for (int i = 0; i < 32; ++i) {
      float s = 0.0f;
      for (int j = i & ~7; j < (i & ~7) + 8; ++j) s += xs[j];
      ok = ok && std::fabs(out[i] - s) < 1e-4f;
      ballot |= (xs[i] > 0.0f ? 1u : 0u) << i;
    }
    expect(ok && votes[0] == ballot && votes[1] == 1 && votes[2] == 0,
           "xor shuffle with width 8, ballot/all/any");
  }
  // 7. launch limits, launch bounds, streams, cudaGetLastError
  {
    std::vector<float> out(4, NAN);
    noop_kernel<<<dim3(1, 65536), 32, 0, S()>>>(out.data());
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid.y = 65536 is rejected");
    expect(cudaGetLastError() == cudaSuccess, "cudaGetLastError resets the error");
    noop_kernel<<<dim3(1, 1, 65535), 32, 0, S()>>>(out.data());
    expect(cudaGetLastError() == cudaSuccess, "grid.z = 65535 runs");
    noop_kernel<<<1, 1025, 0, S()>>>(out.data());
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "1025 threads are rejected");
    noop_kernel<<<1, dim3(1, 1, 65), 0, S()>>>(out.data());
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "block.z = 65 is rejected");
    noop_kernel<<<0, 32, 0, S()>>>(out.data());
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "an empty grid is rejected");
    noop_kernel<<<1, 32, 64 * 1024, S()>>>(out.data());
    expect(cudaGetLastError() == cudaErrorInvalidValue, "64 KiB dynamic shared memory is rejected");
    bounded64_kernel<<<1, 128, 0, S()>>>(out.data());
    expect(cudaGetLastError() == cudaErrorLaunchOutOfResources,
           "128 threads above __launch_bounds__(64) are rejected");
    bounded128_kernel<<<1, 128, 0, S()>>>(out.data());
    expect(cudaGetLastError() == cudaSuccess, "128 threads within __launch_bounds__(128) run");
    noop_kernel<<<1, 32>>>(out.data());
    const cudaError_t e = cudaGetLastError();
    expect(e == cudaErrorInvalidResourceHandle &&
               std::string(cudaGetErrorString(e)).find("stream") != std::string::npos,
           "a launch on the default stream instead of the caller's is reported");
    out[0] = NAN;
    noop_kernel<<<1, 32, 0, S()>>>(out.data());
    noop_kernel<<<dim3(1, 70000), 32, 0, S()>>>(out.data());
    noop_kernel<<<1, 32, 0, S()>>>(out.data());
    expect(out[0] == 1.0f && cudaPeekAtLastError() == cudaErrorInvalidConfiguration &&
               cudaGetLastError() == cudaErrorInvalidConfiguration &&
               cudaGetLastError() == cudaSuccess,
           "an error stays until read, later successful launches do not clear it");
  }
  std::printf("%d failures\n", g_failures);
  return g_failures != 0;
}
