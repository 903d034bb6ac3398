// Shared definitions for the CPU and CUDA kernels of fastmbrl.
//
// The native module is torch-agnostic: every entry point takes raw pointers,
// sizes and (for CUDA) a cudaStream_t passed as void*. It never allocates device
// memory and never synchronizes; Python allocates outputs and workspaces with torch.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define FASTMBRL_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// always_inline: per-element math must inline into the target_clones variants below, which it
// would not do across the target-option boundary otherwise.
#define FASTMBRL_HD inline __attribute__((always_inline))
#else
#define FASTMBRL_HD inline
#endif

// CPU kernels marked FASTMBRL_CPU_CLONES are compiled twice, for x86-64 baseline and for
// Haswell (AVX2 + FMA); the loader picks the variant the CPU supports (GNU ifunc), so the wheel
// stays portable and vectorised loops run 8 floats wide where they can.
#if !defined(__CUDACC__) && defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__) && \
    !defined(FASTMBRL_NO_CPU_CLONES)
#define FASTMBRL_CPU_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define FASTMBRL_CPU_CLONES
#endif

namespace fastmbrl {

#if !defined(__CUDA_ARCH__)
// Branch-free single-precision exp for the CPU kernels (Cephes expf polynomial, relative error
// about 1e-7 on the normal range, subnormal results rounded once more; overflow to inf, underflow to 0, NaN propagates). Unlike
// expf() it lets the compiler vectorise the kernels' loops without -ffast-math.
FASTMBRL_HD float cpu_expf(float x) {
  const float xc = x < -103.5f ? -103.5f : (x > 88.72283f ? 88.72283f : x);
  // n = round(xc / ln 2) with the 1.5 * 2^23 trick (round to nearest, vectorisable)
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n = 2^n1 * 2^n2 with both halves normal floats (n in [-150, 128])
  const int32_t ni = static_cast<int32_t>(n);
  const int32_t n1 = ni >> 1, n2 = ni - n1;
  const int32_t b1 = (n1 + 127) << 23, b2 = (n2 + 127) << 23;
  float s1, s2;
  __builtin_memcpy(&s1, &b1, sizeof(s1));
  __builtin_memcpy(&s2, &b2, sizeof(s2));
  float y = (p * s1) * s2;
  y = x > 88.72283905f ? __builtin_inff() : y;
  y = x < -103.972084f ? 0.0f : y;
  return x != x ? x : y;
}
#endif

// exp shared by the CPU and CUDA kernels: expf on the device, the vectorisable cpu_expf on the
// host for float; exp for double everywhere.
FASTMBRL_HD float fm_exp(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return cpu_expf(x);
#endif
}
FASTMBRL_HD double fm_exp(double x) { return exp(x); }

}  // namespace fastmbrl
