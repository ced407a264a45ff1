// What the CPU GEMM kernels share (gemm.cc's fp32 path, gemm_amx.cc, gemm_avx512bf16.cc): the
// micro-kernel store's flags, 64-byte aligned scratch for packed operands, and the even block
// split that keeps every output's summation order independent of the thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace emae::cpu::gemm_util {

// What a micro-kernel's store does with its accumulated tile (pointers already at the tile).
struct TileStore {
  bool add = false;                 // C += acc (a later depth block, or accumulate)
  const float* bias = nullptr;      // (tile columns) added to every row
  const float* residual = nullptr;  // (tile rows, tile columns) at ldc, added
};

// n elements of `v` from its first 64-byte aligned element (v grows, never shrinks; the 64
// elements of slack cover the alignment of any T).
template <typename T> T* aligned_scratch(std::vector<T>& v, size_t n) {
  if (v.size() < n + 64) v.resize(n + 64);
  const auto addr = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<T*>((addr + 63) & ~uintptr_t(63));
}

// Even split of `n` into blocks of `target` or less: the block size depends only on n.
inline int split_size(int n, int target) {
  const int blocks = (n + target - 1) / target;
  return (n + blocks - 1) / blocks;
}

}  // namespace emae::cpu::gemm_util
