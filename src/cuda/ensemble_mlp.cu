// CUDA kernels of the ensemble MLP. COMPILED FOR sm_80/sm_90, NOT YET VERIFIED ON A GPU.
//
// There is no cuBLAS on the build machines, so the GEMMs are written here: one tiled,
// register-blocked batched GEMM (64x64 output tile per block, K step 16, 256 threads each
// owning a 4x4 register block; grid z = ensemble member) over arbitrary strides, so the same
// kernel computes
//   forward         Z = X W + b, epilogue: activation (writes z and h) or Gaussian-head bounds
//   input grad      dX = dZ W^T, epilogue: times act'(z_prev, h_prev) (the previous layer's dZ)
//   weight grad     dW = X^T dZ
// Bias gradients and the shared-input reduction over members are separate fixed-order
// reductions: every result is deterministic, no atomics. Odd sizes are handled by bounds checks
// on every tile load and store (zero fill). fp32 (or fp64) SIMT arithmetic; no TF32.
#include <cuda_runtime.h>

#include "fastmbrl/cuda_reduce.cuh"
#include "fastmbrl/ensemble_mlp.h"

namespace fastmbrl {
namespace {

constexpr int BM = 64, BN = 64, BK = 16, TM = 4, TN = 4, TX = 16;
constexpr int kGemmThreads = 256;  // 16 x 16 threads, each a TM x TN block
static_assert((BM / TM) * (BN / TN) == kGemmThreads, "tile and thread block disagree");
constexpr int kEpiForward = 0;  // + bias, then activation or Gaussian head
constexpr int kEpiScale = 1;    // times act'(z_prev, h_prev) when act >= 0, else plain store

template <typename T>
struct GemmArgs {
  // C[e, m, n] = sum_k A(e, m, k) B(e, k, n), A(e, m, k) = A[e a_e + m a_m + k a_k], etc.
  const T* A;
  int64_t a_e, a_m, a_k;
  const T* B;
  int64_t b_e, b_k, b_n;
  int64_t M, N, K;
  int act;
  T* out;           // [E, M, N]
  const T* bias;    // [E, N]            (forward)
  T* z;             // [E, M, N] or null (forward, hidden layers)
  const T* lo;      // [D]               (forward, Gaussian head)
  const T* hi;      // [D]
  int64_t D;        // 0: no head
  T* raw;           // [E, M, D]
  const T* z_prev;  // [E, M, N]         (kEpiScale)
  const T* h_prev;
};

template <typename T, int EPI>
__global__ void __launch_bounds__(kGemmThreads) gemm_kernel(const GemmArgs<T> p) {
  __shared__ T As[BK][BM + 1];
  __shared__ T Bs[BK][BN + 1];
  const int64_t e = blockIdx.z;
  const int64_t m0 = int64_t(blockIdx.y) * BM, n0 = int64_t(blockIdx.x) * BN;
  const int tid = threadIdx.x;
  const int tx = tid % TX, ty = tid / TX;
  const T* __restrict__ A = p.A + e * p.a_e;
  const T* __restrict__ B = p.B + e * p.b_e;
  // Load order: the unit-stride dimension fastest across threads (coalesced global reads).
  const bool a_k_fast = p.a_k == 1;
  const bool b_n_fast = p.b_n == 1;
  T acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i) {
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = T(0);
  }
  for (int64_t k0 = 0; k0 < p.K; k0 += BK) {
#pragma unroll
    for (int r = 0; r < (BM * BK) / kGemmThreads; ++r) {
      const int idx = tid + r * kGemmThreads;
      const int mm = a_k_fast ? idx / BK : idx % BM;
      const int kk = a_k_fast ? idx % BK : idx / BM;
      const int64_t m = m0 + mm, k = k0 + kk;
      As[kk][mm] = (m < p.M && k < p.K) ? A[m * p.a_m + k * p.a_k] : T(0);
    }
#pragma unroll
    for (int r = 0; r < (BN * BK) / kGemmThreads; ++r) {
      const int idx = tid + r * kGemmThreads;
      const int nn = b_n_fast ? idx % BN : idx / BK;
      const int kk = b_n_fast ? idx / BN : idx % BK;
      const int64_t n = n0 + nn, k = k0 + kk;
      Bs[kk][nn] = (n < p.N && k < p.K) ? B[k * p.b_k + n * p.b_n] : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      T a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = As[kk][ty + TX * i];
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = Bs[kk][tx + TX * j];
#pragma unroll
      for (int i = 0; i < TM; ++i) {
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int64_t m = m0 + ty + TX * i;
    if (m >= p.M) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int64_t n = n0 + tx + TX * j;
      if (n >= p.N) continue;
      const int64_t o = (e * p.M + m) * p.N + n;
      T v = acc[i][j];
      if (EPI == kEpiForward) {
        v += p.bias[e * p.N + n];
        if (p.act >= 0) {
          if (p.z != nullptr) p.z[o] = v;
          p.out[o] = mlp::act(p.act, v);
        } else if (p.D > 0 && n >= p.D) {
          const int64_t d = n - p.D;
          p.raw[(e * p.M + m) * p.D + d] = v;
          p.out[o] = mlp::bound(v, p.lo[d], p.hi[d]);
        } else {
          p.out[o] = v;
        }
      } else {
        if (p.act >= 0) v *= mlp::act_grad(p.act, p.z_prev[o], p.h_prev[o]);
        p.out[o] = v;
      }
    }
  }
}

// db[e, o] = sum_m dz[e, m, o]: 32 columns x 8 row-slices per block, fixed-order sums in double.
template <typename T>
__global__ void bias_grad_kernel(const T* __restrict__ dz, int64_t M, int64_t O,
                                 T* __restrict__ db) {
  __shared__ double part[8][33];
  const int64_t e = blockIdx.y;
  const int64_t o = int64_t(blockIdx.x) * 32 + threadIdx.x;
  double acc = 0.0;
  if (o < O) {
    for (int64_t m = threadIdx.y; m < M; m += 8) {
      acc += static_cast<double>(dz[(e * M + m) * O + o]);
    }
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && o < O) {
    double s = 0.0;
#pragma unroll
    for (int r = 0; r < 8; ++r) s += part[r][threadIdx.x];
    db[e * O + o] = static_cast<T>(s);
  }
}

template <typename T, int EPI>
int launch_gemm(const GemmArgs<T>& p, int64_t E, cudaStream_t s) {
  const int64_t gy = (p.M + BM - 1) / BM, gx = (p.N + BN - 1) / BN;
  if (gy > 65535 || E > 65535 || gx > 2147483647LL) return static_cast<int>(cudaErrorInvalidConfiguration);
  dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(E));
  gemm_kernel<T, EPI><<<grid, kGemmThreads, 0, s>>>(p);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
__global__ void sum_members_kernel(const T* __restrict__ ws, int64_t E, int64_t n,
                                   T* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    T s = T(0);
    for (int64_t e = 0; e < E; ++e) s += ws[e * n + i];
    out[i] = s;
  }
}

template <typename T>
__global__ void head_backward_elem_kernel(const T* __restrict__ g, const T* __restrict__ raw,
                                          const T* __restrict__ lo, const T* __restrict__ hi,
                                          int64_t rows, int64_t D, T* __restrict__ dy) {
  const int64_t total = rows * D;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / D, d = i % D;
    const int64_t row = r * 2 * D;
    T d_raw, dl, dh;
    mlp::bound_grad(raw[i], lo[d], hi[d], g[row + D + d], &d_raw, &dl, &dh);
    dy[row + d] = g[row + d];
    dy[row + D + d] = d_raw;
  }
}

