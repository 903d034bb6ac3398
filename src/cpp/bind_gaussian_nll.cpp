// Bindings of the ensemble Gaussian NLL kernels (include/fastmbrl/gaussian_nll.h).
#include "fastmbrl/bindings.h"
#include "fastmbrl/gaussian_nll.h"

namespace py = pybind11;
using namespace fastmbrl::bind;
using std::uintptr_t;

FASTMBRL_BINDINGS(gaussian_nll) {
  m.def("gaussian_nll_forward_cpu",
        [](int dtype, uintptr_t mean, uintptr_t logvar, uintptr_t target, bool shared, int64_t E,
           int64_t N, bool elementwise, uintptr_t out) {
          py::gil_scoped_release release;
          dispatch_float(dtype, "gaussian_nll_forward_cpu", [&](auto tag) {
            using T = decltype(tag);
            fastmbrl::gaussian_nll_forward_cpu<T>(cptr<T>(mean), cptr<T>(logvar), cptr<T>(target),
                                                  shared, E, N, elementwise, mptr<T>(out));
          });
        });
  m.def("gaussian_nll_backward_cpu",
        [](int dtype, uintptr_t grad, uintptr_t mean, uintptr_t logvar, uintptr_t target,
           bool shared, int64_t E, int64_t N, bool elementwise, uintptr_t d_mean,
           uintptr_t d_logvar, uintptr_t d_target) {
          py::gil_scoped_release release;
          dispatch_float(dtype, "gaussian_nll_backward_cpu", [&](auto tag) {
            using T = decltype(tag);
            fastmbrl::gaussian_nll_backward_cpu<T>(
                cptr<T>(grad), cptr<T>(mean), cptr<T>(logvar), cptr<T>(target), shared, E, N,
                elementwise, mptr<T>(d_mean), mptr<T>(d_logvar), mptr<T>(d_target));
          });
        });
#ifdef FASTMBRL_WITH_CUDA
  m.def("gaussian_nll_cuda_workspace", &fastmbrl::gaussian_nll_cuda_workspace);
  m.def("gaussian_nll_forward_cuda",
        [](int dtype, uintptr_t mean, uintptr_t logvar, uintptr_t target, bool shared, int64_t E,
           int64_t N, bool elementwise, uintptr_t out, uintptr_t workspace, uintptr_t stream) {
          dispatch_float(dtype, "gaussian_nll_forward_cuda", [&](auto tag) {
            using T = decltype(tag);
            check_cuda(fastmbrl::gaussian_nll_forward_cuda<T>(
                           cptr<T>(mean), cptr<T>(logvar), cptr<T>(target), shared, E, N,
                           elementwise, mptr<T>(out), mptr<T>(workspace), stream_ptr(stream)),
                       "gaussian_nll_forward_cuda");
          });
        });
  m.def("gaussian_nll_backward_cuda",
        [](int dtype, uintptr_t grad, uintptr_t mean, uintptr_t logvar, uintptr_t target,
           bool shared, int64_t E, int64_t N, bool elementwise, uintptr_t d_mean,
           uintptr_t d_logvar, uintptr_t d_target, uintptr_t stream) {
          dispatch_float(dtype, "gaussian_nll_backward_cuda", [&](auto tag) {
            using T = decltype(tag);
            check_cuda(fastmbrl::gaussian_nll_backward_cuda<T>(
                           cptr<T>(grad), cptr<T>(mean), cptr<T>(logvar), cptr<T>(target), shared,
                           E, N, elementwise, mptr<T>(d_mean), mptr<T>(d_logvar),
                           mptr<T>(d_target), stream_ptr(stream)),
                       "gaussian_nll_backward_cuda");
          });
        });
#endif
}
