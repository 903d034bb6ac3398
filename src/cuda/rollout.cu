// CUDA kernels of the rollout step (compiled, not yet verified on a GPU).
//
// Layers: a grouped GEMM over member segments. Rows were grouped by member on the device (by
// torch ops in fastmbrl/ops/rollout.py: stable argsort, scatter-add counts, cumsum), so each
// member's rows form one contiguous segment of the "virtual row" space. Every block owns one
// kBM-row tile of one segment and one kBN-column tile of the layer: blockIdx.x walks the
// segments' tile table (seg_tile = exclusive prefix sum of ceil(rows/kBM)) and exits when it is
// past the last tile, so the host launches an upper bound (ceil(R/kBM) + S tiles) and never
// reads the per-member counts (no synchronization). Bias and activation are fused into the
// GEMM's store; the first layer gathers [state, action] rows by `src` and normalizes them while
// loading its A tile.
//
// Epilogue: one warp per row, lanes over groups of 4 output dims (one Philox call per group),
// fusing logvar bounds, noise, delta add, reward and the TerminationRule (warp vote), writing
// outputs in the original row order.
#include <cuda_runtime.h>

#include "fastmbrl/rollout.h"

namespace fastmbrl {
namespace {

constexpr int kBM = 64;  // rows per tile
constexpr int kBN = 64;  // output columns per tile
constexpr int kBK = 16;  // reduction slice
constexpr int kTM = 4;   // rows per thread
constexpr int kTN = 4;   // columns per thread
constexpr int kThreads = (kBM / kTM) * (kBN / kTN);  // 256
constexpr int kEpilogueThreads = 256;

template <typename T>
struct LayerArgs {
  const T* in;  // [R, K_in] or null (first layer: gather from state/action)
  const T* state;
  const T* action;
  int64_t O, A;
  const T* in_mean;
  const T* in_std;
  const int64_t* src;  // [R] original row of each virtual row (first layer)
  const T* W;          // [E, K_in, N_out]
  const T* b;          // [E, N_out]
  int64_t K_in, N_out;
  const int64_t* seg_member;
  const int64_t* seg_start;
  const int64_t* seg_rows;
  const int64_t* seg_tile;
  int64_t S;
  int act;
  T* out;  // [R, N_out]
};

template <typename T>
__global__ void __launch_bounds__(kThreads) grouped_layer_kernel(LayerArgs<T> a) {
  __shared__ T As[kBK][kBM + 1];
  __shared__ T Bs[kBK][kBN];
  __shared__ int64_t src_rows[kBM];

  // Which segment does this row tile belong to? (S is the number of members: a short scan.)
  const int64_t tile = blockIdx.x;
  int64_t s = -1;
  for (int64_t t = 0; t < a.S; ++t) {
    const int64_t first = a.seg_tile[t];
    const int64_t n = (a.seg_rows[t] + kBM - 1) / kBM;
    if (tile >= first && tile < first + n) {
      s = t;
      break;
    }
  }
  if (s < 0) return;  // past the last tile: uniform over the block, before any barrier

  const int64_t row_begin = a.seg_start[s] + (tile - a.seg_tile[s]) * kBM;
  const int64_t row_end = a.seg_start[s] + a.seg_rows[s];
  const int64_t member = a.seg_member[s];
  const T* W = a.W + member * a.K_in * a.N_out;
  const T* bias = a.b + member * a.N_out;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kBN;
  const int tid = threadIdx.x;

  if (a.in == nullptr) {
    if (tid < kBM) {
      const int64_t row = row_begin + tid;
      src_rows[tid] = row < row_end ? a.src[row] : 0;
    }
    __syncthreads();
  }

  const int ty = tid / (kBN / kTN);
  const int tx = tid % (kBN / kTN);
  T acc[kTM][kTN];
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
#pragma unroll
    for (int j = 0; j < kTN; ++j) acc[i][j] = T(0);
  }

