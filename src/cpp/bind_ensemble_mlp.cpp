// Bindings of the ensemble MLP kernels (include/fastmbrl/ensemble_mlp.h).
#include "fastmbrl/bindings.h"
#include "fastmbrl/ensemble_mlp.h"

namespace py = pybind11;
using namespace fastmbrl::bind;
using std::uintptr_t;

FASTMBRL_BINDINGS(ensemble_mlp) {
  m.def("mlp_act_forward_cpu", [](int dtype, int act, uintptr_t z, uintptr_t h, int64_t n) {
    py::gil_scoped_release release;
    dispatch_float(dtype, "mlp_act_forward_cpu", [&](auto tag) {
      using T = decltype(tag);
      fastmbrl::mlp_act_forward_cpu<T>(act, cptr<T>(z), mptr<T>(h), n);
    });
  });
  m.def("mlp_act_backward_cpu",
        [](int dtype, int act, uintptr_t g, uintptr_t z, uintptr_t h, uintptr_t dz, int64_t n) {
          py::gil_scoped_release release;
          dispatch_float(dtype, "mlp_act_backward_cpu", [&](auto tag) {
            using T = decltype(tag);
            fastmbrl::mlp_act_backward_cpu<T>(act, cptr<T>(g), cptr<T>(z), cptr<T>(h),
                                              mptr<T>(dz), n);
          });
        });
  m.def("mlp_head_forward_cpu", [](int dtype, uintptr_t y, uintptr_t lo, uintptr_t hi,
                                   int64_t rows, int64_t D, uintptr_t raw) {
    py::gil_scoped_release release;
    dispatch_float(dtype, "mlp_head_forward_cpu", [&](auto tag) {
      using T = decltype(tag);
      fastmbrl::mlp_head_forward_cpu<T>(mptr<T>(y), cptr<T>(lo), cptr<T>(hi), rows, D,
                                        mptr<T>(raw));
    });
  });
  m.def("mlp_head_backward_cpu",
        [](int dtype, uintptr_t g, uintptr_t raw, uintptr_t lo, uintptr_t hi, int64_t rows,
           int64_t D, uintptr_t dy, uintptr_t d_lo, uintptr_t d_hi) {
          py::gil_scoped_release release;
          dispatch_float(dtype, "mlp_head_backward_cpu", [&](auto tag) {
            using T = decltype(tag);
            fastmbrl::mlp_head_backward_cpu<T>(cptr<T>(g), cptr<T>(raw), cptr<T>(lo),
                                               cptr<T>(hi), rows, D, mptr<T>(dy),
                                               mptr<T>(d_lo), mptr<T>(d_hi));
          });
        });
#ifdef FASTMBRL_WITH_CUDA
  m.def("mlp_layer_forward_cuda",
        [](int dtype, uintptr_t x, int64_t x_member_stride, uintptr_t W, uintptr_t b, int64_t E,
           int64_t M, int64_t K, int64_t N, int act, uintptr_t z, uintptr_t h, uintptr_t lo,
           uintptr_t hi, int64_t D, uintptr_t raw, uintptr_t stream) {
          dispatch_float(dtype, "mlp_layer_forward_cuda", [&](auto tag) {
            using T = decltype(tag);
            check_cuda(fastmbrl::mlp_layer_forward_cuda<T>(
                           cptr<T>(x), x_member_stride, cptr<T>(W), cptr<T>(b), E, M, K, N, act,
                           mptr<T>(z), mptr<T>(h), cptr<T>(lo), cptr<T>(hi), D, mptr<T>(raw),
                           stream_ptr(stream)),
                       "mlp_layer_forward_cuda");
          });
        });
  m.def("mlp_layer_backward_input_cuda",
        [](int dtype, uintptr_t dz, uintptr_t W, int64_t E, int64_t M, int64_t K, int64_t N,
           int act, uintptr_t z_prev, uintptr_t h_prev, uintptr_t dx, uintptr_t stream) {
          dispatch_float(dtype, "mlp_layer_backward_input_cuda", [&](auto tag) {
            using T = decltype(tag);
            check_cuda(fastmbrl::mlp_layer_backward_input_cuda<T>(
                           cptr<T>(dz), cptr<T>(W), E, M, K, N, act, cptr<T>(z_prev),
                           cptr<T>(h_prev), mptr<T>(dx), stream_ptr(stream)),
                       "mlp_layer_backward_input_cuda");
          });
        });
  m.def("mlp_layer_backward_params_cuda",
        [](int dtype, uintptr_t x, int64_t x_member_stride, uintptr_t dz, int64_t E, int64_t M,
           int64_t I, int64_t O, uintptr_t dW, uintptr_t db, uintptr_t stream) {
          dispatch_float(dtype, "mlp_layer_backward_params_cuda", [&](auto tag) {
            using T = decltype(tag);
            check_cuda(fastmbrl::mlp_layer_backward_params_cuda<T>(
                           cptr<T>(x), x_member_stride, cptr<T>(dz), E, M, I, O, mptr<T>(dW),
                           mptr<T>(db), stream_ptr(stream)),
                       "mlp_layer_backward_params_cuda");
          });
        });
  m.def("mlp_sum_members_cuda",
        [](int dtype, uintptr_t ws, int64_t E, int64_t n, uintptr_t out, uintptr_t stream) {
          dispatch_float(dtype, "mlp_sum_members_cuda", [&](auto tag) {
            using T = decltype(tag);
            check_cuda(fastmbrl::mlp_sum_members_cuda<T>(cptr<T>(ws), E, n, mptr<T>(out),
                                                         stream_ptr(stream)),
                       "mlp_sum_members_cuda");
          });
        });
  m.def("mlp_head_backward_cuda",
        [](int dtype, uintptr_t g, uintptr_t raw, uintptr_t lo, uintptr_t hi, int64_t rows,
           int64_t D, uintptr_t dy, uintptr_t d_lo, uintptr_t d_hi, uintptr_t stream) {
          dispatch_float(dtype, "mlp_head_backward_cuda", [&](auto tag) {
            using T = decltype(tag);
            check_cuda(fastmbrl::mlp_head_backward_cuda<T>(
                           cptr<T>(g), cptr<T>(raw), cptr<T>(lo), cptr<T>(hi), rows, D,
                           mptr<T>(dy), mptr<T>(d_lo), mptr<T>(d_hi), stream_ptr(stream)),
                       "mlp_head_backward_cuda");
          });
        });
#endif
}
