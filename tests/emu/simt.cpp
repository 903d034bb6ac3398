// Runtime of the SIMT emulation layer (tests/emu/simt.h): fibers, the block scheduler, warp
// collectives, launch checks and the emulated CUDA runtime error state.
#include "simt.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define SIMT_ASAN 1
#endif


namespace simt {
namespace detail {

ThreadHead* g_cur = nullptr;
uint3 g_block_idx{0, 0, 0};
dim3 g_block_dim, g_grid_dim;

namespace {

// ---- emulated runtime error state ----------------------------------------------------------
cudaError_t g_last_error = cudaSuccess;
std::string g_error_detail;  // message of the most recent error
cudaError_t g_detail_code = cudaSuccess;

int g_order = kForward;
uint64_t g_seed = 0;
Stats g_stats{0, 0, 0, 0};
std::string g_launch_log, g_taken_log;
char g_stream_token;

void set_error(cudaError_t code, const std::string& msg) {
  g_last_error = code;
  g_detail_code = code;
  g_error_detail = msg;
  ++g_stats.failed_launches;
}

// ---- fibers ------------------------------------------------------------------------------------
constexpr size_t kStackSize = 256 * 1024;
constexpr size_t kGuard = 4096;

enum State : int { kRunnable, kAtBarrier, kAtWarp, kDone };

struct Fiber {
  ThreadHead head;
  State state = kRunnable;
  bool started = false;
  char* stack = nullptr;  // usable stack (above the guard page)
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
#if defined(SIMT_ASAN)
  void* fake_stack = nullptr;
#endif
  // where it waits
  const char* file = nullptr;
  int line = 0;
  // warp collective
  int kind = 0;
  unsigned mask = 0;
  uint64_t bits = 0;
  int arg = 0, width = 32;
  uint64_t result = 0;
  bool poisoned = false;
};

#if defined(__x86_64__)
extern "C" void simt_ctx_switch(void** save_sp, void* new_sp);
extern "C" void simt_fiber_entry();
// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores
// the stack pointer in *save_sp, switches to new_sp and restores the same from there.
asm(R"(
  .text
  .globl simt_ctx_switch
  .type simt_ctx_switch,@function
simt_ctx_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size simt_ctx_switch, .-simt_ctx_switch
)");
void* g_sched_sp = nullptr;
#else
ucontext_t g_sched_ctx;
#endif

#if defined(SIMT_ASAN)
const void* g_sched_bottom = nullptr;
size_t g_sched_size = 0;
void* g_sched_fake = nullptr;
#endif

constexpr size_t kSharedBytes = 48 * 1024;
alignas(64) char g_shared[kSharedBytes];
size_t g_shared_used = 0;
uint64_t g_block_serial = 0;

std::vector<char*> g_stacks;  // pool, one per fiber slot
Fiber* g_fiber = nullptr;     // running fiber
void (*g_body)(void*) = nullptr;
void* g_body_ctx = nullptr;
bool g_abort = false;  // an error in this block: stop running it

char* stack_for(size_t slot) {
  while (g_stacks.size() <= slot) {
    void* p = mmap(nullptr, kStackSize + kGuard, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      std::perror("simt: mmap of a fiber stack");
      std::abort();
    }
    mprotect(p, kGuard, PROT_NONE);  // stack overflow faults instead of corrupting memory
    g_stacks.push_back(static_cast<char*>(p) + kGuard);
  }
  return g_stacks[slot];
}

void switch_to_scheduler(Fiber* f, bool exiting) {
#if defined(SIMT_ASAN)
  __sanitizer_start_switch_fiber(exiting ? nullptr : &f->fake_stack, g_sched_bottom,
                                 g_sched_size);
#endif
  (void)exiting;
#if defined(__x86_64__)
  simt_ctx_switch(&f->sp, g_sched_sp);
#else
  swapcontext(&f->ctx, &g_sched_ctx);
#endif
#if defined(SIMT_ASAN)
  __sanitizer_finish_switch_fiber(f->fake_stack, &g_sched_bottom, &g_sched_size);
#endif
}

extern "C" void simt_fiber_entry() {
  Fiber* f = g_fiber;
#if defined(SIMT_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &g_sched_bottom, &g_sched_size);
#endif
  g_body(g_body_ctx);
  f->state = kDone;
  switch_to_scheduler(f, true);
  std::abort();  // never resumed
}

void resume(Fiber* f) {
  g_fiber = f;
  g_cur = &f->head;
  if (!f->started) {
    f->started = true;
#if defined(SIMT_ASAN)
    ASAN_UNPOISON_MEMORY_REGION(f->stack, kStackSize);
#endif
#if defined(__x86_64__)
    uintptr_t top = (reinterpret_cast<uintptr_t>(f->stack) + kStackSize) & ~uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;                                        // fake return address of the entry
    *--sp = reinterpret_cast<void*>(&simt_fiber_entry);    // `ret` lands here
    for (int i = 0; i < 6; ++i) *--sp = nullptr;            // rbp rbx r12 r13 r14 r15
    uint32_t csr[2];
    asm volatile("stmxcsr %0" : "=m"(csr[0]));
    asm volatile("fnstcw %0" : "=m"(csr[1]));
    --sp;
    std::memcpy(sp, csr, 8);
    f->sp = sp;
#else
    getcontext(&f->ctx);
    f->ctx.uc_stack.ss_sp = f->stack;
    f->ctx.uc_stack.ss_size = kStackSize;
    f->ctx.uc_link = nullptr;
    makecontext(&f->ctx, reinterpret_cast<void (*)()>(&simt_fiber_entry), 0);
#endif
  }
#if defined(SIMT_ASAN)
  __sanitizer_start_switch_fiber(&g_sched_fake, f->stack, kStackSize);
#endif
#if defined(__x86_64__)
  simt_ctx_switch(&g_sched_sp, f->sp);
#else
  swapcontext(&g_sched_ctx, &f->ctx);
#endif
#if defined(SIMT_ASAN)
  __sanitizer_finish_switch_fiber(g_sched_fake, nullptr, nullptr);
#endif
  g_cur = nullptr;
  g_fiber = nullptr;
}

// ---- the block being run ------------------------------------------------------------------------
std::vector<Fiber> g_fibers;
const LaunchSite* g_site = nullptr;
std::string g_block_name;  // "kernel (file:line) block (x,y,z)" for messages

std::string where(const char* file, int line) {
  return std::string(file ? file : "?") + ":" + std::to_string(line);
}

std::string thread_name(const Fiber& f) {
  char b[96];
  std::snprintf(b, sizeof b, "thread (%u,%u,%u) [warp %u lane %u]", f.head.tid.x, f.head.tid.y,
                f.head.tid.z, f.head.warp, f.head.lane);
  return b;
}

void fail_in_kernel(const std::string& what) {
  if (g_abort) return;
  g_abort = true;
  set_error(cudaErrorLaunchFailure,
            "unspecified launch failure (SIMT emulation: " + what + " in " + g_block_name + ")");
}

// Try to complete the warp collective that lane `f` waits at. Errors end the block.
void try_complete_warp(unsigned warp) {
  const unsigned base = warp * 32;
  const unsigned n = static_cast<unsigned>(g_fibers.size());
  // the first waiting lane defines the collective
  Fiber* first = nullptr;
  for (unsigned l = 0; l < 32 && base + l < n; ++l) {
    if (g_fibers[base + l].state == kAtWarp) {
      first = &g_fibers[base + l];
      break;
    }
  }
  if (first == nullptr) return;
  const unsigned mask = first->mask;
  for (unsigned l = 0; l < 32 && base + l < n; ++l) {
    Fiber& f = g_fibers[base + l];
    if (f.state != kAtWarp) continue;
    if (f.mask != first->mask || f.line != first->line || f.file != first->file ||
        f.kind != first->kind) {
      fail_in_kernel("lanes of warp " + std::to_string(warp) + " wait at different warp "
                     "collectives or masks: " + where(first->file, first->line) + " mask " +
                     std::to_string(first->mask) + " vs " + where(f.file, f.line) + " mask " +
                     std::to_string(f.mask));
      return;
    }
  }
  for (unsigned l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    if (base + l >= n) {
      fail_in_kernel("warp collective at " + where(first->file, first->line) + " names lane " +
                     std::to_string(l) + " of warp " + std::to_string(warp) +
                     " in its mask, but the block has no such thread (partial warp)");
      return;
    }
    const Fiber& f = g_fibers[base + l];
    if (f.state == kDone) {
      fail_in_kernel("warp collective at " + where(first->file, first->line) + " waits for " +
                     thread_name(f) + ", which has exited");
      return;
    }
    if (f.state != kAtWarp) return;  // not there yet
  }
  // everyone is here: compute
  uint64_t vote_all = 1, vote_any = 0, ballot = 0;
  for (unsigned l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    const uint64_t p = g_fibers[base + l].bits;
    vote_all &= p ? 1 : 0;
    vote_any |= p ? 1 : 0;
    ballot |= (p ? 1ull : 0ull) << l;
  }
  for (unsigned l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    Fiber& f = g_fibers[base + l];
    switch (f.kind) {
      case kAll: f.result = vote_all; break;
      case kAny: f.result = vote_any; break;
      case kBallot: f.result = ballot; break;
      case kSyncWarp: f.result = 0; break;
      default: {
        const int w = f.width;
        const int lane = static_cast<int>(l);
        const int seg = lane & ~(w - 1);
        int src = lane;
        switch (f.kind) {
          case kShflIdx: src = seg + (f.arg & (w - 1)); break;
          case kShflUp: src = (lane - seg) >= f.arg ? lane - f.arg : lane; break;
          case kShflDown: src = (lane - seg) + f.arg < w ? lane + f.arg : lane; break;
          case kShflXor: {
            const int t = lane ^ f.arg;
            src = (t & ~(w - 1)) > seg || t > 31 ? lane : t;  // later groups: own value
            break;
          }
        }
        if (src < 0 || src > 31 || !(mask >> src & 1u)) {
          f.result = ~uint64_t(0);  // undefined on a GPU: poison (NaN)
          f.poisoned = true;
        } else {
          f.result = g_fibers[base + src].bits;
        }
      }
    }
    f.state = kRunnable;
  }
}

}  // namespace

void syncthreads(const char* file, int line) {
  Fiber* f = g_fiber;
  f->file = file;
  f->line = line;
  f->state = kAtBarrier;
  switch_to_scheduler(f, false);
}

uint64_t warp_op(const char* file, int line, int kind, unsigned mask, uint64_t bits, int arg,
                 int width, bool* poisoned) {
  Fiber* f = g_fiber;
  if (!(mask >> f->head.lane & 1u)) {
    fail_in_kernel(thread_name(*f) + " calls a warp collective at " + where(file, line) +
                   " with mask " + std::to_string(mask) + ", which does not include its lane");
  } else if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    fail_in_kernel("shuffle width " + std::to_string(width) + " at " + where(file, line) +
                   " is not a power of two in [1, 32]");
  }
  f->file = file;
  f->line = line;
  f->kind = kind;
  f->mask = mask;
  f->bits = bits;
  f->arg = arg;
  f->width = width;
  f->poisoned = false;
  f->state = kAtWarp;
  switch_to_scheduler(f, false);
  if (poisoned) *poisoned = f->poisoned;
  return f->result;
}

namespace {

}  // namespace

char* shared_alloc(SharedSlot& slot, size_t size, size_t align, const char* name) {
  if (slot.block != g_block_serial) {
    const size_t off = (g_shared_used + align - 1) / align * align;
    if (off + size > kSharedBytes) {
      fail_in_kernel(std::string("static shared memory above 48 KiB at __shared__ ") + name);
      switch_to_scheduler(g_fiber, false);  // never resumed: the block is abandoned
    }
    slot.block = g_block_serial;
    slot.offset = off;
    g_shared_used = off + size;
    std::memset(g_shared + off, 0xFF, size);
  }
  return g_shared + slot.offset;
}

namespace {

void run_block(dim3 block, uint64_t block_seed) {
  const unsigned n = block.x * block.y * block.z;
  // fresh shared memory for every block (NaN-filled as each declaration is first reached)
  ++g_block_serial;
  g_shared_used = 0;
  g_fibers.assign(n, Fiber());
  for (unsigned t = 0; t < n; ++t) {
    Fiber& f = g_fibers[t];
    f.head.tid = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    f.head.lane = t % 32;
    f.head.warp = t / 32;
    f.stack = stack_for(t);
  }
  std::vector<unsigned> order(n);
  for (unsigned t = 0; t < n; ++t) order[t] = g_order == kReverse ? n - 1 - t : t;
  std::mt19937_64 rng(block_seed);
  if (g_order == kShuffled) std::shuffle(order.begin(), order.end(), rng);
  g_abort = false;
  for (;;) {
    bool ran = false;
    for (unsigned t : order) {
      Fiber& f = g_fibers[t];
      if (f.state != kRunnable) continue;
      resume(&f);
      ran = true;
      if (g_abort) return;
      if (f.state == kAtWarp) {
        try_complete_warp(f.head.warp);
        if (g_abort) return;
      }
    }
    unsigned done = 0, at_barrier = 0, runnable = 0;
    const Fiber* b0 = nullptr;
    for (const Fiber& f : g_fibers) {
      done += f.state == kDone;
      runnable += f.state == kRunnable;
      if (f.state == kAtBarrier) {
        ++at_barrier;
        if (b0 == nullptr) b0 = &f;
      }
    }
    if (done == n) return;
    if (runnable > 0) {
      if (g_order == kShuffled) std::shuffle(order.begin(), order.end(), rng);
      continue;
    }
    if (at_barrier == n - done) {
      if (done > 0) {
        fail_in_kernel("__syncthreads at " + where(b0->file, b0->line) + " reached by " +
                       std::to_string(at_barrier) + " of " + std::to_string(n) +
                       " threads; the others have exited (a barrier in divergent code)");
        return;
      }
      for (const Fiber& f : g_fibers) {
        if (f.line != b0->line || f.file != b0->file) {
          fail_in_kernel("threads wait at different __syncthreads: " +
                         where(b0->file, b0->line) + " (" + thread_name(*b0) + ") and " +
                         where(f.file, f.line) + " (" + thread_name(f) + ")");
          return;
        }
      }
      for (Fiber& f : g_fibers) f.state = kRunnable;
      if (g_order == kShuffled) std::shuffle(order.begin(), order.end(), rng);
      continue;
    }
    // nothing can run: some wait at a barrier, others at a warp collective that cannot finish
    std::string msg = "deadlock: ";
    for (const Fiber& f : g_fibers) {
      if (f.state == kAtWarp) {
        msg += thread_name(f) + " waits at the warp collective " + where(f.file, f.line) +
               " (mask " + std::to_string(f.mask) + ")";
        break;
      }
    }
    if (b0 != nullptr) msg += "; " + thread_name(*b0) + " waits at __syncthreads " +
                              where(b0->file, b0->line);
    (void)ran;
    fail_in_kernel(msg);
    return;
  }
}

}  // namespace

void launch_grid(const LaunchSite& site, dim3 grid, dim3 block, size_t shmem, cudaStream_t s,
                 void (*body)(void*), void* ctx) {
  char cfg[200];
  std::snprintf(cfg, sizeof cfg, "%s<<<(%u,%u,%u), (%u,%u,%u), %zu>>> at %s:%d", site.name,
                grid.x, grid.y, grid.z, block.x, block.y, block.z, shmem, site.file, site.line);
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0 ||
      grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u || block.x > 1024u ||
      block.y > 1024u || block.z > 64u || threads > 1024u) {
    set_error(cudaErrorInvalidConfiguration,
              std::string("invalid configuration argument (SIMT emulation: ") + cfg +
                  "; limits: grid.x < 2^31, grid.y/z <= 65535, block.x/y <= 1024, block.z <= 64, "
                  "threads per block <= 1024, no dimension 0)");
    return;
  }
  if (threads > static_cast<uint64_t>(site.max_threads)) {
    set_error(cudaErrorLaunchOutOfResources,
              std::string("too many resources requested for launch (SIMT emulation: ") + cfg +
                  ": " + std::to_string(threads) + " threads, __launch_bounds__ " +
                  std::to_string(site.max_threads) + ")");
    return;
  }
  if (shmem > 48 * 1024) {
    set_error(cudaErrorInvalidValue, std::string("invalid argument (SIMT emulation: ") + cfg +
                                         ": dynamic shared memory above 48 KiB)");
    return;
  }
  if (s != caller_stream()) {
    char b[64];
    std::snprintf(b, sizeof b, "%p", static_cast<void*>(s));
    set_error(cudaErrorInvalidResourceHandle,
              std::string("invalid resource handle (SIMT emulation: ") + cfg +
                  " launched on stream " + b + ", not on the stream the caller passed)");
    return;
  }
  ++g_stats.launches;
  if (!g_launch_log.empty()) g_launch_log += ",";
  g_launch_log += site.name;
  g_body = body;
  g_body_ctx = ctx;
  g_site = &site;
  g_grid_dim = grid;
  g_block_dim = block;
  const uint64_t nblocks = uint64_t(grid.x) * grid.y * grid.z;
  std::mt19937_64 rng(g_seed ^ (g_stats.launches * 0x9E3779B97F4A7C15ull));
  std::vector<uint64_t> perm;
  if (g_order == kShuffled) {
    perm.resize(nblocks);
    for (uint64_t i = 0; i < nblocks; ++i) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
  }
  for (uint64_t i = 0; i < nblocks; ++i) {
    const uint64_t b = g_order == kForward ? i : (g_order == kReverse ? nblocks - 1 - i : perm[i]);
    g_block_idx = uint3{static_cast<unsigned>(b % grid.x),
                        static_cast<unsigned>((b / grid.x) % grid.y),
                        static_cast<unsigned>(b / (uint64_t(grid.x) * grid.y))};
    char name[300];
    std::snprintf(name, sizeof name, "%s block (%u,%u,%u)", cfg, g_block_idx.x, g_block_idx.y,
                  g_block_idx.z);
    g_block_name = name;
    run_block(block, rng());
    ++g_stats.blocks;
    g_stats.threads += threads;
    if (g_abort) break;  // the kernel faulted: the rest of the grid is not run
  }
  g_fibers.clear();
  g_abort = false;
}

}  // namespace detail

