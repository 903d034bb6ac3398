// A quick subset of the emulated CUDA kernels against the CPU kernels, built with ASan+UBSan
// (tests/emu/CMakeLists.txt, SIMT_SANITIZE=ON): every buffer has its exact size, so a kernel
// reading or writing one element past an end is reported by AddressSanitizer, and undefined
// behaviour (signed overflow, misaligned or null accesses) by UBSan. Outputs start as NaN.
// Run by tests/test_cuda_emulation.py::test_sanitizer_subset; exit status 0 when all match.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "fastmbrl/ensemble_mlp.h"
#include "fastmbrl/gaussian_nll.h"
#include "fastmbrl/rollout.h"
#include "fastmbrl/vagram.h"
#include "fastmbrl/value_aware.h"
#include "simt.h"

using namespace fastmbrl;

namespace {

int g_failures = 0;
std::mt19937 g_rng(7);

std::vector<double> randn(size_t n) {
  std::normal_distribution<double> d;
  std::vector<double> v(n);
  for (auto& x : v) x = d(g_rng);
  return v;
}
std::vector<double> nans(size_t n) { return std::vector<double>(n, NAN); }
void* S() { return simt::caller_stream(); }

void check(const std::string& what, int err, const std::vector<double>& got,
           const std::vector<double>& want, double tol = 1e-11) {
  double worst = 0.0;
  bool ok = err == 0 && got.size() == want.size();
  for (size_t i = 0; ok && i < got.size(); ++i) {
    const double d = std::fabs(got[i] - want[i]) / (1.0 + std::fabs(want[i]));
    if (!(d <= tol)) ok = false;
    if (d > worst) worst = d;
  }
  std::printf("%s  %s (error %d, worst %.3g)\n", ok ? "ok  " : "FAIL", what.c_str(), err, worst);
  if (!ok) ++g_failures;
}

void nll_case(int64_t E, int64_t N, bool shared) {
  auto m = randn(E * N), lv = randn(E * N), y = randn(shared ? N : E * N);
  for (bool ew : {false, true}) {
    auto out = nans(ew ? E * N : E), want = nans(out.size());
    auto ws = nans(std::max<int64_t>(1, gaussian_nll_cuda_workspace(E, N, ew)));
    const int err = gaussian_nll_forward_cuda<double>(m.data(), lv.data(), y.data(), shared, E, N,
                                                      ew, out.data(), ws.data(), S());
    gaussian_nll_forward_cpu<double>(m.data(), lv.data(), y.data(), shared, E, N, ew, want.data());
    check("gaussian_nll forward E=" + std::to_string(E) + " N=" + std::to_string(N) +
              (ew ? " elementwise" : " reduced"),
          err, out, want);
    auto g = randn(ew ? E * N : E);
    auto dm = nans(E * N), dl = nans(E * N), dy = nans(y.size());
    auto wm = nans(E * N), wl = nans(E * N), wy = nans(y.size());
    const int e2 = gaussian_nll_backward_cuda<double>(g.data(), m.data(), lv.data(), y.data(),
                                                      shared, E, N, ew, dm.data(), dl.data(),
                                                      dy.data(), S());
    gaussian_nll_backward_cpu<double>(g.data(), m.data(), lv.data(), y.data(), shared, E, N, ew,
                                      wm.data(), wl.data(), wy.data());
    dm.insert(dm.end(), dl.begin(), dl.end());
    dm.insert(dm.end(), dy.begin(), dy.end());
    wm.insert(wm.end(), wl.begin(), wl.end());
    wm.insert(wm.end(), wy.begin(), wy.end());
    check("gaussian_nll backward", e2, dm, wm);
  }
}

void vagram_case(int64_t E, int64_t B, int64_t O, int64_t K, bool bounded) {
  auto p = randn(E * B * O), y = randn(B * O), g = randn(K * E * B * O);
  auto loss = nans(E), dp = nans(E * B * O), wl = nans(E), wd = nans(E * B * O);
  auto ws = nans(vagram_cuda_workspace(E, B, O, bounded));
  const int err = vagram_forward_cuda<double>(p.data(), y.data(), g.data(), true, E, B, O, K,
                                              bounded, loss.data(), dp.data(), ws.data(), S());
  vagram_forward_cpu<double>(p.data(), y.data(), g.data(), true, E, B, O, K, bounded, wl.data(),
                             wd.data());
  loss.insert(loss.end(), dp.begin(), dp.end());
  wl.insert(wl.end(), wd.begin(), wd.end());
  check(std::string("vagram ") + (bounded ? "bounded" : "unbounded"), err, loss, wl);
}

void value_aware_case(int64_t E, int64_t N, int norm, bool ew) {
  auto qt = randn(N), qm = randn(E * N);
  auto loss = nans(ew ? E * N : 1), unit = nans(E * N), wl = nans(loss.size()), wu = nans(E * N);
  auto ws = nans(std::max<int64_t>(1, value_aware_cuda_workspace(E * N, ew)));
  const int err = value_aware_forward_cuda<double>(qt.data(), qm.data(), true, E, N, norm, ew,
                                                   loss.data(), unit.data(), ws.data(), S());
  value_aware_forward_cpu<double>(qt.data(), qm.data(), true, E, N, norm, ew, wl.data(),
                                  wu.data());
  loss.insert(loss.end(), unit.begin(), unit.end());
  wl.insert(wl.end(), wu.begin(), wu.end());
  check("value_aware norm " + std::to_string(norm), err, loss, wl);
}

void mlp_case(int64_t E, int64_t M, int64_t K, int64_t N) {
  auto x = randn(M * K), W = randn(E * K * N), b = randn(E * N);
  auto z = nans(E * M * N), h = nans(E * M * N), want = nans(E * M * N);
  const int err = mlp_layer_forward_cuda<double>(x.data(), 0, W.data(), b.data(), E, M, K, N,
                                                 mlp::kSilu, z.data(), h.data(), nullptr, nullptr,
                                                 0, nullptr, S());
  for (int64_t e = 0; e < E; ++e)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double s = b[e * N + n];
        for (int64_t k = 0; k < K; ++k) s += x[m * K + k] * W[(e * K + k) * N + n];
        want[(e * M + m) * N + n] = mlp::act(mlp::kSilu, s);
      }
  check("ensemble_mlp layer forward (shared x)", err, h, want, 1e-10);
  // Gaussian head backward against the CPU kernel
  const int64_t rows = M, D = 3;
  auto g = randn(rows * 2 * D), raw = randn(rows * D), lo = randn(D), hi = randn(D);
  for (auto& v : hi) v += 3.0;
  auto dy = nans(rows * 2 * D), dl = nans(D), dh = nans(D);
  auto wy = nans(rows * 2 * D), wdl = nans(D), wdh = nans(D);
  const int e2 = mlp_head_backward_cuda<double>(g.data(), raw.data(), lo.data(), hi.data(), rows,
                                                D, dy.data(), dl.data(), dh.data(), S());
  mlp_head_backward_cpu<double>(g.data(), raw.data(), lo.data(), hi.data(), rows, D, wy.data(),
                                wdl.data(), wdh.data());
  dy.insert(dy.end(), dl.begin(), dl.end());
  dy.insert(dy.end(), dh.begin(), dh.end());
  wy.insert(wy.end(), wdl.begin(), wdl.end());
  wy.insert(wy.end(), wdh.begin(), wdh.end());
  check("ensemble_mlp head backward", e2, dy, wy, 1e-10);
}

