// Per-element math shared by the CPU backend and the CUDA kernels (compiled for host and
// device under nvcc), so the CPU tests cover the formulas the GPU runs. Templated on the scalar
// type: float in the model, double in the gradient tests.
#pragma once
#include <cmath>

#if defined(__CUDACC__)
#define EMAE_HD __host__ __device__ __forceinline__
#else
#define EMAE_HD inline
#endif

namespace emae {

// Exact (erf) GELU, as torch.nn.GELU() and timm's Mlp default.
template <typename T> EMAE_HD T gelu(T x) {
  const T inv_sqrt2 = T(0.70710678118654752440);
  return T(0.5) * x * (T(1) + erf(x * inv_sqrt2));
}
// d/dx gelu(x) = Phi(x) + x * phi(x)
template <typename T> EMAE_HD T gelu_grad(T x) {
  const T inv_sqrt2 = T(0.70710678118654752440);
  const T inv_sqrt2pi = T(0.39894228040143267794);
  const T cdf = T(0.5) * (T(1) + erf(x * inv_sqrt2));
  return cdf + x * inv_sqrt2pi * exp(T(-0.5) * x * x);
}

// LayerNorm reciprocal standard deviation from the biased variance (PyTorch LayerNorm).
template <typename T> EMAE_HD T layernorm_rstd(T variance, T eps) { return T(1) / sqrt(variance + eps); }

// norm-pix target: 1 / sqrt(unbiased variance + 1e-6), MAE's forward_loss.
template <typename T> EMAE_HD T normpix_rstd(T sum_sq_dev, int n) {
  return T(1) / sqrt(sum_sq_dev / T(n - 1) + T(1e-6));
}

// Consistency distance d(a - b) and its derivative w.r.t. a (b is stop-gradient).
// l1 uses sign(0) = 0 like torch.abs's gradient.
template <typename T> EMAE_HD T consistency_dist(T diff, bool l1) { return l1 ? fabs(diff) : diff * diff; }
template <typename T> EMAE_HD T consistency_dist_grad(T diff, bool l1) {
  if (!l1) return T(2) * diff;
  return diff > T(0) ? T(1) : (diff < T(0) ? T(-1) : T(0));
}

// One AdamW step for one element, PyTorch semantics (decoupled decay, bias correction):
//   p -= lr*wd*p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//   p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
struct AdamWScalars {
  float lr, beta1, beta2, eps, weight_decay;
  float bias_correction1, bias_correction2_sqrt;  // 1 - b1^t, sqrt(1 - b2^t)
};
template <typename T> EMAE_HD void adamw_update(T& p, T& m, T& v, T g, const AdamWScalars& s, bool decay) {
  if (decay) p -= T(s.lr) * T(s.weight_decay) * p;
  m = T(s.beta1) * m + (T(1) - T(s.beta1)) * g;
  v = T(s.beta2) * v + (T(1) - T(s.beta2)) * g * g;
  const T denom = sqrt(v) / T(s.bias_correction2_sqrt) + T(s.eps);
  p -= (T(s.lr) / T(s.bias_correction1)) * m / denom;
}

// The learning rate of a parameter segment whose lr multiplier is lr_scale (backend.h
// ParamSegment): the product in double, rounded once to float. A segment at lr_scale d^k thus
// steps exactly as a call of its own with lr = (float)((double)lr · d^k), and lr_scale 1 gives lr.
EMAE_HD float segment_lr(float lr, double lr_scale) { return (float)((double)lr * lr_scale); }

}  // namespace emae
