// Bindings of the ensemble-disagreement kernels (include/fastmbrl/disagreement.h).
#include "fastmbrl/bindings.h"
#include "fastmbrl/disagreement.h"

namespace py = pybind11;
using namespace fastmbrl::bind;
using std::uintptr_t;

FASTMBRL_BINDINGS(disagreement) {
  m.def("disagreement_cpu",
        [](int dtype, uintptr_t pred, int64_t E, int64_t N, int64_t O, uintptr_t out) {
          py::gil_scoped_release release;
          dispatch_float(dtype, "disagreement_cpu", [&](auto tag) {
            using T = decltype(tag);
            fastmbrl::disagreement_cpu<T>(cptr<T>(pred), E, N, O, mptr<T>(out));
          });
        });
#ifdef FASTMBRL_WITH_CUDA
  m.def("disagreement_cuda",
        [](int dtype, uintptr_t pred, int64_t E, int64_t N, int64_t O, uintptr_t out,
           uintptr_t stream) {
          dispatch_float(dtype, "disagreement_cuda", [&](auto tag) {
            using T = decltype(tag);
            check_cuda(fastmbrl::disagreement_cuda<T>(cptr<T>(pred), E, N, O, mptr<T>(out),
                                                      stream_ptr(stream)),
                       "disagreement_cuda");
          });
        });
#endif
}
