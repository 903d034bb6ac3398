// Self-registering pybind11 bindings: each src/cpp/bind_<op>.cpp defines
//
//   FASTMBRL_BINDINGS(op_name) { m.def(...); }
//
// and module.cpp runs every registered function when Python imports fastmbrl._C, so adding an
// op never touches module.cpp. Only src/cpp files include this header (never CUDA sources).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace fastmbrl {
namespace bind {

using BindFn = std::function<void(pybind11::module_&)>;

inline std::vector<std::pair<std::string, BindFn>>& registry() {
  static std::vector<std::pair<std::string, BindFn>> fns;
  return fns;
}

struct Registrar {
  Registrar(const char* name, BindFn fn) { registry().emplace_back(name, std::move(fn)); }
};

// Pointer and stream helpers: Python passes tensor.data_ptr() and stream handles as ints.
template <typename T>
inline const T* cptr(std::uintptr_t p) { return reinterpret_cast<const T*>(p); }
template <typename T>
inline T* mptr(std::uintptr_t p) { return reinterpret_cast<T*>(p); }
inline void* stream_ptr(std::uintptr_t s) { return reinterpret_cast<void*>(s); }

// dtype codes shared with fastmbrl/_native.py
constexpr int kFloat32 = 0;
constexpr int kFloat64 = 1;

inline void check_dtype(int dtype, const char* what) {
  if (dtype != kFloat32 && dtype != kFloat64) {
    throw pybind11::value_error(std::string("fastmbrl._C.") + what + ": unsupported dtype code " +
                                std::to_string(dtype));
  }
}

// Raise a Python RuntimeError for a nonzero cudaError_t returned by a CUDA entry point.
void check_cuda(int code, const char* what);

// Call f.template operator()<float>() or <double>() depending on the dtype code.
template <typename F>
inline void dispatch_float(int dtype, const char* what, F&& f) {
  check_dtype(dtype, what);
  if (dtype == kFloat32) {
    f(float{});
  } else {
    f(double{});
  }
}

}  // namespace bind
}  // namespace fastmbrl

#define FASTMBRL_CONCAT_INNER(a, b) a##b
#define FASTMBRL_CONCAT(a, b) FASTMBRL_CONCAT_INNER(a, b)
#define FASTMBRL_BINDINGS(name)                                                          \
  static void FASTMBRL_CONCAT(fastmbrl_bind_, name)(pybind11::module_ & m);              \
  static ::fastmbrl::bind::Registrar FASTMBRL_CONCAT(fastmbrl_registrar_, name)(         \
      #name, &FASTMBRL_CONCAT(fastmbrl_bind_, name));                                    \
  static void FASTMBRL_CONCAT(fastmbrl_bind_, name)(pybind11::module_ & m)
