// Shim: a .cu file compiled for the SIMT emulation (tests/emu) includes <cuda_runtime.h> and
// gets the emulation layer instead of the CUDA runtime.
#pragma once
#include "../simt.h"
