// CPU reference ops (see ops.h). Invariants:
//   - every reduction over rows runs in fixed-size chunks reduced in chunk order, so results do
//     not depend on the thread count;
//   - scratch lives in thread_local vectors that only grow (no allocation in a steady step).
#include "cpu/ops.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/clones.h"
#include "cpu/gemm.h"

namespace emae::cpu {
namespace {

constexpr int kRowChunk = 64;  // rows per partial sum in column reductions

// exp for float in a form the compiler vectorizes (libm's expf is a scalar call):
// 2^k · p(r), r = x − k·ln2 in [−ln2/2, ln2/2], degree-6 Taylor polynomial; relative error
// below 2e-7 over the clamped range.
__attribute__((always_inline)) inline float fast_exp(float x) {
  // builtins, not std::: the std:: wrappers are not inlined into the target clones
  x = x > 88.0f ? 88.0f : (x < -87.0f ? -87.0f : x);
  const float k = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
  const float r = (x - k * 0.693145751953125f) - k * 1.428606765330187e-06f;
  float p = 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = ((int32_t)k + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
template <typename T> __attribute__((always_inline)) inline T exp_(T x) {
  if constexpr (std::is_same_v<T, float>) return fast_exp(x); else return std::exp(x);
}

// Φ(x) = 0.5·(1 + erf(x/√2)) and e^{−x²/2} for GELU. float: Abramowitz–Stegun 7.1.26
// (|error| of erf < 1.5e-7), sharing the one exp with φ(x); double: libm.
template <typename T> __attribute__((always_inline)) inline void normal_cdf_and_gauss(T x, T& cdf, T& gauss) {
  if constexpr (std::is_same_v<T, float>) {
    gauss = fast_exp(-0.5f * x * x);
    const float z = __builtin_fabsf(x) * 0.70710678118654752f;
    const float t = 1.f / (1.f + 0.3275911f * z);
    const float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    const float erf_abs = 1.f - poly * gauss;  // e^{−z²} = e^{−x²/2}
    cdf = 0.5f * (1.f + (x < 0 ? -erf_abs : erf_abs));
  } else {
    gauss = std::exp(T(-0.5) * x * x);
    cdf = T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
  }
}

template <typename T> T* scratch(size_t n) {
  thread_local std::vector<T> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

template <typename T> __attribute__((always_inline)) inline T dot(const T* a, const T* b, int n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

template <typename T> __attribute__((always_inline)) inline void axpy(T* y, T a, const T* x, int n) {
#pragma omp simd
  for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

// naive reference GEMM for double: C (M, N) (+)= op(A) · op(B)
template <typename T>
void gemm_ref(bool ta, bool tb, int M, int N, int K, const T* A, int lda, const T* B, int ldb, T* C, int ldc,
              bool accumulate) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      T s = 0;
      for (int k = 0; k < K; ++k)
        s += (ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) * (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
      C[(size_t)i * ldc + j] = (accumulate ? C[(size_t)i * ldc + j] : T(0)) + s;
    }
}

}  // namespace

template <typename T> EMAE_CPU_CLONES void column_sum_accumulate(T* dst, const T* src, int R, int C) {
  const int chunks = (R + kRowChunk - 1) / kRowChunk;
  T* partial = scratch<T>((size_t)chunks * C);
#pragma omp parallel for schedule(static)
  for (int c = 0; c < chunks; ++c) {
    T* part = partial + (size_t)c * C;
    std::fill(part, part + C, T(0));
    const int r1 = std::min(R, (c + 1) * kRowChunk);
    for (int r = c * kRowChunk; r < r1; ++r) axpy(part, T(1), src + (size_t)r * C, C);
  }
  for (int c = 0; c < chunks; ++c) axpy(dst, T(1), partial + (size_t)c * C, C);
}

// ---- matmul ----------------------------------------------------------------------------------

// GELU on one finished GEMM tile (the fused MLP ops): the same math as gelu_forward/backward.
// forward: epilogue_out = gelu(C);  backward: C (= dact) *= gelu'(epilogue_in)
static EMAE_CPU_CLONES void gelu_tile_forward(const GemmParams& p, int i0, int rows, int j0, int cols) {
  for (int r = 0; r < rows; ++r) {
    const float* x = p.C + (size_t)(i0 + r) * p.ldc + j0;
    float* y = p.epilogue_out + (size_t)(i0 + r) * p.ldc + j0;
#pragma omp simd
    for (int j = 0; j < cols; ++j) {
      float cdf, gauss;
      normal_cdf_and_gauss(x[j], cdf, gauss);
      y[j] = x[j] * cdf;
    }
  }
}
static EMAE_CPU_CLONES void gelu_tile_backward(const GemmParams& p, int i0, int rows, int j0, int cols) {
  const float inv_sqrt2pi = 0.39894228040143267794f;
  for (int r = 0; r < rows; ++r) {
    const float* x = p.epilogue_in + (size_t)(i0 + r) * p.ldc + j0;
    float* d = p.C + (size_t)(i0 + r) * p.ldc + j0;
#pragma omp simd
    for (int j = 0; j < cols; ++j) {
      float cdf, gauss;
      normal_cdf_and_gauss(x[j], cdf, gauss);
      d[j] = (cdf + x[j] * inv_sqrt2pi * gauss) * d[j];
    }
  }
}

template <typename T>
void matmul_forward(T* out, const T* inp, const T* w, const T* bias, const T* residual, int R, int K, int N,
                    bool bf16) {
  if constexpr (std::is_same_v<T, float>) {
    GemmParams p;
    p.bf16 = bf16;
    p.trans_b = true; p.M = R; p.N = N; p.K = K;
    p.A = inp; p.lda = K; p.B = w; p.ldb = K; p.C = out; p.ldc = N;
    p.bias = bias; p.residual = residual;
    gemm(p);
  } else {
    gemm_ref<T>(false, true, R, N, K, inp, K, w, K, out, N, false);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < N; ++j)
        out[(size_t)r * N + j] += (bias ? bias[j] : T(0)) + (residual ? residual[(size_t)r * N + j] : T(0));
  }
}

template <typename T>
void matmul_gelu_forward(T* pre, T* act, const T* inp, const T* w, const T* bias, int R, int K, int N, bool bf16) {
  if constexpr (std::is_same_v<T, float>) {
    GemmParams p;
    p.bf16 = bf16;
    p.trans_b = true; p.M = R; p.N = N; p.K = K;
    p.A = inp; p.lda = K; p.B = w; p.ldb = K; p.C = pre; p.ldc = N;
    p.bias = bias;
    p.tile_epilogue = gelu_tile_forward; p.epilogue_out = act;
    gemm(p);
  } else {
    matmul_forward<T>(pre, inp, w, bias, nullptr, R, K, N, false);
    gelu_forward<T>(act, pre, (size_t)R * N);
  }
}

// dinp = dout · w [⊙ gelu'(gelu_inp)], dw += doutᵀ · inp, dbias += Σ dout
template <typename T>
void matmul_backward_impl(T* dinp, T* dw, T* dbias, const T* dout, const T* inp, const T* w, const T* gelu_inp,
                          int R, int K, int N, bool bf16, bool assign_dw) {
  if constexpr (std::is_same_v<T, float>) {
    if (dinp) {  // dinp (R, K) = dout (R, N) · w (N, K)
      GemmParams p;
      p.bf16 = bf16;
      p.M = R; p.N = K; p.K = N; p.A = dout; p.lda = N; p.B = w; p.ldb = K; p.C = dinp; p.ldc = K;
      if (gelu_inp) p.tile_epilogue = gelu_tile_backward, p.epilogue_in = gelu_inp;
      gemm(p);
    }
    GemmParams p;  // dw (N, K) += dout (R, N)ᵀ · inp (R, K)
    p.bf16 = bf16;
    p.trans_a = true; p.M = N; p.N = K; p.K = R;
    p.A = dout; p.lda = N; p.B = inp; p.ldb = K; p.C = dw; p.ldc = K; p.accumulate = !assign_dw;
    gemm(p);
  } else {
    if (dinp) gemm_ref<T>(false, false, R, K, N, dout, N, w, K, dinp, K, false);
    if (dinp && gelu_inp) gelu_backward<T>(dinp, gelu_inp, dinp, (size_t)R * K);
    gemm_ref<T>(true, false, N, K, R, dout, N, inp, K, dw, K, !assign_dw);
  }
  if (dbias) column_sum_accumulate(dbias, dout, R, N);
}

template <typename T>
void matmul_backward(T* dinp, T* dw, T* dbias, const T* dout, const T* inp, const T* w, int R, int K, int N,
                     bool bf16, bool assign_dw) {
  matmul_backward_impl<T>(dinp, dw, dbias, dout, inp, w, nullptr, R, K, N, bf16, assign_dw);
}

template <typename T>
void matmul_backward_gelu(T* dinp, T* dw, T* dbias, const T* dout, const T* inp, const T* w, const T* gelu_inp,
                          int R, int K, int N, bool bf16, bool assign_dw) {
  matmul_backward_impl<T>(dinp, dw, dbias, dout, inp, w, gelu_inp, R, K, N, bf16, assign_dw);
}

// ---- LayerNorm -------------------------------------------------------------------------------

template <typename T>
EMAE_CPU_CLONES void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* w, const T* b, int R, int C, T eps) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; ++r) {
    const T* x = inp + (size_t)r * C;
    T m = 0;
#pragma omp simd reduction(+ : m)
    for (int i = 0; i < C; ++i) m += x[i];
    m /= T(C);
    T var = 0;  // two-pass: robust to a large mean
#pragma omp simd reduction(+ : var)
    for (int i = 0; i < C; ++i) var += (x[i] - m) * (x[i] - m);
    const T s = layernorm_rstd(var / T(C), eps);
    T* o = out + (size_t)r * C;
#pragma omp simd
    for (int i = 0; i < C; ++i) o[i] = (x[i] - m) * s * w[i] + b[i];
    mean[r] = m;
    rstd[r] = s;
  }
}

template <typename T>
EMAE_CPU_CLONES void layernorm_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w, const T* mean,
                        const T* rstd, int R, int C) {
  const int chunks = (R + kRowChunk - 1) / kRowChunk;
  T* partial = scratch<T>((size_t)chunks * 2 * C);  // per chunk: dw (C), db (C)
#pragma omp parallel for schedule(static)
  for (int c = 0; c < chunks; ++c) {
    T* pdw = partial + (size_t)c * 2 * C;
    T* pdb = pdw + C;
    std::fill(pdw, pdw + 2 * C, T(0));
    const int r1 = std::min(R, (c + 1) * kRowChunk);
    for (int r = c * kRowChunk; r < r1; ++r) {
      const T* x = inp + (size_t)r * C;
      const T* g = dout + (size_t)r * C;
      const T m = mean[r], s = rstd[r];
      // dx = s · (dn − mean(dn) − x̂ · mean(dn · x̂)), dn = g · w
      T mean_dn = 0, mean_dn_xhat = 0;
#pragma omp simd reduction(+ : mean_dn, mean_dn_xhat)
      for (int i = 0; i < C; ++i) {
        const T xhat = (x[i] - m) * s;
        const T dn = g[i] * w[i];
        mean_dn += dn;
        mean_dn_xhat += dn * xhat;
      }
      mean_dn /= T(C);
      mean_dn_xhat /= T(C);
      T* dx = dinp + (size_t)r * C;
#pragma omp simd
      for (int i = 0; i < C; ++i) {
        const T xhat = (x[i] - m) * s;
        dx[i] += s * (g[i] * w[i] - mean_dn - xhat * mean_dn_xhat);
        pdw[i] += g[i] * xhat;
        pdb[i] += g[i];
      }
    }
  }
  for (int c = 0; c < chunks; ++c) {
    axpy(dw, T(1), partial + (size_t)c * 2 * C, C);
    axpy(db, T(1), partial + (size_t)c * 2 * C + C, C);
  }
}

