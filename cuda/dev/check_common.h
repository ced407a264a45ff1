// Helpers shared by the standalone checks in cuda/dev: seeded inputs that are a function of
// (seed, index) only, on the host or the device, and an owning device buffer.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cuda/common.cuh"

namespace emae::dev {

__host__ __device__ inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// uniform in [-amp, amp) for element i of stream `seed`
__host__ __device__ inline float seeded_uniform(uint64_t seed, uint64_t i, float amp) {
  const uint64_t h = splitmix64(seed * 0x100000001B3ull ^ splitmix64(i));
  return amp * (float)((double)(h >> 40) * (1.0 / 8388608.0) - 1.0);
}

inline std::vector<float> random_vector(size_t n, uint64_t seed, float amp) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = seeded_uniform(seed, i, amp);
  return v;
}

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(size_t count) { EMAE_CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(count, 1) * sizeof(T))); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace emae::dev
