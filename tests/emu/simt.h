// SIMT emulation layer: the CUDA sources of src/cuda/ compiled as host C++ and executed on the
// CPU with CUDA's execution rules, so that every kernel runs in CI on machines without a GPU.
//
// How a .cu file becomes host C++ (tests/emu/cu2cpp.py, the build step): `k<<<g, b, s, st>>>(a)`
// becomes `::simt::launch(&k, "k", __FILE__, __LINE__, <k's __launch_bounds__ or 1024>, g, b,
// s, st)(a)`; everything else is unchanged and sees this header through the shim
// tests/emu/include/cuda_runtime.h (with __CUDA_ARCH__ defined, so the device branches of the
// shared headers are the ones that run).
//
// What it emulates (docs/ops.md, "CUDA kernels without a GPU"):
//   * threadIdx/blockIdx/blockDim/gridDim; every CUDA thread is a fiber (its own stack), the
//     threads of a block run one at a time until they block or exit;
//   * __shared__ memory: one copy per block, filled with NaN (0xFF bytes) before every block, so
//     reading shared memory nobody wrote shows up as NaN;
//   * __syncthreads: a real block barrier. All threads that have not exited must arrive at the
//     same __syncthreads (same source line); a barrier that some threads skipped (exited, or
//     waiting elsewhere) is reported instead of hanging;
//   * warp shuffles (idx/up/down/xor), votes (all/any/ballot) and __syncwarp with CUDA's mask
//     and width rules: the calling lane must be in the mask, every lane of the mask must arrive
//     at the same call with the same mask, the lanes must exist and not have exited; a value
//     read from a lane outside the mask is undefined on a GPU and poisoned (all bits set: NaN)
//     here; width must be a power of two <= 32;
//   * launches checked as a GPU checks them (grid.x < 2^31, grid.y/z <= 65535, block.x/y <= 1024,
//     block.z <= 64, threads <= 1024 and <= __launch_bounds__, dynamic shared memory <= 48 KiB),
//     the stream checked at every launch (it must be the caller's stream, simt::caller_stream()),
//     errors reported like the runtime: cudaGetLastError / cudaPeekAtLastError, with a detailed
//     cudaGetErrorString;
//   * block and thread order: forward, reverse or shuffled (simt::set_order), so a result that
//     depends on the order (a race) differs between orders.
// What it cannot check: the memory model (a missing __threadfence or volatile), timing, the
// exact rounding of device math (host libm runs), int32 overflow at real sizes it never runs.
#pragma once

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#ifndef __CUDA_ARCH__
#define __CUDA_ARCH__ 800
#endif
#define SIMT_EMULATION 1

// ---- CUDA keywords ------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __noinline__ __attribute__((noinline))
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
// __shared__ declarations are rewritten by cu2cpp.py into simt::shared<T[...]>(slot) references:
// one copy per block, filled with 0xFF bytes (NaN for float and double, -1 for integers) when the
// block first reaches the declaration. A __shared__ left over (a file not rewritten) fails to
// compile.
#define __shared__ __shared__is_rewritten_by_tests_emu_cu2cpp_py

// ---- runtime types --------------------------------------------------------------------------
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
typedef struct CUstream_st* cudaStream_t;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorIllegalInstruction = 715,
  cudaErrorLaunchFailure = 719,
};

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int major, minor, multiProcessorCount, maxThreadsPerBlock;
  size_t sharedMemPerBlock;
};

cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t err);
cudaError_t cudaRuntimeGetVersion(int* v);
cudaError_t cudaDriverGetVersion(int* v);
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamSynchronize(cudaStream_t s);

namespace simt {

struct ThreadHead {
  uint3 tid;
  unsigned lane, warp;
};

namespace detail {
extern ThreadHead* g_cur;  // the CUDA thread (fiber) running now
extern uint3 g_block_idx;
extern dim3 g_block_dim, g_grid_dim;

// Warp collectives: kinds
enum Kind : int { kShflIdx, kShflUp, kShflDown, kShflXor, kAll, kAny, kBallot, kSyncWarp };
void syncthreads(const char* file, int line);
// Blocks the calling fiber until every lane of `mask` is at this call; returns the lane's result
// (the source lane's bits for shuffles, the vote for votes). `poisoned` is set when a shuffle
// read a lane outside the mask (undefined on a GPU).
uint64_t warp_op(const char* file, int line, int kind, unsigned mask, uint64_t bits, int arg,
                 int width, bool* poisoned);

struct LaunchSite {
  const char* name;
  const char* file;
  int line;
  int max_threads;  // __launch_bounds__ (1024 without)
};
void launch_grid(const LaunchSite& site, dim3 grid, dim3 block, size_t shmem, cudaStream_t s,
                 void (*body)(void*), void* ctx);
}  // namespace detail

// ---- control (tests) ------------------------------------------------------------------------
enum Order : int { kForward = 0, kReverse = 1, kShuffled = 2 };
void set_order(int order, uint64_t seed);
int order();
// The stream every launch must name (what the glue hands the entry points); a fake handle.
cudaStream_t caller_stream();
struct Stats {
  uint64_t launches, blocks, threads, failed_launches;
};
Stats stats();
void reset_stats();
// Names of the kernels launched since the last call (comma separated), then cleared.
const char* take_launch_log();

inline const uint3& thread_idx() { return detail::g_cur->tid; }

// ---- shared memory ------------------------------------------------------------------------------
struct SharedSlot {  // one per __shared__ declaration (and template instantiation)
  uint64_t block;     // the block that allocated it last
  size_t offset;
};
namespace detail {
char* shared_alloc(SharedSlot& slot, size_t size, size_t align, const char* name);
}
template <class A>
inline A& shared(SharedSlot& slot, const char* name) {
  return *reinterpret_cast<A*>(detail::shared_alloc(slot, sizeof(A), alignof(A), name));
}

template <class P>
struct KernelArgs;

template <class... P>
struct Launch {
  void (*kernel)(P...);
  detail::LaunchSite site;
  dim3 grid, block;
  size_t shmem;
  cudaStream_t stream;

