#include <cuda_runtime.h>

#include "fastmbrl/device_info.h"

namespace fastmbrl {

CudaInfo cuda_info() {
  CudaInfo info;
  cudaRuntimeGetVersion(&info.runtime_version);
  cudaDriverGetVersion(&info.driver_version);
  cudaError_t err = cudaGetDeviceCount(&info.device_count);
  if (err != cudaSuccess) {
    info.error = cudaGetErrorString(err);
    info.device_count = 0;
    cudaGetLastError();  // clear the sticky error so later calls report their own
    return info;
  }
  for (int d = 0; d < info.device_count; ++d) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, d) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    CudaDevice dev;
    dev.name = p.name;
    dev.major = p.major;
    dev.minor = p.minor;
    dev.total_memory = static_cast<long long>(p.totalGlobalMem);
    dev.multiprocessors = p.multiProcessorCount;
    info.devices.push_back(dev);
  }
  return info;
}

std::string cuda_error_string(int code) {
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}

}  // namespace fastmbrl
