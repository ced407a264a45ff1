// Activation views: a buffer in backend memory and the element type it is stored in. The CPU
// backend stores every activation in fp32; the CUDA backend may store the GEMM operands and the
// attention's inputs and outputs in bf16 (issue 11), and keeps fp32 for the residual stream, the
// LayerNorm and softmax statistics, the losses, the master weights and the optimizer state.
// A float* converts implicitly to an fp32 view, so fp32 call sites read as before.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace emae {

enum class DType : uint8_t { kF32 = 0, kBF16 = 1 };

inline size_t dtype_bytes(DType t) { return t == DType::kBF16 ? 2 : 4; }
inline const char* dtype_name(DType t) { return t == DType::kBF16 ? "bf16" : "fp32"; }

// A writable view (outputs, and inputs an op updates in place).
struct Act {
  void* data = nullptr;
  DType dtype = DType::kF32;

  Act() = default;
  Act(std::nullptr_t) {}
  Act(float* p) : data(p), dtype(DType::kF32) {}  // NOLINT: fp32 pointers stay fp32 views
  Act(void* p, DType t) : data(p), dtype(t) {}

  explicit operator bool() const { return data != nullptr; }
  bool is_f32() const { return dtype == DType::kF32; }
  bool is_bf16() const { return dtype == DType::kBF16; }
  // The fp32 pointer; a bf16 view here is a bug in the caller (a backend that stores fp32 only
  // was handed a bf16 buffer), reported as a std::logic_error naming `what`.
  float* f32(const char* what = "activation") const {
    if (dtype != DType::kF32) throw std::logic_error(std::string(what) + ": expected fp32, got " + dtype_name(dtype));
    return static_cast<float*>(data);
  }
  // bf16 bits (uint16_t: the host side has no bf16 type of its own)
  uint16_t* bf16(const char* what = "activation") const {
    if (dtype != DType::kBF16) throw std::logic_error(std::string(what) + ": expected bf16, got " + dtype_name(dtype));
    return static_cast<uint16_t*>(data);
  }
  // the view `elems` elements further on
  Act at(size_t elems) const { return {static_cast<char*>(data) + elems * dtype_bytes(dtype), dtype}; }
};

// A read-only view (an op's inputs).
struct ActIn {
  const void* data = nullptr;
  DType dtype = DType::kF32;

  ActIn() = default;
  ActIn(std::nullptr_t) {}
  ActIn(const float* p) : data(p), dtype(DType::kF32) {}  // NOLINT
  ActIn(const void* p, DType t) : data(p), dtype(t) {}
  ActIn(const Act& a) : data(a.data), dtype(a.dtype) {}  // NOLINT

  explicit operator bool() const { return data != nullptr; }
  bool is_f32() const { return dtype == DType::kF32; }
  bool is_bf16() const { return dtype == DType::kBF16; }
  const float* f32(const char* what = "activation") const {
    if (dtype != DType::kF32) throw std::logic_error(std::string(what) + ": expected fp32, got " + dtype_name(dtype));
    return static_cast<const float*>(data);
  }
  const uint16_t* bf16(const char* what = "activation") const {
    if (dtype != DType::kBF16) throw std::logic_error(std::string(what) + ": expected bf16, got " + dtype_name(dtype));
    return static_cast<const uint16_t*>(data);
  }
  ActIn at(size_t elems) const { return {static_cast<const char*>(data) + elems * dtype_bytes(dtype), dtype}; }
};

// Round-to-nearest-even fp32 → bf16 (NaN stays a quiet NaN), and back: the host's reference of
// the device's __float2bfloat16_rn / __bfloat162float.
inline uint16_t bf16_from_float(float f) {
  uint32_t u;
  static_assert(sizeof u == sizeof f);
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);  // NaN: keep it quiet
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
inline float float_from_bf16(uint16_t b) {
  const uint32_t u = (uint32_t)b << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

}  // namespace emae
