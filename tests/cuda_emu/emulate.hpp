// CPU emulation of the device features pyperfcore's CUDA kernels use, for tests on machines
// without a GPU (included through kernels/cuda/cuda_compat.hpp when PYPERFCORE_CUDA_EMULATE is
// defined). Each block of a launch runs as blockDim.x std::threads; warp shuffles exchange
// values through the block with a barrier per warp, __syncthreads* use a block barrier, and
// __shared__ variables are function statics (blocks run one after another). Threads that return
// drop out of their barriers, so a warp may leave early as a whole, as on the device. Only what
// the kernels use is here; an unsupported feature fails to compile rather than run wrongly.
// A barrier that waits longer than PFC_EMU_TIMEOUT_S seconds (default 20: a kernel whose lanes
// do not all reach a shuffle or barrier, which is undefined on the device) breaks the launch: all
// its waits return, and the next cudaGetLastError() reports cudaErrorLaunchTimeout, so a broken
// kernel fails its test instead of hanging it.
// Build with -std=c++20 -ffp-contract=off (the _rn intrinsics are plain IEEE operations then).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

// The host headers define these as attributes a host compiler ignores; here they must mean
// "one copy per block" (__shared__) and nothing (the others).
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __forceinline__ inline
#define __launch_bounds__(...)

namespace pfc_emu {

inline std::atomic<bool> g_broken{false};       // this launch timed out in a barrier
inline std::atomic<int> g_pending_error{0};     // what the next cudaGetLastError() returns

inline std::atomic<int> g_timeout_s{20};  // read from the environment at each launch

inline int timeout_s_from_env() {
  const char* v = std::getenv("PFC_EMU_TIMEOUT_S");
  const int t = v ? std::atoi(v) : 0;
  return t > 0 ? t : 20;
}

// std::barrier's arrive_and_wait / arrive_and_drop, with a time limit that breaks the launch.
class Barrier {
 public:
  explicit Barrier(int n) : expected_(n) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lk(m_);
    if (g_broken.load()) return;
    const uint64_t gen = gen_;
    if (++arrived_ == expected_) {
      arrived_ = 0;
      ++gen_;
      lk.unlock();  // (the woken threads need the lock)
      cv_.notify_all();
      return;
    }
    if (!cv_.wait_for(lk, std::chrono::seconds(g_timeout_s.load()), [&] { return gen_ != gen || g_broken.load(); })) {
      g_broken.store(true);
      cv_.notify_all();
    }
  }
  void arrive_and_drop() {
    std::lock_guard<std::mutex> lk(m_);
    --expected_;
    if (expected_ > 0 && arrived_ == expected_) {
      arrived_ = 0;
      ++gen_;
      cv_.notify_all();
    }
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int expected_;
  int arrived_ = 0;
  uint64_t gen_ = 0;
};

struct Block {
  explicit Block(int n) : nthreads(n), block_bar(n), xchg(static_cast<size_t>(n)) {
    for (int w = 0; w * 32 < n; ++w) warp_bars.emplace_back(std::make_unique<Barrier>(std::min(32, n - 32 * w)));
  }
  int nthreads;
  Barrier block_bar;
  std::vector<std::unique_ptr<Barrier>> warp_bars;
  std::vector<uint64_t> xchg;
  std::atomic<int> orv{0};
};

inline thread_local Block* tl_block = nullptr;
inline thread_local int tl_thread = 0;

template <class T>
T shuffle_from(T v, int src_lane) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a type wider than 8 bytes");
  Block& b = *tl_block;
  const int t = tl_thread, w = t / 32;
  const int width = std::min(32, b.nthreads - 32 * w);
  std::memcpy(&b.xchg[static_cast<size_t>(t)], &v, sizeof(T));
  b.warp_bars[static_cast<size_t>(w)]->arrive_and_wait();
  T r = v;
  if (src_lane >= 0 && src_lane < width) std::memcpy(&r, &b.xchg[static_cast<size_t>(32 * w + src_lane)], sizeof(T));
  b.warp_bars[static_cast<size_t>(w)]->arrive_and_wait();
  return r;
}

template <class... P, class... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, A&&... args);

}  // namespace pfc_emu

// Built-in variables: per emulated thread.
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

template <class T>
T min(T a, T b) {
  return b < a ? b : a;
}
template <class T>
T max(T a, T b) {
  return a < b ? b : a;
}

template <class T>
T __shfl_xor_sync(unsigned, T v, int mask) {
  return pfc_emu::shuffle_from(v, (pfc_emu::tl_thread % 32) ^ mask);
}
template <class T>
T __shfl_down_sync(unsigned, T v, int delta) {
  return pfc_emu::shuffle_from(v, pfc_emu::tl_thread % 32 + delta);
}
template <class T>
T __shfl_sync(unsigned, T v, int src) {
  return pfc_emu::shuffle_from(v, src & 31);
}
inline int __any_sync(unsigned, int pred) {
  // every lane's predicate through the exchange, then OR (same barriers as a shuffle)
  pfc_emu::Block& b = *pfc_emu::tl_block;
  const int t = pfc_emu::tl_thread, w = t / 32;
  const int width = std::min(32, b.nthreads - 32 * w);
  b.xchg[static_cast<size_t>(t)] = pred != 0;
  b.warp_bars[static_cast<size_t>(w)]->arrive_and_wait();
  int any = 0;
  for (int l = 0; l < width; ++l) any |= static_cast<int>(b.xchg[static_cast<size_t>(32 * w + l)]);
  b.warp_bars[static_cast<size_t>(w)]->arrive_and_wait();
  return any;
}
inline void __syncwarp(unsigned = 0xffffffffu) {
  pfc_emu::tl_block->warp_bars[static_cast<size_t>(pfc_emu::tl_thread / 32)]->arrive_and_wait();
}