// ---- GELU --------------------------------------------------------------------------------------

// gelu(x) = x·Φ(x); gelu'(x) = Φ(x) + x·φ(x). The formulas of elementwise.h, with the CPU's
// vectorizable erf/exp for float (checked against elementwise.h's gelu in the op tests).
template <typename T> EMAE_CPU_CLONES void gelu_forward(T* out, const T* inp, size_t n) {
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; ++i) {
    T cdf, gauss;
    normal_cdf_and_gauss(inp[i], cdf, gauss);
    out[i] = inp[i] * cdf;
  }
}

template <typename T> EMAE_CPU_CLONES void gelu_backward(T* dinp, const T* inp, const T* dout, size_t n) {
  const T inv_sqrt2pi = T(0.39894228040143267794);
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; ++i) {
    T cdf, gauss;
    normal_cdf_and_gauss(inp[i], cdf, gauss);
    dinp[i] = (cdf + inp[i] * inv_sqrt2pi * gauss) * dout[i];
  }
}

// ---- attention -------------------------------------------------------------------------------
// One (sequence, head) per task. The T×T scores live in per-thread scratch (T ≤ a few hundred
// here, so they stay in L1/L2) and every product is a small register-tiled GEMM; the backward
// recomputes the probabilities from q, k and the saved log-sum-exp.

