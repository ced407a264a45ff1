// The double-precision attention reference shared by attention_check.cu (the GPU check) and
// attention_tc_emulate.cu (the CPU emulation of attention_tc.cuh): out, lse and the gradients of
// softmax(q·kᵀ/√dh)·v for packed qkv (S, T, 3, H, dh), and the relative-L2 comparison.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace emae::dev {

struct Shape {
  int S, T, H, dh;
};

// double-precision reference: out (S, T, D), lse (S, H, T), dqkv (S, T, 3D)
struct Reference {
  std::vector<double> out, lse, dqkv;
  double score_rms = 0;  // σ = √(mean s_ij²), s = q·k·scale
};

inline Reference reference(const std::vector<float>& qkv, const std::vector<float>& dout, const Shape& sh) {
  const int S = sh.S, T = sh.T, H = sh.H, dh = sh.dh, D = H * dh;
  const size_t row = 3 * (size_t)D;
  const double scale = 1.0 / std::sqrt((double)dh);
  Reference ref;
  ref.out.assign((size_t)S * T * D, 0.0);
  ref.lse.assign((size_t)S * H * T, 0.0);
  ref.dqkv.assign((size_t)S * T * row, 0.0);
  std::vector<double> p((size_t)T * T), ds((size_t)T * T);
  for (int s = 0; s < S; ++s)
    for (int h = 0; h < H; ++h) {
      const auto q = [&](int i, int d) { return (double)qkv[((size_t)s * T + i) * row + (size_t)h * dh + d]; };
      const auto k = [&](int j, int d) { return (double)qkv[((size_t)s * T + j) * row + D + (size_t)h * dh + d]; };
      const auto v = [&](int j, int d) { return (double)qkv[((size_t)s * T + j) * row + 2 * D + (size_t)h * dh + d]; };
      const auto go = [&](int i, int d) { return (double)dout[((size_t)s * T + i) * D + (size_t)h * dh + d]; };
      for (int i = 0; i < T; ++i) {
        double mx = -INFINITY;
        for (int j = 0; j < T; ++j) {
          double acc = 0.0;
          for (int d = 0; d < dh; ++d) acc += q(i, d) * k(j, d);
          p[(size_t)i * T + j] = acc * scale;
          mx = std::max(mx, acc * scale);
          ref.score_rms += acc * scale * acc * scale;
        }
        double sum = 0.0;
        for (int j = 0; j < T; ++j) sum += std::exp(p[(size_t)i * T + j] - mx);
        const double l = mx + std::log(sum);
        ref.lse[((size_t)s * H + h) * T + i] = l;
        for (int j = 0; j < T; ++j) p[(size_t)i * T + j] = std::exp(p[(size_t)i * T + j] - l);
        double* o = &ref.out[((size_t)s * T + i) * D + (size_t)h * dh];
        for (int j = 0; j < T; ++j)
          for (int d = 0; d < dh; ++d) o[d] += p[(size_t)i * T + j] * v(j, d);
      }
      for (int i = 0; i < T; ++i) {
        const double* o = &ref.out[((size_t)s * T + i) * D + (size_t)h * dh];
        double Di = 0.0;
        for (int d = 0; d < dh; ++d) Di += go(i, d) * o[d];
        for (int j = 0; j < T; ++j) {
          double dp = 0.0;
          for (int d = 0; d < dh; ++d) dp += go(i, d) * v(j, d);
          ds[(size_t)i * T + j] = p[(size_t)i * T + j] * (dp - Di);
        }
      }
      for (int i = 0; i < T; ++i) {
        double* dq = &ref.dqkv[((size_t)s * T + i) * row + (size_t)h * dh];
        for (int j = 0; j < T; ++j) {
          double* dk = &ref.dqkv[((size_t)s * T + j) * row + D + (size_t)h * dh];
          double* dv = &ref.dqkv[((size_t)s * T + j) * row + 2 * D + (size_t)h * dh];
          const double pij = p[(size_t)i * T + j], dsij = ds[(size_t)i * T + j];
          for (int d = 0; d < dh; ++d) {
            dq[d] += scale * dsij * k(j, d);
            dk[d] += scale * dsij * q(i, d);
            dv[d] += pij * go(i, d);
          }
        }
      }
    }
  ref.score_rms = std::sqrt(ref.score_rms / ((double)S * H * T * T));
  return ref;
}

// relative L2 of got against ref over the elements selected by take(index)
template <typename Take>
inline double rel_l2(const std::vector<float>& got, const std::vector<double>& ref, Take take) {
  double d2 = 0.0, r2 = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!take(i)) continue;
    const double d = (double)got[i] - ref[i];
    d2 += d * d;
    r2 += ref[i] * ref[i];
  }
  return std::sqrt(d2 / std::max(r2, 1e-300));
}

template <typename Take>
inline double norm(const std::vector<double>& v, Take take) {
  double r2 = 0.0;
  for (size_t i = 0; i < v.size(); ++i)
    if (take(i)) r2 += v[i] * v[i];
  return std::sqrt(std::max(r2, 1e-300));
}

// Tolerances, relative L2 against this reference, of out, lse and the gradients (dq, dk, dv): one
// table for the GPU check and both emulators, derived in attention_check.cu's header. σ: the RMS
// score (its logit scale); u = 2^-8, bf16's unit roundoff; t = 1e-5·max(1, σ/3), fp32 rounding.
constexpr double kBf16Unit = 1.0 / 256;
struct AttentionTolerance {
  double out, lse, grads;
};
inline AttentionTolerance attention_tolerance(bool tensor_cores, bool bf16_storage, double sigma) {
  const double t32 = 1e-5 * std::max(1.0, sigma / 3);
  if (tensor_cores) {  // bf16 operands: u·(1 + σ), the gradients rounding P and dS once more
    const double t = kBf16Unit * (1 + sigma);
    return {t, bf16_storage ? t32 : t, 2 * t};
  }
  if (!bf16_storage) return {t32, t32, t32};
  return {kBf16Unit / 2 + t32, t32, kBf16Unit * (1 + sigma / 8) + t32};
}

}  // namespace emae::dev
