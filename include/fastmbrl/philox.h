// Philox4x32-10 counter-based random numbers (Salmon et al., "Parallel random numbers: as easy
// as 1, 2, 3", SC'11; the Random123 library) and Box-Muller normals, shared by the CPU and CUDA
// kernels. The same generator is written in pure PyTorch in fastmbrl/ops/rollout.py
// (philox4x32_10, philox_normal), so the reference and the native kernels draw the same noise.
//
// Counter and key layout of fastmbrl's normals (noise element (row i, dim d)):
//
//   key     = (seed & 0xffffffff, seed >> 32)
//   counter = (d / 4, i, offset & 0xffffffff, offset >> 32)
//   (x0, x1, x2, x3) = philox4x32_10(counter, key)
//   u_j     = x_j * 2^-32 + 2^-33                       (in (0, 1], computed in T)
//   z0, z1  = sqrt(-2 log u0) * (cos, sin)(2 pi u1)
//   z2, z3  = sqrt(-2 log u2) * (cos, sin)(2 pi u3)
//   noise(i, d) = z_{d % 4}
//
// so a noise element is a pure function of (seed, offset, i, d): it does not depend on the
// thread layout, the number of rows or the output width.
#pragma once

#include <cstdint>

#include "fastmbrl/common.h"

namespace fastmbrl {
namespace philox {

constexpr uint32_t kM0 = 0xD2511F53u;
constexpr uint32_t kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kW1 = 0xBB67AE85u;  // sqrt(3) - 1

FASTMBRL_HD uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
#if defined(__CUDA_ARCH__)
  *hi = __umulhi(a, b);
  return a * b;
#else
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
#endif
}

// out = Philox4x32-10(ctr, key). out may alias ctr.
FASTMBRL_HD void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
  uint32_t k0 = key[0], k1 = key[1];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo(kM0, c0, &hi0);
    const uint32_t lo1 = mulhilo(kM1, c2, &hi1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

// Math overloads that pick the single-precision functions for float on host and device.
FASTMBRL_HD float fm_log(float x) { return logf(x); }
FASTMBRL_HD double fm_log(double x) { return log(x); }
FASTMBRL_HD float fm_sqrt(float x) { return sqrtf(x); }
FASTMBRL_HD double fm_sqrt(double x) { return sqrt(x); }
FASTMBRL_HD float fm_cos(float x) { return cosf(x); }
FASTMBRL_HD double fm_cos(double x) { return cos(x); }
FASTMBRL_HD float fm_sin(float x) { return sinf(x); }
FASTMBRL_HD double fm_sin(double x) { return sin(x); }

// u in (0, 1] from 32 random bits: x * 2^-32 + 2^-33, computed in T.
template <typename T>
FASTMBRL_HD T uniform(uint32_t x) {
  return static_cast<T>(x) * static_cast<T>(2.3283064365386963e-10) +
         static_cast<T>(1.1641532182693481e-10);
}

// The four standard normals of counter group `group` of row `row` (see the header comment).
template <typename T>
FASTMBRL_HD void normal4(uint64_t seed, uint64_t offset, uint32_t row, uint32_t group, T z[4]) {
  const uint32_t ctr[4] = {group, row, static_cast<uint32_t>(offset),
                           static_cast<uint32_t>(offset >> 32)};
  const uint32_t key[2] = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  uint32_t x[4];
  philox4x32_10(ctr, key, x);
  const T two_pi = static_cast<T>(6.283185307179586);
  const T r0 = fm_sqrt(static_cast<T>(-2) * fm_log(uniform<T>(x[0])));
  const T t0 = two_pi * uniform<T>(x[1]);
  const T r1 = fm_sqrt(static_cast<T>(-2) * fm_log(uniform<T>(x[2])));
  const T t1 = two_pi * uniform<T>(x[3]);
  z[0] = r0 * fm_cos(t0);
  z[1] = r0 * fm_sin(t0);
  z[2] = r1 * fm_cos(t1);
  z[3] = r1 * fm_sin(t1);
}

}  // namespace philox
}  // namespace fastmbrl