// 64-byte GCC vectors: one zmm in the AVX-512 clone, two ymm / four xmm in the others. The
// helpers are always inlined, so the ABI of passing such vectors (-Wpsabi) never applies.
#pragma GCC diagnostic ignored "-Wpsabi"
template <typename T> struct Vec64;
template <> struct Vec64<float> { typedef float type __attribute__((vector_size(64))); };
template <> struct Vec64<double> { typedef double type __attribute__((vector_size(64))); };
template <typename T> using vec64 = typename Vec64<T>::type;
template <typename T> constexpr int kLanes = 64 / sizeof(T);
template <typename T> __attribute__((always_inline)) inline vec64<T> vload(const T* p) {
  vec64<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T> __attribute__((always_inline)) inline void vstore(T* p, vec64<T> v) {
  std::memcpy(p, &v, sizeof(v));
}

// C (m, n) = alpha · Σ_k a(i, k) · B[k·ldb + j] with a(i, k) = A[i·a_rs + k·a_ks] and B's rows
// contiguous: 4 rows × one vector of columns per register tile.
template <typename T>
__attribute__((always_inline)) inline void small_gemm(int m, int n, int k, const T* A, int a_rs, int a_ks,
                                                      const T* B, int ldb, T* C, int ldc, T alpha) {
  constexpr int L = kLanes<T>, RB = 4;
  int j0 = 0;
  for (; j0 + L <= n; j0 += L) {
    int i0 = 0;
    for (; i0 + RB <= m; i0 += RB) {
      vec64<T> acc[RB] = {};
      for (int kk = 0; kk < k; ++kk) {
        const vec64<T> b = vload(B + (size_t)kk * ldb + j0);
        const T* a = A + (size_t)i0 * a_rs + (size_t)kk * a_ks;
#pragma GCC unroll 4
        for (int r = 0; r < RB; ++r) acc[r] += a[(size_t)r * a_rs] * b;
      }
#pragma GCC unroll 4
      for (int r = 0; r < RB; ++r) vstore(C + (size_t)(i0 + r) * ldc + j0, acc[r] * alpha);
    }
    for (; i0 < m; ++i0) {
      vec64<T> acc = {};
      for (int kk = 0; kk < k; ++kk) acc += A[(size_t)i0 * a_rs + (size_t)kk * a_ks] * vload(B + (size_t)kk * ldb + j0);
      vstore(C + (size_t)i0 * ldc + j0, acc * alpha);
    }
  }
  if (j0 < n) {  // the last n mod L columns
    for (int i = 0; i < m; ++i) {
      T acc[L] = {};
      for (int kk = 0; kk < k; ++kk) {
        const T a = A[(size_t)i * a_rs + (size_t)kk * a_ks];
        const T* b = B + (size_t)kk * ldb;
        for (int j = j0; j < n; ++j) acc[j - j0] += a * b[j];
      }
      for (int j = j0; j < n; ++j) C[(size_t)i * ldc + j] = acc[j - j0] * alpha;
    }
  }
}

// Scratch per (sequence, head) task: Kᵀ and Vᵀ (dh, Tp) with Tp = T rounded up to the vector
// width (zero columns past T), then two (T, Tp) score matrices.
template <typename T> int padded_tokens(int T_) { return (T_ + kLanes<T> - 1) / kLanes<T> * kLanes<T>; }

template <typename T>
__attribute__((always_inline)) inline void load_transposed(T* dst, const T* src, int T_, int Tp, int row, int dh) {
  // token-major: each token's dh values are read contiguously (the strided writes land in L1)
  for (int j = 0; j < T_; ++j) {
    const T* in = src + (size_t)j * row;
    for (int d = 0; d < dh; ++d) dst[(size_t)d * Tp + j] = in[d];
  }
  for (int d = 0; d < dh; ++d)
    for (int j = T_; j < Tp; ++j) dst[(size_t)d * Tp + j] = T(0);
}

template <typename T>
EMAE_CPU_CLONES void attention_forward(T* out, T* lse, const T* qkv, int S, int T_, int H, int dh) {
  const int D = H * dh, row = 3 * D, Tp = padded_tokens<T>(T_);
  const T scale = T(1) / std::sqrt(T(dh));
#pragma omp parallel for schedule(static)
  for (int sh = 0; sh < S * H; ++sh) {
    const int s = sh / H, h = sh % H;
    T* kt = scratch<T>((size_t)dh * Tp + (size_t)T_ * Tp);
    T* p = kt + (size_t)dh * Tp;  // (T, Tp) scores, then probabilities
    const T* q = qkv + (size_t)s * T_ * row + h * dh;
    const T* k = q + D;
    const T* v = q + 2 * D;
    load_transposed(kt, k, T_, Tp, row, dh);
    small_gemm<T>(T_, Tp, dh, q, row, 1, kt, Tp, p, Tp, scale);  // p = scale · q kᵀ
    for (int i = 0; i < T_; ++i) {
      T* pi = p + (size_t)i * Tp;
      T mx = -INFINITY;
      for (int j = 0; j < T_; ++j) mx = pi[j] > mx ? pi[j] : mx;
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int j = 0; j < T_; ++j) {
        pi[j] = exp_(pi[j] - mx);
        sum += pi[j];
      }
      const T inv = T(1) / sum;
#pragma omp simd
      for (int j = 0; j < T_; ++j) pi[j] *= inv;
      lse[((size_t)s * H + h) * T_ + i] = mx + std::log(sum);
    }
    small_gemm<T>(T_, dh, T_, p, Tp, 1, v, row, out + (size_t)s * T_ * D + h * dh, D, T(1));  // o = p v
  }
}

