// The pybind11 module fastmbrl._C: build and device reports, plus every op's bindings
// (registered by src/cpp/bind_*.cpp through FASTMBRL_BINDINGS).
//
// Torch-agnostic by design: tensors cross as raw data pointers (Python ints) plus sizes, and
// CUDA kernels take the current stream handle. Python (fastmbrl.ops) validates every argument
// and allocates every output and workspace before calling in here.
#include <string>

#include "fastmbrl/bindings.h"
#ifdef FASTMBRL_WITH_CUDA
#include "fastmbrl/device_info.h"
#endif

namespace py = pybind11;

namespace fastmbrl {
namespace bind {

void check_cuda(int code, const char* what) {
#ifdef FASTMBRL_WITH_CUDA
  if (code != 0) {
    throw std::runtime_error(std::string("fastmbrl._C.") + what + ": CUDA error " +
                             std::to_string(code) + ": " + fastmbrl::cuda_error_string(code));
  }
#else
  if (code != 0) throw std::runtime_error(std::string("fastmbrl._C.") + what + ": error");
#endif
}

}  // namespace bind
}  // namespace fastmbrl

namespace {

py::dict build_info() {
  py::dict d;
  d["version"] = FASTMBRL_VERSION;
  d["cpu_kernels"] = true;
#ifdef FASTMBRL_WITH_CUDA
  d["cuda_compiled"] = true;
  d["cuda_architectures"] = std::string(FASTMBRL_CUDA_ARCHS);
#else
  d["cuda_compiled"] = false;
  d["cuda_architectures"] = std::string();
#endif
#if defined(__clang__)
  d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = std::string("gcc ") + __VERSION__;
#else
  d["compiler"] = std::string("unknown");
#endif
  py::list ops;
  for (const auto& entry : fastmbrl::bind::registry()) ops.append(entry.first);
  d["op_families"] = ops;
  return d;
}

py::dict cuda_info() {
  py::dict d;
#ifdef FASTMBRL_WITH_CUDA
  fastmbrl::CudaInfo info = fastmbrl::cuda_info();
  d["compiled"] = true;
  d["runtime_version"] = info.runtime_version;
  d["driver_version"] = info.driver_version;
  d["device_count"] = info.device_count;
  d["error"] = info.error;
  py::list devs;
  for (const auto& dev : info.devices) {
    py::dict x;
    x["name"] = dev.name;
    x["capability"] = py::make_tuple(dev.major, dev.minor);
    x["total_memory"] = dev.total_memory;
    x["multiprocessors"] = dev.multiprocessors;
    devs.append(x);
  }
  d["devices"] = devs;
#else
  d["compiled"] = false;
  d["runtime_version"] = 0;
  d["driver_version"] = 0;
  d["device_count"] = 0;
  d["error"] =
      std::string("fastmbrl was built without CUDA kernels (nvcc not found or FASTMBRL_CUDA=OFF)");
  d["devices"] = py::list();
#endif
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastmbrl native kernels (torch-agnostic: raw pointers, sizes, CUDA stream handles)";
#ifdef FASTMBRL_WITH_CUDA
  m.attr("WITH_CUDA") = true;
#else
  m.attr("WITH_CUDA") = false;
#endif
  m.def("build_info", &build_info, "How the module was compiled");
  m.def("cuda_info", &cuda_info, "CUDA runtime, driver and devices as seen by the module");
  for (auto& entry : fastmbrl::bind::registry()) entry.second(m);
}
