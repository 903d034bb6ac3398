// Bindings of the value-difference loss kernels (include/fastmbrl/value_aware.h).
#include "fastmbrl/bindings.h"
#include "fastmbrl/value_aware.h"

namespace py = pybind11;
using namespace fastmbrl::bind;
using std::uintptr_t;

namespace {
void check_norm(int norm, const char* what) {
  if (norm != 1 && norm != 2) {
    throw py::value_error(std::string("fastmbrl._C.") + what + ": norm must be 1 or 2, got " +
                          std::to_string(norm));
  }
}
}  // namespace

FASTMBRL_BINDINGS(value_aware) {
  m.def("value_aware_forward_cpu",
        [](int dtype, uintptr_t q_true, uintptr_t q_model, bool shared, int64_t E, int64_t N,
           int norm, bool elementwise, uintptr_t loss, uintptr_t unit) {
          check_norm(norm, "value_aware_forward_cpu");
          py::gil_scoped_release release;
          dispatch_float(dtype, "value_aware_forward_cpu", [&](auto tag) {
            using T = decltype(tag);
            fastmbrl::value_aware_forward_cpu<T>(cptr<T>(q_true), cptr<T>(q_model), shared, E, N,
                                                 norm, elementwise, mptr<T>(loss), mptr<T>(unit));
          });
        });
#ifdef FASTMBRL_WITH_CUDA
  m.def("value_aware_cuda_workspace", &fastmbrl::value_aware_cuda_workspace);
  m.def("value_aware_forward_cuda",
        [](int dtype, uintptr_t q_true, uintptr_t q_model, bool shared, int64_t E, int64_t N,
           int norm, bool elementwise, uintptr_t loss, uintptr_t unit, uintptr_t workspace,
           uintptr_t stream) {
          check_norm(norm, "value_aware_forward_cuda");
          dispatch_float(dtype, "value_aware_forward_cuda", [&](auto tag) {
            using T = decltype(tag);
            check_cuda(fastmbrl::value_aware_forward_cuda<T>(
                           cptr<T>(q_true), cptr<T>(q_model), shared, E, N, norm, elementwise,
                           mptr<T>(loss), mptr<T>(unit), mptr<T>(workspace), stream_ptr(stream)),
                       "value_aware_forward_cuda");
          });
        });
#endif
}