template <typename T>
EMAE_CPU_CLONES void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, int S,
                                        int T_, int H, int dh) {
  const int D = H * dh, row = 3 * D, Tp = padded_tokens<T>(T_);
  const T scale = T(1) / std::sqrt(T(dh));
#pragma omp parallel for schedule(static)
  for (int sh = 0; sh < S * H; ++sh) {
    const int s = sh / H, h = sh % H;
    T* kt = scratch<T>((size_t)2 * dh * Tp + (size_t)2 * T_ * Tp);
    T* vt = kt + (size_t)dh * Tp;
    T* p = vt + (size_t)dh * Tp;    // (T, Tp) probabilities
    T* ds = p + (size_t)T_ * Tp;    // (T, Tp) dp, then d scores
    const size_t head = (size_t)s * T_ * row + h * dh;
    const T *q = qkv + head, *k = q + D, *v = q + 2 * D;
    T *dq = dqkv + head, *dk = dq + D, *dv = dq + 2 * D;
    const T* o = out + (size_t)s * T_ * D + h * dh;
    const T* dO = dout + (size_t)s * T_ * D + h * dh;
    const T* l = lse + ((size_t)s * H + h) * T_;
    load_transposed(kt, k, T_, Tp, row, dh);
    load_transposed(vt, v, T_, Tp, row, dh);
    small_gemm<T>(T_, Tp, dh, q, row, 1, kt, Tp, p, Tp, scale);  // scale · q kᵀ
    small_gemm<T>(T_, Tp, dh, dO, D, 1, vt, Tp, ds, Tp, T(1));    // dp = dO vᵀ
    for (int i = 0; i < T_; ++i) {
      // p = exp(scores − lse); ds = p ⊙ (dp − Σ_j p_ij dp_ij) · scale, Σ_j p_ij dp_ij = dO_i · o_i
      const T Di = dot(dO + (size_t)i * D, o + (size_t)i * D, dh), li = l[i];
      T* pi = p + (size_t)i * Tp;
      T* dsi = ds + (size_t)i * Tp;
#pragma omp simd
      for (int j = 0; j < T_; ++j) {
        pi[j] = exp_(pi[j] - li);
        dsi[j] = pi[j] * (dsi[j] - Di) * scale;
      }
    }
    small_gemm<T>(T_, dh, T_, ds, Tp, 1, k, row, dq, row, T(1));   // dq = ds k
    small_gemm<T>(T_, dh, T_, ds, 1, Tp, q, row, dk, row, T(1));   // dk = dsᵀ q
    small_gemm<T>(T_, dh, T_, p, 1, Tp, dO, D, dv, row, T(1));     // dv = pᵀ dO
  }
}

