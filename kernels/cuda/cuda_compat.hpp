// The CUDA headers the kernels use, and PFC_LAUNCH(kernel, grid, block, stream, args...) for
// their launches. Built with nvcc this is plain CUDA. With PYPERFCORE_CUDA_EMULATE defined (tests
// only: tests/cuda_emu/), a host compiler builds the same kernel source against a CPU emulation
// of the few device features the kernels use (threads of a block, warp shuffles, block
// barriers, dp4a, IEEE intrinsics), so the kernels and their launchers are checked against the
// numpy oracle on machines without a GPU.
#pragma once
#if defined(PYPERFCORE_CUDA_EMULATE)
#include "emulate.hpp"
#define PFC_LAUNCH(kernel, grid, block, stream, ...) ((void)(stream), ::pfc_emu::launch(kernel, grid, block, __VA_ARGS__))
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define PFC_LAUNCH(kernel, grid, block, stream, ...) kernel<<<grid, block, 0, stream>>>(__VA_ARGS__)
#endif