inline void __syncthreads() { pfc_emu::tl_block->block_bar.arrive_and_wait(); }
inline int __syncthreads_or(int pred) {
  pfc_emu::Block& b = *pfc_emu::tl_block;
  if (pred) b.orv.fetch_or(1);
  b.block_bar.arrive_and_wait();
  const int r = b.orv.load();
  b.block_bar.arrive_and_wait();
  if (pfc_emu::tl_thread == 0) b.orv.store(0);
  b.block_bar.arrive_and_wait();
  return r;
}

inline int atomicOr(int* p, int v) { return std::atomic_ref<int>(*p).fetch_or(v); }
inline unsigned atomicOr(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_or(v); }
inline unsigned long long atomicOr(unsigned long long* p, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*p).fetch_or(v);
}
inline unsigned atomicMax(unsigned* p, unsigned v) {
  std::atomic_ref<unsigned> a(*p);
  unsigned old = a.load();
  while (old < v && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}

// The device faults a load whose address is not a multiple of its size (a 16-byte int4 load from
// an 8-byte aligned address is cudaErrorMisalignedAddress), while x86 would just read it: here
// such a load breaks the launch the same way (the next cudaGetLastError() reports it).
namespace pfc_emu {
template <class T>
T checked_load(const T* p) {
  T v{};
  if (reinterpret_cast<std::uintptr_t>(p) % alignof(T) != 0) {
    g_pending_error.store(static_cast<int>(cudaErrorMisalignedAddress));
    return v;
  }
  std::memcpy(&v, p, sizeof(T));
  return v;
}
}  // namespace pfc_emu

template <class T>
T __ldg(const T* p) {
  return pfc_emu::checked_load(p);
}
template <class T>
T __ldcs(const T* p) {
  return pfc_emu::checked_load(p);
}

inline int __dp4a(int a, int b, int c) {
  for (int i = 0; i < 4; ++i)
    c += static_cast<int>(static_cast<int8_t>(a >> (8 * i))) * static_cast<int>(static_cast<int8_t>(b >> (8 * i)));
  return c;
}

inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __uint_as_float(unsigned v) {
  float f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}
inline unsigned __float_as_uint(float v) {
  unsigned u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}
inline int __float_as_int(float v) {
  int u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}
inline float __fsqrt_rn(float v) { return std::sqrt(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __float2int_rn(float v) { return static_cast<int>(std::nearbyint(v)); }  // default mode: to nearest even
inline float __int_as_float(int v) {
  float f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}

// The runtime calls the launchers make, on host memory (streams are in order; nothing to wait for).
extern "C" inline cudaError_t cudaGetLastError(void) {
  return static_cast<cudaError_t>(pfc_emu::g_pending_error.exchange(0));
}
extern "C" inline cudaError_t cudaMemsetAsync(void* p, int value, size_t count, cudaStream_t) {
  std::memset(p, value, count);
  return cudaSuccess;
}
extern "C" inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind,
                                              cudaStream_t) {
  std::memcpy(dst, src, count);
  return cudaSuccess;
}
extern "C" inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
extern "C" inline cudaError_t cudaMallocAsync(void** p, size_t size, cudaStream_t) {
  *p = std::malloc(size ? size : 1);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
extern "C" inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
  std::free(p);
  return cudaSuccess;
}
// Device queries: the emulation is no device.
extern "C" inline cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
extern "C" inline cudaError_t cudaGetDeviceCount(int* count) {
  *count = 0;
  return cudaErrorNoDevice;
}
extern "C" inline const char* cudaGetErrorString(cudaError_t) { return "CPU emulation of the device"; }
extern "C" inline cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp*, int) { return cudaErrorNoDevice; }

namespace pfc_emu {

template <class... P, class... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, A&&... args) {
  const int n = static_cast<int>(block.x * block.y * block.z);
  g_broken.store(false);
  g_timeout_s.store(timeout_s_from_env());
  for (unsigned bz = 0; bz < grid.z && !g_broken.load(); ++bz)
    for (unsigned by = 0; by < grid.y && !g_broken.load(); ++by)
      for (unsigned bx = 0; bx < grid.x && !g_broken.load(); ++bx) {
        Block blk(n);
        std::vector<std::thread> threads;
        threads.reserve(static_cast<size_t>(n));
        for (int t = 0; t < n; ++t)
          threads.emplace_back([&, t] {
            tl_block = &blk;
            tl_thread = t;
            threadIdx = uint3{static_cast<unsigned>(t) % block.x, static_cast<unsigned>(t) / block.x % block.y,
                              static_cast<unsigned>(t) / (block.x * block.y)};
            blockIdx = uint3{bx, by, bz};
            blockDim = block;
            gridDim = grid;
            kernel(args...);
            blk.warp_bars[static_cast<size_t>(t / 32)]->arrive_and_drop();
            blk.block_bar.arrive_and_drop();
          });
        for (auto& th : threads) th.join();
      }
  if (g_broken.load()) g_pending_error.store(static_cast<int>(cudaErrorLaunchTimeout));
}

}  // namespace pfc_emu
