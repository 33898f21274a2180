// Kernels that are undefined on the device: half a warp in a shuffle while the other half waits
// at a block barrier (under the emulation it must fail its launch, not hang the test), and a
// misaligned vector load (it must fail its launch as on the device, not read what x86 reads).
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
__global__ void load16(const char* base, int offset, int* out) {
  const int4 v = __ldcs(reinterpret_cast<const int4*>(base + offset));
  out[threadIdx.x] = v.x + v.y + v.z + v.w;
}
}  // namespace

// A 16-byte load from base + offset: the device faults unless offset is a multiple of 16.
extern "C" int emu_load16(const char* base, int offset, int* out) {
  PFC_LAUNCH(load16, dim3(1), dim3(32), nullptr, base, offset, out);
  return static_cast<int>(cudaGetLastError());
}

extern "C" int emu_launch(int broken, int* out) {
  auto* k = broken ? &split_warp : &fine;
  PFC_LAUNCH(k, dim3(1), dim3(32), nullptr, out);
  return static_cast<int>(cudaGetLastError());
}