constexpr int kRedThreads = 256;

template <typename T>
__device__ __forceinline__ T block_sum(T v, T* warp_sums) {
  return cuda::block_sum<kRedThreads>(v, warp_sums);
}

// One block per d: d_lo[d], d_hi[d] = sums over rows (double accumulation, fixed order).
template <typename T>
__global__ void head_backward_bounds_kernel(const T* __restrict__ g, const T* __restrict__ raw,
                                            const T* __restrict__ lo, const T* __restrict__ hi,
                                            int64_t rows, int64_t D, T* __restrict__ d_lo,
                                            T* __restrict__ d_hi) {
  __shared__ double warp_sums[kRedThreads / 32];
  const int64_t d = blockIdx.x;
  double acc_lo = 0.0, acc_hi = 0.0;
  for (int64_t r = threadIdx.x; r < rows; r += kRedThreads) {
    T d_raw, dl, dh;
    mlp::bound_grad(raw[r * D + d], lo[d], hi[d], g[r * 2 * D + D + d], &d_raw, &dl, &dh);
    acc_lo += static_cast<double>(dl);
    acc_hi += static_cast<double>(dh);
  }
  acc_lo = block_sum(acc_lo, warp_sums);
  acc_hi = block_sum(acc_hi, warp_sums);
  if (threadIdx.x == 0) {
    d_lo[d] = static_cast<T>(acc_lo);
    d_hi[d] = static_cast<T>(acc_hi);
  }
}

int grid_for(int64_t n) {
  int64_t g = (n + kRedThreads - 1) / kRedThreads;
  if (g > 65535 * 8) g = 65535 * 8;
  return static_cast<int>(g < 1 ? 1 : g);
}

}  // namespace

