// CPU reference ops of the fine-tuning model (core/classifier.cc), each forward beside its
// backward; templated on the scalar like ops.h (float in the backend, double in the
// finite-difference tests). Shapes follow backend.h's "fine-tuning" section.
#pragma once
#include <cstddef>

namespace emae::cpu {

// pooled (S, D) = mean of x (S, T, D) over tokens 1..T−1 (mean) or token 0 (cls)
template <typename T> void pool_tokens_forward(T* pooled, const T* x, int S, int T_, int D, bool mean);
// dx (S, T, D) assigned
template <typename T> void pool_tokens_backward(T* dx, const T* dpooled, int S, int T_, int D, bool mean);

// out (S, n) = res + keep[s] · branch (drop path); out may alias res or branch
template <typename T> void residual_scaled_forward(T* out, const T* res, const T* branch, const T* keep, int S, size_t n);
// out (S, n) = keep[s] · inp; out may alias inp
template <typename T> void scale_rows(T* out, const T* inp, const T* keep, int S, size_t n);

// Softmax cross-entropy against soft targets (B, C), mean over B; dlogits = (softmax − targets) / B.
template <typename T> double cross_entropy_forward_backward(T* dlogits, const T* logits, const T* targets, int B, int C);

}  // namespace emae::cpu