void set_order(int order, uint64_t seed) {
  detail::g_order = order;
  detail::g_seed = seed;
}
int order() { return detail::g_order; }
cudaStream_t caller_stream() { return reinterpret_cast<cudaStream_t>(&detail::g_stream_token); }
Stats stats() { return detail::g_stats; }
void reset_stats() { detail::g_stats = Stats{0, 0, 0, 0}; }
const char* take_launch_log() {
  detail::g_taken_log.swap(detail::g_launch_log);
  detail::g_launch_log.clear();
  return detail::g_taken_log.c_str();
}

}  // namespace simt

// ---- the emulated CUDA runtime API --------------------------------------------------------------
using simt::detail::g_detail_code;
using simt::detail::g_error_detail;
using simt::detail::g_last_error;

cudaError_t cudaGetLastError() {
  const cudaError_t e = g_last_error;
  g_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return g_last_error; }
const char* cudaGetErrorString(cudaError_t err) {
  if (err == g_detail_code && err != cudaSuccess && !g_error_detail.empty()) {
    return g_error_detail.c_str();
  }
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorIllegalInstruction: return "an illegal instruction was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (device != 0) return g_last_error = cudaErrorInvalidDevice;
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "SIMT emulation on the host CPU");
  p->major = 8;
  p->minor = 0;
  p->multiProcessorCount = 1;
  p->maxThreadsPerBlock = 1024;
  p->sharedMemPerBlock = 48 * 1024;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