// ---- patches and tokens -----------------------------------------------------------------------

template <typename T>
void gather_visible_patches(T* cols, const T* images, const int32_t* perm, const PartGeometry& g) {
  const int p = g.patch, C = g.channels, HW = g.image, V = g.visible, K = g.parts;
  const int P = p * p * C;
#pragma omp parallel for schedule(static)
  for (int t = 0; t < g.batch * K * V; ++t) {
    const int b = t / (K * V), kv = t % (K * V);
    const int n = perm[(size_t)b * g.num_patches + kv];
    const int gy = n / g.grid, gx = n % g.grid;
    T* dst = cols + (size_t)t * P;
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < p; ++i) {
        const T* src = images + (((size_t)b * C + c) * HW + gy * p + i) * HW + gx * p;
        std::copy(src, src + p, dst + (c * p + i) * p);
      }
  }
}

template <typename T>
void patchify_target(T* target, const T* images, const PartGeometry& g, bool norm_pix) {
  const int p = g.patch, C = g.channels, HW = g.image, N = g.num_patches;
  const int P = p * p * C;
#pragma omp parallel for schedule(static)
  for (int bn = 0; bn < g.batch * N; ++bn) {
    const int b = bn / N, n = bn % N;
    const int gy = n / g.grid, gx = n % g.grid;
    T* dst = target + (size_t)bn * P;
    for (int i = 0; i < p; ++i)
      for (int j = 0; j < p; ++j)
        for (int c = 0; c < C; ++c)
          dst[(i * p + j) * C + c] = images[(((size_t)b * C + c) * HW + gy * p + i) * HW + gx * p + j];
    if (norm_pix) {
      T m = 0;
      for (int q = 0; q < P; ++q) m += dst[q];
      m /= T(P);
      T ss = 0;
      for (int q = 0; q < P; ++q) ss += (dst[q] - m) * (dst[q] - m);
      const T s = normpix_rstd(ss, P);
      for (int q = 0; q < P; ++q) dst[q] = (dst[q] - m) * s;
    }
  }
}