void rollout_case(int64_t N, int64_t O) {
  const int64_t D = O + 1, out_w = 2 * D;
  auto raw = randn(N * out_w), state = randn(N * O), lo = randn(D), hi = randn(D);
  for (auto& v : lo) v -= 3.0;
  std::vector<int64_t> pos(N);
  for (int64_t i = 0; i < N; ++i) pos[i] = (i * 7) % N;
  std::vector<double> tl(O, -1.5), tu(O, 1.5);
  auto next = nans(N * O), rew = nans(N), wnext = nans(N * O), wrew = nans(N);
  std::vector<uint8_t> done(N, 7), wdone(N, 7);
  rollout::EpilogueArgs<double> a{};
  a.raw = raw.data();
  a.pos = N % 7 ? pos.data() : nullptr;
  a.K = 1;
  a.N = N;
  a.O = O;
  a.out_w = out_w;
  a.gaussian = true;
  a.sample = true;
  a.min_logvar = lo.data();
  a.max_logvar = hi.data();
  a.state = state.data();
  a.term_lower = tl.data();
  a.term_upper = tu.data();
  a.term_check_finite = true;
  a.seed = 42;
  a.offset = 3;
  a.next_state = next.data();
  a.reward = rew.data();
  a.done = done.data();
  const int err = rollout_epilogue_cuda<double>(a, S());
  a.next_state = wnext.data();
  a.reward = wrew.data();
  a.done = wdone.data();
  rollout_epilogue_cpu<double>(a, 1);
  next.insert(next.end(), rew.begin(), rew.end());
  wnext.insert(wnext.end(), wrew.begin(), wrew.end());
  for (int64_t i = 0; i < N; ++i) {
    next.push_back(done[i]);
    wnext.push_back(wdone[i]);
  }
  check("rollout epilogue N=" + std::to_string(N), err, next, wnext, 1e-12);
}

}  // namespace

int main() {
  nll_case(1, 1, false);
  nll_case(3, 1037, true);
  nll_case(2, 5000, false);
  vagram_case(2, 37, 5, 3, true);
  vagram_case(2, 300, 5, 2, false);
  value_aware_case(3, 999, 1, false);
  value_aware_case(2, 17, 2, true);
  mlp_case(2, 70, 19, 67);
  mlp_case(1, 1, 1, 1);
  rollout_case(1, 1);
  rollout_case(53, 6);
  std::printf("%d failures\n", g_failures);
  return g_failures != 0;
}
