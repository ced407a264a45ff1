// CPU fine-tuning ops (classifier_ops.h). These run on (B, D)-sized or row-scaled data, a small
// share of a fine-tuning step next to the GEMMs and attention, so they are plain loops with
// OpenMP over rows; every sum runs in a fixed order (bitwise the same for any thread count).
#include "cpu/classifier_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace emae::cpu {

template <typename T> void pool_tokens_forward(T* pooled, const T* x, int S, int T_, int D, bool mean) {
#pragma omp parallel for schedule(static)
  for (int s = 0; s < S; ++s) {
    const T* xs = x + (size_t)s * T_ * D;
    T* out = pooled + (size_t)s * D;
    if (!mean) {
      std::copy(xs, xs + D, out);
      continue;
    }
    std::fill(out, out + D, T(0));
    for (int t = 1; t < T_; ++t)
      for (int d = 0; d < D; ++d) out[d] += xs[(size_t)t * D + d];
    const T inv = T(1) / T(T_ - 1);
    for (int d = 0; d < D; ++d) out[d] *= inv;
  }
}

template <typename T> void pool_tokens_backward(T* dx, const T* dpooled, int S, int T_, int D, bool mean) {
#pragma omp parallel for schedule(static)
  for (int s = 0; s < S; ++s) {
    T* d = dx + (size_t)s * T_ * D;
    const T* g = dpooled + (size_t)s * D;
    if (!mean) {
      std::copy(g, g + D, d);
      std::fill(d + D, d + (size_t)T_ * D, T(0));
      continue;
    }
    std::fill(d, d + D, T(0));
    const T inv = T(1) / T(T_ - 1);
    for (int t = 1; t < T_; ++t)
      for (int k = 0; k < D; ++k) d[(size_t)t * D + k] = g[k] * inv;
  }
}

template <typename T> void residual_scaled_forward(T* out, const T* res, const T* branch, const T* keep, int S, size_t n) {
#pragma omp parallel for schedule(static)
  for (int s = 0; s < S; ++s) {
    const T k = keep[s];
    const size_t o = (size_t)s * n;
    for (size_t i = 0; i < n; ++i) out[o + i] = res[o + i] + k * branch[o + i];
  }
}

template <typename T> void scale_rows(T* out, const T* inp, const T* keep, int S, size_t n) {
#pragma omp parallel for schedule(static)
  for (int s = 0; s < S; ++s) {
    const T k = keep[s];
    const size_t o = (size_t)s * n;
    for (size_t i = 0; i < n; ++i) out[o + i] = k * inp[o + i];
  }
}

template <typename T> double cross_entropy_forward_backward(T* dlogits, const T* logits, const T* targets, int B, int C) {
  std::vector<double> row_loss(B);
#pragma omp parallel for schedule(static)
  for (int b = 0; b < B; ++b) {
    const T* z = logits + (size_t)b * C;
    const T* y = targets + (size_t)b * C;
    T* dz = dlogits + (size_t)b * C;
    const T zmax = *std::max_element(z, z + C);
    double sum = 0;
    for (int c = 0; c < C; ++c) sum += std::exp((double)(z[c] - zmax));
    const double lse = (double)zmax + std::log(sum);
    double loss = 0;
    for (int c = 0; c < C; ++c) {
      loss -= (double)y[c] * ((double)z[c] - lse);
      dz[c] = (T)((std::exp((double)z[c] - lse) - (double)y[c]) / B);
    }
    row_loss[b] = loss;
  }
  double total = 0;
  for (int b = 0; b < B; ++b) total += row_loss[b];
  return total / B;
}

#define EMAE_INSTANTIATE(T)                                                                           \
  template void pool_tokens_forward<T>(T*, const T*, int, int, int, bool);                           \
  template void pool_tokens_backward<T>(T*, const T*, int, int, int, bool);                          \
  template void residual_scaled_forward<T>(T*, const T*, const T*, const T*, int, size_t);           \
  template void scale_rows<T>(T*, const T*, const T*, int, size_t);                                  \
  template double cross_entropy_forward_backward<T>(T*, const T*, const T*, int, int);
EMAE_INSTANTIATE(float)
EMAE_INSTANTIATE(double)
#undef EMAE_INSTANTIATE

}  // namespace emae::cpu