template <typename T>
void encoder_tokens_forward(T* x, const T* emb, const T* cls, const T* pos, const int32_t* perm,
                            const PartGeometry& g, int D) {
  const int K = g.parts, V = g.visible, Tn = 1 + V;
#pragma omp parallel for schedule(static)
  for (int bk = 0; bk < g.batch * K; ++bk) {
    const int b = bk / K, k = bk % K;
    T* xs = x + (size_t)bk * Tn * D;
    for (int d = 0; d < D; ++d) xs[d] = cls[d] + pos[d];
    for (int v = 0; v < V; ++v) {
      const int n = perm[(size_t)b * g.num_patches + k * V + v];
      const T* e = emb + ((size_t)bk * V + v) * D;
      const T* ps = pos + (size_t)(1 + n) * D;
      T* o = xs + (size_t)(1 + v) * D;
      for (int d = 0; d < D; ++d) o[d] = e[d] + ps[d];
    }
  }
}

template <typename T>
void encoder_tokens_backward(T* demb, T* dcls, const T* dx, const int32_t* perm, const PartGeometry& g, int D) {
  const int K = g.parts, V = g.visible, Tn = 1 + V;
#pragma omp parallel for schedule(static)
  for (int bk = 0; bk < g.batch * K; ++bk)
    std::copy(dx + ((size_t)bk * Tn + 1) * D, dx + ((size_t)bk * Tn + Tn) * D, demb + (size_t)bk * V * D);
  for (int bk = 0; bk < g.batch * K; ++bk) axpy(dcls, T(1), dx + (size_t)bk * Tn * D, D);
}

