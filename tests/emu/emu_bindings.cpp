// Controls of the SIMT emulation, added to the emulated variant of fastmbrl._C (tests/emu): the
// thread/block order, the stream the glue must pass, and launch statistics.
#include <pybind11/pybind11.h>

#include "fastmbrl/bindings.h"
#include "simt.h"

namespace py = pybind11;

FASTMBRL_BINDINGS(simt_emulation) {
  m.attr("SIMT_EMULATION") = true;
  m.def("emu_set_order", &simt::set_order, py::arg("order"), py::arg("seed") = 0,
        "Block and thread order of later launches: 0 forward, 1 reverse, 2 shuffled (seeded)");
  m.def("emu_caller_stream",
        [] { return reinterpret_cast<std::uintptr_t>(simt::caller_stream()); },
        "The stream handle every launch must name (what the glue passes as the stream)");
  m.def("emu_stats", [] {
    const simt::Stats s = simt::stats();
    py::dict d;
    d["launches"] = s.launches;
    d["blocks"] = s.blocks;
    d["threads"] = s.threads;
    d["failed_launches"] = s.failed_launches;
    return d;
  });
  m.def("emu_reset_stats", &simt::reset_stats);
  m.def("emu_take_launch_log", [] { return std::string(simt::take_launch_log()); },
        "Kernels launched since the last call, comma separated");
  m.def("emu_synchronize", [] {
    const cudaError_t e = cudaPeekAtLastError();
    if (e != cudaSuccess) throw std::runtime_error(cudaGetErrorString(e));
  });
}
