// A kernel that is undefined on the device (half a warp in a shuffle while the other half waits
// at a block barrier): under the emulation it must fail its launch, not hang the test.
#define PYPERFCORE_CUDA_EMULATE 1
#include "cuda_compat.hpp"

namespace {
__global__ void split_warp(int* out) {
  int v = static_cast<int>(threadIdx.x);
  if (threadIdx.x < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
  __syncthreads();
  out[threadIdx.x] = v;
}
__global__ void fine(int* out) {
  const int v = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
  __syncthreads();
  out[threadIdx.x] = v;
}
}  // namespace

extern "C" int emu_launch(int broken, int* out) {
  auto* k = broken ? &split_warp : &fine;
  PFC_LAUNCH(k, dim3(1), dim3(32), nullptr, out);
  return static_cast<int>(cudaGetLastError());
}
