// Bindings of the fused VaGraM loss kernels (include/fastmbrl/vagram.h).
#include "fastmbrl/bindings.h"
#include "fastmbrl/vagram.h"

namespace py = pybind11;
using namespace fastmbrl::bind;
using std::uintptr_t;

FASTMBRL_BINDINGS(vagram) {
  m.def("vagram_forward_cpu",
        [](int dtype, uintptr_t pred, uintptr_t target, uintptr_t value_grad, bool shared,
           int64_t E, int64_t B, int64_t O, int64_t K, bool bounded, uintptr_t member_loss,
           uintptr_t dpred) {
          py::gil_scoped_release release;
          dispatch_float(dtype, "vagram_forward_cpu", [&](auto tag) {
            using T = decltype(tag);
            fastmbrl::vagram_forward_cpu<T>(cptr<T>(pred), cptr<T>(target), cptr<T>(value_grad),
                                            shared, E, B, O, K, bounded, mptr<T>(member_loss),
                                            mptr<T>(dpred));
          });
        });
#ifdef FASTMBRL_WITH_CUDA
  m.def("vagram_cuda_workspace", &fastmbrl::vagram_cuda_workspace);
  m.def("vagram_forward_cuda",
        [](int dtype, uintptr_t pred, uintptr_t target, uintptr_t value_grad, bool shared,
           int64_t E, int64_t B, int64_t O, int64_t K, bool bounded, uintptr_t member_loss,
           uintptr_t dpred, uintptr_t workspace, uintptr_t stream) {
          dispatch_float(dtype, "vagram_forward_cuda", [&](auto tag) {
            using T = decltype(tag);
            check_cuda(fastmbrl::vagram_forward_cuda<T>(
                           cptr<T>(pred), cptr<T>(target), cptr<T>(value_grad), shared, E, B, O,
                           K, bounded, mptr<T>(member_loss), mptr<T>(dpred), mptr<T>(workspace),
                           stream_ptr(stream)),
                       "vagram_forward_cuda");
          });
        });
#endif
}