  using Params = std::tuple<std::decay_t<P>...>;
  struct Ctx {
    void (*kernel)(P...);
    const Params* params;
  };

  template <class... A>
  void operator()(A&&... a) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong argument count");
    const Params params(static_cast<std::decay_t<P>>(std::forward<A>(a))...);
    Ctx ctx{kernel, &params};
    detail::launch_grid(site, grid, block, shmem, stream, &run, &ctx);
  }

  static void run(void* c) {
    const Ctx* ctx = static_cast<const Ctx*>(c);
    Params local = *ctx->params;  // each thread gets its own copy of the parameters, as on a GPU
    std::apply(ctx->kernel, local);
  }
};

template <class... P>
Launch<P...> launch(void (*kernel)(P...), const char* name, const char* file, int line,
                    int max_threads, dim3 grid, dim3 block, size_t shmem = 0,
                    cudaStream_t stream = nullptr) {
  return Launch<P...>{kernel, {name, file, line, max_threads}, grid, block, shmem, stream};
}

// A kernel launched through a function-pointer variable.
template <class... P>
Launch<P...> launch(void (*const* kernel)(P...), const char* name, const char* file, int line,
                    int max_threads, dim3 grid, dim3 block, size_t shmem = 0,
                    cudaStream_t stream = nullptr) {
  return launch(*kernel, name, file, line, max_threads, grid, block, shmem, stream);
}

// ---- warp-level helpers -----------------------------------------------------------------------
template <class T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type > 8 B");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
template <class T>
inline T shfl(const char* file, int line, int kind, unsigned mask, T v, int arg, int width = 32) {
  asm volatile("" ::: "memory");
  bool poisoned = false;
  const uint64_t r = detail::warp_op(file, line, kind, mask, to_bits(v), arg, width, &poisoned);
  asm volatile("" ::: "memory");
  return from_bits<T>(r);
}
inline int vote(const char* file, int line, int kind, unsigned mask, int pred) {
  asm volatile("" ::: "memory");
  const uint64_t r = detail::warp_op(file, line, kind, mask, pred != 0, 0, 32, nullptr);
  asm volatile("" ::: "memory");
  return static_cast<int>(r);
}
inline unsigned ballot(const char* file, int line, unsigned mask, int pred) {
  asm volatile("" ::: "memory");
  const uint64_t r = detail::warp_op(file, line, detail::kBallot, mask, pred != 0, 0, 32, nullptr);
  asm volatile("" ::: "memory");
  return static_cast<unsigned>(r);
}
inline void syncwarp(const char* file, int line, unsigned mask = 0xffffffffu) {
  asm volatile("" ::: "memory");
  detail::warp_op(file, line, detail::kSyncWarp, mask, 0, 0, 32, nullptr);
  asm volatile("" ::: "memory");
}
inline void syncthreads(const char* file, int line) {
  asm volatile("" ::: "memory");
  detail::syncthreads(file, line);
  asm volatile("" ::: "memory");
}

}  // namespace simt

// ---- CUDA built-in variables and functions --------------------------------------------------------
#define threadIdx (::simt::thread_idx())
#define blockIdx (static_cast<const uint3&>(::simt::detail::g_block_idx))
#define blockDim (static_cast<const dim3&>(::simt::detail::g_block_dim))
#define gridDim (static_cast<const dim3&>(::simt::detail::g_grid_dim))
#define warpSize 32

#define __syncthreads() ::simt::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::simt::syncwarp(__FILE__, __LINE__ __VA_OPT__(, ) __VA_ARGS__)
#define __shfl_sync(...) ::simt::shfl(__FILE__, __LINE__, ::simt::detail::kShflIdx, __VA_ARGS__)
#define __shfl_up_sync(...) ::simt::shfl(__FILE__, __LINE__, ::simt::detail::kShflUp, __VA_ARGS__)
#define __shfl_down_sync(...) \
  ::simt::shfl(__FILE__, __LINE__, ::simt::detail::kShflDown, __VA_ARGS__)
#define __shfl_xor_sync(...) ::simt::shfl(__FILE__, __LINE__, ::simt::detail::kShflXor, __VA_ARGS__)
#define __all_sync(mask, pred) ::simt::vote(__FILE__, __LINE__, ::simt::detail::kAll, mask, pred)
#define __any_sync(mask, pred) ::simt::vote(__FILE__, __LINE__, ::simt::detail::kAny, mask, pred)
#define __ballot_sync(mask, pred) ::simt::ballot(__FILE__, __LINE__, mask, pred)

inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<uint64_t>(a) * b) >> 32);
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
using std::fma;
using std::isfinite;
using std::isinf;
using std::isnan;