template <typename T>
int mlp_layer_forward_cuda(const T* x, int64_t x_member_stride, const T* W, const T* b, int64_t E,
                           int64_t M, int64_t K, int64_t N, int act, T* z, T* h, const T* lo,
                           const T* hi, int64_t D, T* raw, void* stream) {
  GemmArgs<T> p{};
  p.A = x;
  p.a_e = x_member_stride;
  p.a_m = K;
  p.a_k = 1;
  p.B = W;
  p.b_e = K * N;
  p.b_k = N;
  p.b_n = 1;
  p.M = M;
  p.N = N;
  p.K = K;
  p.act = act;
  p.out = h;
  p.bias = b;
  p.z = z;
  p.lo = lo;
  p.hi = hi;
  p.D = D;
  p.raw = raw;
  return launch_gemm<T, kEpiForward>(p, E, static_cast<cudaStream_t>(stream));
}

template <typename T>
int mlp_layer_backward_input_cuda(const T* dz, const T* W, int64_t E, int64_t M, int64_t K,
                                  int64_t N, int act, const T* z_prev, const T* h_prev, T* dx,
                                  void* stream) {
  GemmArgs<T> p{};
  p.A = dz;
  p.a_e = M * K;
  p.a_m = K;
  p.a_k = 1;
  p.B = W;  // W[e] is [N, K]: B(e, k, n) = W[e, n, k]
  p.b_e = N * K;
  p.b_k = 1;
  p.b_n = K;
  p.M = M;
  p.N = N;
  p.K = K;
  p.act = act;
  p.out = dx;
  p.z_prev = z_prev;
  p.h_prev = h_prev;
  return launch_gemm<T, kEpiScale>(p, E, static_cast<cudaStream_t>(stream));
}

template <typename T>
int mlp_layer_backward_params_cuda(const T* x, int64_t x_member_stride, const T* dz, int64_t E,
                                   int64_t M, int64_t I, int64_t O, T* dW, T* db, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  GemmArgs<T> p{};
  p.A = x;  // A(e, i, m) = x[e, m, i]
  p.a_e = x_member_stride;
  p.a_m = 1;
  p.a_k = I;
  p.B = dz;  // B(e, m, o) = dz[e, m, o]
  p.b_e = M * O;
  p.b_k = O;
  p.b_n = 1;
  p.M = I;
  p.N = O;
  p.K = M;
  p.act = mlp::kNone;
  p.out = dW;
  int err = launch_gemm<T, kEpiScale>(p, E, s);
  if (err != 0) return err;
  if (E > 65535) return static_cast<int>(cudaErrorInvalidConfiguration);
  dim3 grid(static_cast<unsigned>((O + 31) / 32), static_cast<unsigned>(E));
  bias_grad_kernel<T><<<grid, dim3(32, 8), 0, s>>>(dz, M, O, db);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int mlp_sum_members_cuda(const T* ws, int64_t E, int64_t n, T* out, void* stream) {
  sum_members_kernel<T><<<grid_for(n), kRedThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      ws, E, n, out);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int mlp_head_backward_cuda(const T* g, const T* raw, const T* lo, const T* hi, int64_t rows,
                           int64_t D, T* dy, T* d_lo, T* d_hi, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  head_backward_elem_kernel<T><<<grid_for(rows * D), kRedThreads, 0, s>>>(g, raw, lo, hi, rows,
                                                                          D, dy);
  head_backward_bounds_kernel<T><<<static_cast<unsigned>(D), kRedThreads, 0, s>>>(
      g, raw, lo, hi, rows, D, d_lo, d_hi);
  return static_cast<int>(cudaGetLastError());
}

#define FASTMBRL_INSTANTIATE(T)                                                                \
  template int mlp_layer_forward_cuda<T>(const T*, int64_t, const T*, const T*, int64_t,       \
                                         int64_t, int64_t, int64_t, int, T*, T*, const T*,     \
                                         const T*, int64_t, T*, void*);                       \
  template int mlp_layer_backward_input_cuda<T>(const T*, const T*, int64_t, int64_t, int64_t, \
                                                int64_t, int, const T*, const T*, T*, void*);  \
  template int mlp_layer_backward_params_cuda<T>(const T*, int64_t, const T*, int64_t,         \
                                                 int64_t, int64_t, int64_t, T*, T*, void*);    \
  template int mlp_sum_members_cuda<T>(const T*, int64_t, int64_t, T*, void*);                 \
  template int mlp_head_backward_cuda<T>(const T*, const T*, const T*, const T*, int64_t,      \
                                         int64_t, T*, T*, T*, void*);
FASTMBRL_INSTANTIATE(float)
FASTMBRL_INSTANTIATE(double)
#undef FASTMBRL_INSTANTIATE

}  // namespace fastmbrl
