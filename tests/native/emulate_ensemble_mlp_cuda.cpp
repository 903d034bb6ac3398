// Host emulation of the ensemble MLP CUDA kernels that carry the indexing logic (the tiled
// batched GEMM with its epilogues, and the bias-gradient reduction): the kernel source between
// the "host-emulated kernels" markers of src/cuda/ensemble_mlp.cu is compiled as C++ and run
// with one std::thread per CUDA thread, std::barrier for __syncthreads and blocks one after
// another, then compared with naive loops. It checks tiling, strides, bounds checks and
// epilogues on a machine without a GPU; it says nothing about the memory model, warp-level
// primitives or speed. Driven by tests/test_ensemble_mlp.py::test_cuda_kernels_host_emulation.
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <thread>
#include <vector>
#include "fastmbrl/ensemble_mlp.h"
struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
thread_local dim3 threadIdx, blockIdx;
std::barrier<>* g_bar;
#define __global__
#define __launch_bounds__(x)
#define __shared__ static
#define __syncthreads() g_bar->arrive_and_wait()
using std::fma;
namespace fastmbrl {
#include "ensemble_mlp_kernels.inc"
}
using namespace fastmbrl;
template <class F> void launch(dim3 grid, dim3 block, F f) {
  int nt = block.x * block.y * block.z;
  for (unsigned bz = 0; bz < grid.z; ++bz) for (unsigned by = 0; by < grid.y; ++by) for (unsigned bx = 0; bx < grid.x; ++bx) {
    std::barrier<> bar(nt); g_bar = &bar;
    std::vector<std::thread> ts;
    for (unsigned tz = 0; tz < block.z; ++tz) for (unsigned ty = 0; ty < block.y; ++ty) for (unsigned tx = 0; tx < block.x; ++tx)
      ts.emplace_back([=] { blockIdx = dim3(bx, by, bz); threadIdx = dim3(tx, ty, tz); f(); });
    for (auto& t : ts) t.join();
  }
}
template <class T, int EPI> void run_gemm(const GemmArgs<T>& p, int64_t E) {
  dim3 grid((p.N + BN - 1) / BN, (p.M + BM - 1) / BM, E);
  launch(grid, dim3(kGemmThreads), [&] { gemm_kernel<T, EPI>(p); });
}
std::mt19937 rng(0);
std::vector<double> rnd(size_t n) { std::normal_distribution<double> d; std::vector<double> v(n); for (auto& x : v) x = d(rng); return v; }
double maxdiff(const std::vector<double>& a, const std::vector<double>& b) { double m = 0; for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i])); return m; }
int fails = 0;
void check(const char* what, double d) { printf("%-50s maxdiff %.3g %s\n", what, d, d < 1e-9 ? "ok" : "FAIL"); if (!(d < 1e-9)) ++fails; }
int main() {
  const double NaN = std::nan("");
  for (int shared = 0; shared < 2; ++shared)
  for (auto [E, M, K, N, act, D] : std::vector<std::tuple<int64_t,int64_t,int64_t,int64_t,int,int64_t>>{
         {3, 37, 23, 200, mlp::kSilu, 0}, {2, 65, 113, 36, mlp::kNone, 18},
         {1, 1, 3, 2, mlp::kNone, 1}, {2, 64, 16, 64, mlp::kTanh, 0},
         {2, 19, 14, 17, mlp::kRelu, 0}}) {
    char buf[200];
    auto x = rnd(shared ? M * K : E * M * K), W = rnd(E * K * N), b = rnd(E * N), lo = rnd(D > 0 ? D : 1), hi = rnd(D > 0 ? D : 1);
    for (auto& v : lo) v -= 2; for (auto& v : hi) v += 1;
    int64_t xs = shared ? 0 : M * K;
    std::vector<double> z(E * M * N, NaN), h(E * M * N, NaN), raw(E * M * (D > 0 ? D : 1), NaN);
    std::vector<double> zr(E * M * N), hr(E * M * N), rawr(raw.size(), NaN);
    for (int64_t e = 0; e < E; ++e) for (int64_t m = 0; m < M; ++m) for (int64_t n = 0; n < N; ++n) {
      double s = b[e * N + n]; for (int64_t k = 0; k < K; ++k) s += x[e * xs + m * K + k] * W[(e * K + k) * N + n];
      int64_t o = (e * M + m) * N + n; zr[o] = s;
      if (act >= 0) hr[o] = mlp::act(act, s);
      else if (D > 0 && n >= D) { rawr[(e * M + m) * D + n - D] = s; hr[o] = mlp::bound(s, lo[n - D], hi[n - D]); }
      else hr[o] = s;
    }
    GemmArgs<double> p{};
    p.A = x.data(); p.a_e = xs; p.a_m = K; p.a_k = 1; p.B = W.data(); p.b_e = K * N; p.b_k = N; p.b_n = 1;
    p.M = M; p.N = N; p.K = K; p.act = act; p.out = h.data(); p.bias = b.data(); p.z = act >= 0 ? z.data() : nullptr;
    p.lo = lo.data(); p.hi = hi.data(); p.D = D; p.raw = raw.data();
    run_gemm<double, kEpiForward>(p, E);
    snprintf(buf, sizeof buf, "fwd shared=%d E=%ld M=%ld K=%ld N=%ld act=%d D=%ld", shared, E, M, K, N, act, D);
    double d = maxdiff(h, hr); if (act >= 0) d = std::max(d, maxdiff(z, zr)); if (D > 0) d = std::max(d, maxdiff(raw, rawr));
    check(buf, d);
    // backward input: dx[e,m,n'] = sum_k dz[e,m,k] W[e,n',k], layer in = K (n'), out = N (k); times act'
    auto dz = rnd(E * M * N); std::vector<double> dx(E * M * K, NaN), dxr(E * M * K);
    auto zp = rnd(E * M * K); std::vector<double> hp(E * M * K); for (size_t i = 0; i < hp.size(); ++i) hp[i] = mlp::act(act >= 0 ? act : 0, zp[i]);
    for (int64_t e = 0; e < E; ++e) for (int64_t m = 0; m < M; ++m) for (int64_t i = 0; i < K; ++i) {
      double s = 0; for (int64_t k = 0; k < N; ++k) s += dz[(e * M + m) * N + k] * W[(e * K + i) * N + k];
      int64_t o = (e * M + m) * K + i; dxr[o] = act >= 0 ? s * mlp::act_grad(act, zp[o], hp[o]) : s; }
    GemmArgs<double> q{};
    q.A = dz.data(); q.a_e = M * N; q.a_m = N; q.a_k = 1; q.B = W.data(); q.b_e = K * N; q.b_k = 1; q.b_n = N;
    q.M = M; q.N = K; q.K = N; q.act = act; q.out = dx.data(); q.z_prev = zp.data(); q.h_prev = hp.data();
    run_gemm<double, kEpiScale>(q, E);
    snprintf(buf, sizeof buf, "bwd input  shared=%d E=%ld M=%ld in=%ld out=%ld", shared, E, M, K, N); check(buf, maxdiff(dx, dxr));
    // backward params: dW[e,i,o] = sum_m x[e,m,i] dz[e,m,o]; db[e,o] = sum_m dz
    std::vector<double> dW(E * K * N, NaN), dWr(E * K * N), db(E * N, NaN), dbr(E * N, 0.0);
    for (int64_t e = 0; e < E; ++e) for (int64_t i = 0; i < K; ++i) for (int64_t o = 0; o < N; ++o) {
      double s = 0; for (int64_t m = 0; m < M; ++m) s += x[e * xs + m * K + i] * dz[(e * M + m) * N + o]; dWr[(e * K + i) * N + o] = s; }
    for (int64_t e = 0; e < E; ++e) for (int64_t m = 0; m < M; ++m) for (int64_t o = 0; o < N; ++o) dbr[e * N + o] += dz[(e * M + m) * N + o];
    GemmArgs<double> r{};
    r.A = x.data(); r.a_e = xs; r.a_m = 1; r.a_k = K; r.B = dz.data(); r.b_e = M * N; r.b_k = N; r.b_n = 1;
    r.M = K; r.N = N; r.K = M; r.act = mlp::kNone; r.out = dW.data();
    run_gemm<double, kEpiScale>(r, E);
    const double* dzp = dz.data(); double* dbp = db.data(); int64_t MM = M, NN = N;
    launch(dim3((N + 31) / 32, E), dim3(32, 8), [=] { bias_grad_kernel<double>(dzp, MM, NN, dbp); });
    snprintf(buf, sizeof buf, "bwd params shared=%d E=%ld M=%ld in=%ld out=%ld", shared, E, M, K, N);
    check(buf, std::max(maxdiff(dW, dWr), maxdiff(db, dbr)));
  }
  printf("%d failures\n", fails);
  return fails != 0;
}