  for (int64_t k0 = 0; k0 < a.K_in; k0 += kBK) {
    for (int idx = tid; idx < kBM * kBK; idx += kThreads) {
      const int r = idx / kBK, k = idx % kBK;
      const int64_t row = row_begin + r, col = k0 + k;
      T v = T(0);
      if (row < row_end && col < a.K_in) {
        if (a.in != nullptr) {
          v = a.in[row * a.K_in + col];
        } else {
          const int64_t src = src_rows[r];
          v = col < a.O ? a.state[src * a.O + col] : a.action[src * a.A + (col - a.O)];
          if (a.in_mean != nullptr) v = (v - a.in_mean[col]) / a.in_std[col];
        }
      }
      As[k][r] = v;
    }
    for (int idx = tid; idx < kBK * kBN; idx += kThreads) {
      const int k = idx / kBN, n = idx % kBN;
      const int64_t kk = k0 + k, col = n0 + n;
      Bs[k][n] = (kk < a.K_in && col < a.N_out) ? W[kk * a.N_out + col] : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kBK; ++k) {
      T av[kTM], bv[kTN];
#pragma unroll
      for (int i = 0; i < kTM; ++i) av[i] = As[k][ty * kTM + i];
#pragma unroll
      for (int j = 0; j < kTN; ++j) bv[j] = Bs[k][tx * kTN + j];
#pragma unroll
      for (int i = 0; i < kTM; ++i) {
#pragma unroll
        for (int j = 0; j < kTN; ++j) acc[i][j] += av[i] * bv[j];
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    const int64_t row = row_begin + ty * kTM + i;
    if (row >= row_end) continue;
#pragma unroll
    for (int j = 0; j < kTN; ++j) {
      const int64_t col = n0 + tx * kTN + j;
      if (col < a.N_out) {
        a.out[row * a.N_out + col] = rollout::activate(acc[i][j] + bias[col], a.act);
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kEpilogueThreads)
    epilogue_kernel(rollout::EpilogueArgs<T> a) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t n_warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  const int64_t groups = (a.O + 1 + 3) / 4;
  for (int64_t i = warp; i < a.N; i += n_warps) {  // uniform over the warp
    bool alive = true;
    for (int64_t g = lane; g < groups; g += 32) alive = rollout::epilogue_group(a, i, g) && alive;
    alive = __all_sync(0xffffffffu, alive);
    if (lane == 0) a.done[i] = alive ? 0 : 1;
  }
}

}  // namespace

int rollout_cuda_tile_rows() { return kBM; }

template <typename T>
int rollout_layer_cuda(const T* in, const T* state, const T* action, int64_t O, int64_t A,
                       const T* in_mean, const T* in_std, const int64_t* src, const T* W,
                       const T* b, int64_t K_in, int64_t N_out, const int64_t* seg_member,
                       const int64_t* seg_start, const int64_t* seg_rows, const int64_t* seg_tile,
                       int64_t S, int64_t grid_tiles, int act, T* out, void* stream) {
  if (grid_tiles <= 0 || N_out <= 0) return 0;
  LayerArgs<T> a{in,      state,     action,    O,        A,        in_mean, in_std,
                 src,     W,         b,         K_in,     N_out,    seg_member,
                 seg_start, seg_rows, seg_tile, S,        act,      out};
  const dim3 grid(static_cast<unsigned>(grid_tiles), static_cast<unsigned>((N_out + kBN - 1) / kBN));
  grouped_layer_kernel<T><<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(a);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int rollout_epilogue_cuda(const rollout::EpilogueArgs<T>& args, void* stream) {
  if (args.N <= 0) return 0;
  const int64_t warps_per_block = kEpilogueThreads / 32;
  int64_t blocks = (args.N + warps_per_block - 1) / warps_per_block;
  if (blocks > 65535 * 16) blocks = 65535 * 16;
  epilogue_kernel<T><<<static_cast<unsigned>(blocks), kEpilogueThreads, 0,
                       static_cast<cudaStream_t>(stream)>>>(args);
  return static_cast<int>(cudaGetLastError());
}

#define FASTMBRL_INSTANTIATE(T)                                                                 \
  template int rollout_layer_cuda<T>(const T*, const T*, const T*, int64_t, int64_t, const T*,  \
                                     const T*, const int64_t*, const T*, const T*, int64_t,     \
                                     int64_t, const int64_t*, const int64_t*, const int64_t*,   \
                                     const int64_t*, int64_t, int64_t, int, T*, void*);         \
  template int rollout_epilogue_cuda<T>(const rollout::EpilogueArgs<T>&, void*);
FASTMBRL_INSTANTIATE(float)
FASTMBRL_INSTANTIATE(double)
#undef FASTMBRL_INSTANTIATE

}  // namespace fastmbrl
