// Host-side buffers of the CPU emulations of the attention kernels (attention_tc_emulate.cu,
// attention_simt_emulate.cu): an element type's host storage (float as float, __nv_bfloat16 as its
// bits), buffers NaN-poisoned and followed by guard sentinels, inputs rounded to the storage type.
#pragma once
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/act.h"

namespace emae::dev {

// A storage type's host side: Elem float is stored as float, Elem __nv_bfloat16 as its bits (uint16_t).
template <class Elem>
struct Storage {
  using Bits = float;
  static constexpr DType kType = DType::kF32;
  static Bits from_float(float f) { return f; }
  static float to_float(Bits b) { return b; }
};
template <>
struct Storage<__nv_bfloat16> {
  using Bits = uint16_t;
  static constexpr DType kType = DType::kBF16;
  static Bits from_float(float f) { return emae::bf16_from_float(f); }
  static float to_float(Bits b) { return emae::float_from_bf16(b); }
};

// n elements at `offset` elements past a 64-byte aligned allocation, followed by guard sentinels
constexpr size_t kGuard = 37;
constexpr float kSentinel = 12345.5f;  // exact in bf16 too
template <class Elem>
struct HostBuffer {
  using St = Storage<Elem>;
  using Bits = typename St::Bits;
  std::vector<Bits> storage;
  size_t n, offset;
  HostBuffer(size_t n_, size_t offset_) : storage(n_ + kGuard + offset_ + 64), n(n_) {
    const uintptr_t base = reinterpret_cast<uintptr_t>(storage.data());
    offset = (size_t)((64 - base % 64) % 64) / sizeof(Bits) + offset_;
    fill(std::vector<float>(n, std::nanf("")));
  }
  Elem* data() { return reinterpret_cast<Elem*>(storage.data() + offset); }
  // v rounded to the storage type
  void fill(const std::vector<float>& v) {
    for (size_t i = 0; i < n; ++i) storage[offset + i] = St::from_float(v[i]);
    std::fill(storage.begin() + offset + n, storage.begin() + offset + n + kGuard, St::from_float(kSentinel));
  }
  std::vector<float> values() const {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = St::to_float(storage[offset + i]);
    return v;
  }
  bool guard_ok() const {
    const Bits sentinel = St::from_float(kSentinel);
    for (size_t i = 0; i < kGuard; ++i)
      if (std::memcmp(&storage[offset + n + i], &sentinel, sizeof(Bits)) != 0) return false;
    return true;
  }
};

// v as stored in Elem, widened back to float
template <class Elem>
std::vector<float> rounded(std::vector<float> v) {
  for (float& x : v) x = Storage<Elem>::to_float(Storage<Elem>::from_float(x));
  return v;
}

}  // namespace emae::dev
