// What the CUDA runtime linked into the module sees (src/cuda/device_info.cu).
#pragma once

#include <string>
#include <vector>

namespace fastmbrl {

struct CudaDevice {
  std::string name;
  int major = 0, minor = 0;
  long long total_memory = 0;
  int multiprocessors = 0;
};

struct CudaInfo {
  int runtime_version = 0;
  int driver_version = 0;
  int device_count = 0;
  std::string error;  // empty when the runtime answered without error
  std::vector<CudaDevice> devices;
};

CudaInfo cuda_info();
std::string cuda_error_string(int code);

}  // namespace fastmbrl