template <typename T>
void decoder_tokens_forward(T* z, const T* y, const T* mask_token, const T* dpos, const int32_t* perm,
                            const PartGeometry& g, int Dd) {
  const int K = g.parts, V = g.visible, N = g.num_patches;
#pragma omp parallel for schedule(static)
  for (int bk = 0; bk < g.batch * K; ++bk) {
    const int b = bk / K, k = bk % K;
    T* zs = z + (size_t)bk * (1 + N) * Dd;
    const T* ys = y + (size_t)bk * (1 + V) * Dd;
    for (int n = 0; n < N; ++n)  // masked everywhere first, then the visible ones overwrite
      for (int d = 0; d < Dd; ++d) zs[(size_t)(1 + n) * Dd + d] = mask_token[d];
    for (int d = 0; d < Dd; ++d) zs[d] = ys[d];
    for (int v = 0; v < V; ++v) {
      const int n = perm[(size_t)b * N + k * V + v];
      std::copy(ys + (size_t)(1 + v) * Dd, ys + (size_t)(2 + v) * Dd, zs + (size_t)(1 + n) * Dd);
    }
    for (size_t i = 0; i < (size_t)(1 + N) * Dd; ++i) zs[i] += dpos[i];
  }
}

template <typename T>
void decoder_tokens_backward(T* dy, T* dmask, const T* dz, const int32_t* perm, const PartGeometry& g, int Dd) {
  const int K = g.parts, V = g.visible, N = g.num_patches;
  const int BK = g.batch * K;
  // visible-in-part flags per (bk, n), then dmask = Σ over masked rows in a fixed order
  T* masked_sum = scratch<T>((size_t)BK * Dd);
#pragma omp parallel for schedule(static)
  for (int bk = 0; bk < BK; ++bk) {
    const int b = bk / K, k = bk % K;
    const T* dzs = dz + (size_t)bk * (1 + N) * Dd;
    T* dys = dy + (size_t)bk * (1 + V) * Dd;
    std::copy(dzs, dzs + Dd, dys);
    T* ms = masked_sum + (size_t)bk * Dd;
    std::fill(ms, ms + Dd, T(0));
    for (int n = 0; n < N; ++n) axpy(ms, T(1), dzs + (size_t)(1 + n) * Dd, Dd);
    for (int v = 0; v < V; ++v) {
      const int n = perm[(size_t)b * N + k * V + v];
      const T* src = dzs + (size_t)(1 + n) * Dd;
      std::copy(src, src + Dd, dys + (size_t)(1 + v) * Dd);
      axpy(ms, T(-1), src, Dd);  // visible rows are not mask tokens
    }
  }
  for (int bk = 0; bk < BK; ++bk) axpy(dmask, T(1), masked_sum + (size_t)bk * Dd, Dd);
}

// ---- losses ------------------------------------------------------------------------------------
// Per (b, n): the parts where n is masked, M = {k < K : n not visible in k}, |M| = K or K−1.
//   recon:       Σ_{k∈M} mean_p (ŷ_k − t)²                  / (B·K·(N−V))
//   consistency: Σ_{i≠j ∈ M} mean_p d(ŷ_i − sg(ŷ_j))          / |S|,  |S| = Σ_{b,n} |M|(|M|−1)
// Gradients flow only into the first member of each ordered pair.

