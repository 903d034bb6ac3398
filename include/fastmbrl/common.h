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
#else
#define FASTMBRL_HD inline
#endif

namespace fastmbrl {

// exp that picks the single-precision intrinsic for float on both host and device.
FASTMBRL_HD float fm_exp(float x) { return expf(x); }
FASTMBRL_HD double fm_exp(double x) { return exp(x); }

}  // namespace fastmbrl