template <typename T>
LossValues loss_forward_backward(T* dpred, const T* pred, const T* target, const int32_t* perm,
                                 const PartGeometry& g, T lambda, bool l1) {
  const int B = g.batch, K = g.parts, V = g.visible, N = g.num_patches;
  const int P = g.patch * g.patch * g.channels;
  int32_t* part_of = scratch<int32_t>((size_t)B * N);  // part in which n is visible, −1 if none
  for (int b = 0; b < B; ++b)
    for (int pos = 0; pos < N; ++pos)
      part_of[(size_t)b * N + perm[(size_t)b * N + pos]] = pos < K * V ? pos / V : -1;
  double pairs = 0;
  for (size_t i = 0; i < (size_t)B * N; ++i) {
    const double m = K - (part_of[i] >= 0 ? 1 : 0);
    pairs += m * (m - 1);
  }
  const double rec_count = (double)B * K * (N - V);
  const T rec_scale = T(2.0 / (rec_count * P));
  const T con_scale = pairs > 0 ? T(lambda / (pairs * P)) : T(0);

  double* sums = scratch<double>((size_t)B * N * 2);  // per (b, n): recon, consistency
  const size_t part_stride = (size_t)(1 + N) * P;     // one part's prediction block
#pragma omp parallel for schedule(static)
  for (int bn = 0; bn < B * N; ++bn) {
    const int b = bn / N, n = bn % N;
    const int vis = part_of[bn];
    const T* t = target + (size_t)bn * P;
    const size_t row0 = (size_t)b * K * part_stride + (size_t)(1 + n) * P;  // part 0's row for n
    double rec = 0, con = 0;
    for (int i = 0; i < K; ++i) {
      T* gi = dpred + row0 + i * part_stride;
      if (i == vis) { std::fill(gi, gi + P, T(0)); continue; }
      const T* yi = pred + row0 + i * part_stride;
      for (int q = 0; q < P; ++q) {
        const T diff = yi[q] - t[q];
        rec += (double)(diff * diff);
        gi[q] = rec_scale * diff;
      }
      for (int j = 0; j < K; ++j) {
        if (j == i || j == vis) continue;
        const T* yj = pred + row0 + j * part_stride;
        for (int q = 0; q < P; ++q) {
          const T diff = yi[q] - yj[q];
          con += (double)consistency_dist(diff, l1);
          gi[q] += con_scale * consistency_dist_grad(diff, l1);
        }
      }
    }
    sums[2 * (size_t)bn] = rec;
    sums[2 * (size_t)bn + 1] = con;
  }
  for (int bk = 0; bk < B * K; ++bk) std::fill_n(dpred + (size_t)bk * part_stride, P, T(0));  // cls rows
  double rec = 0, con = 0;
  for (size_t i = 0; i < (size_t)B * N; ++i) {
    rec += sums[2 * i];
    con += sums[2 * i + 1];
  }
  LossValues out;
  out.recon = rec / (rec_count * P);
  out.consistency = pairs > 0 ? con / (pairs * P) : 0.0;
  out.loss = out.recon + (double)lambda * out.consistency;
  return out;
}

// ---- explicit instantiations -------------------------------------------------------------------
#define EMAE_INSTANTIATE(T)                                                                                    \
  template void column_sum_accumulate<T>(T*, const T*, int, int);                                             \
  template void matmul_forward<T>(T*, const T*, const T*, const T*, const T*, int, int, int, bool);           \
  template void matmul_backward<T>(T*, T*, T*, const T*, const T*, const T*, int, int, int, bool, bool);      \
  template void matmul_gelu_forward<T>(T*, T*, const T*, const T*, const T*, int, int, int, bool);            \
  template void matmul_backward_gelu<T>(T*, T*, T*, const T*, const T*, const T*, const T*, int, int, int, bool, bool); \
  template void layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int, int, T);                  \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, int, int); \
  template void gelu_forward<T>(T*, const T*, size_t);                                                        \
  template void gelu_backward<T>(T*, const T*, const T*, size_t);                                             \
  template void attention_forward<T>(T*, T*, const T*, int, int, int, int);                                   \
  template void attention_backward<T>(T*, const T*, const T*, const T*, const T*, int, int, int, int);        \
  template void gather_visible_patches<T>(T*, const T*, const int32_t*, const PartGeometry&);                 \
  template void patchify_target<T>(T*, const T*, const PartGeometry&, bool);                                  \
  template void encoder_tokens_forward<T>(T*, const T*, const T*, const T*, const int32_t*,                   \
                                          const PartGeometry&, int);                                          \
  template void encoder_tokens_backward<T>(T*, T*, const T*, const int32_t*, const PartGeometry&, int);       \
  template void decoder_tokens_forward<T>(T*, const T*, const T*, const T*, const int32_t*,                   \
                                          const PartGeometry&, int);                                          \
  template void decoder_tokens_backward<T>(T*, T*, const T*, const int32_t*, const PartGeometry&, int);       \
  template LossValues loss_forward_backward<T>(T*, const T*, const T*, const int32_t*, const PartGeometry&, T, \
                                               bool);

EMAE_INSTANTIATE(float)
EMAE_INSTANTIATE(double)
#undef EMAE_INSTANTIATE

}  // namespace emae::cpu
