// Fine-tuning ops (fp32), the CUDA side of native/cpu/classifier_ops.cc and the CPU
// column_sum_accumulate (native/cpu/ops.cc); contracts in native/core/backend.h, "fine-tuning":
//   column_sum_accumulate:   dst (C) += Σ_r src (R, C)                       (pos_embed's gradient) [accumulates]
//   pool_tokens_forward:     pooled (S, D) = mean_{t≥1} x (S, T, D), or x[:, 0]           [assigns]
//   pool_tokens_backward:    dx (S, T, D) = dpooled / (T − 1) on t ≥ 1, 0 on t = 0, or
//                            dpooled on t = 0, 0 elsewhere                                  [assigns all of dx]
//   residual_scaled_forward: out (S, n) = res + keep[s] · branch                  (drop path) [assigns]
//   scale_rows:              out (S, n) = keep[s] · inp                                     [assigns]
//   cross_entropy:           loss = mean_b Σ_c t (lse − z), dlogits (B, C) = (softmax(z) − t) / B
// Invariants:
//   - deterministic: every sum runs in a fixed order (no float atomics), so a run repeats bit for
//     bit. The column sum uses the CPU's row chunks and combination order, the pool the CPU's token
//     order and 1/(T − 1) factor, and the drop-path ops the CPU's roundings (no FMA contraction),
//     so those four agree with the CPU backend bit for bit; the cross-entropy is fp32 per element
//     (the CPU computes in double) with the per-row losses summed in double in a fixed tree;
//   - the elementwise ops (residual_scaled_forward, scale_rows) allow out to alias an input:
//     each element is read and then written by the same thread, so those pointers are not
//     __restrict__; the cross-entropy likewise allows dlogits to alias logits;
//   - numerically stable softmax: the row max is subtracted before exp, lse = max + log Σ exp.
#pragma once
#include <algorithm>
#include <stdexcept>
#include <string>

#include "cuda/common.cuh"
#include "cuda/optim.cuh"  // sum_doubles_kernel: the fixed-tree sum of the per-row losses

namespace emae::cuda {

struct ClassifierTraits {
  static constexpr int kThreads = 256;      // elementwise kernels (threads over the n of a row)
  static constexpr int kColumns = 128;      // columns (or features d) per block in the column kernels
  static constexpr int kRowChunk = 64;      // rows per partial column sum: native/cpu/ops.cc kRowChunk
  static constexpr int kCeThreads = 128;    // one block per logits row
  static constexpr int kCeWarps = kCeThreads / 32;
  static constexpr int kSumThreads = 1024;  // sum_doubles_kernel's shared array
  static constexpr int kMaxGridY = 65535;
  static constexpr int kMaxBlocksPerRow = 4096;  // x blocks striding over one row of n
  static_assert(kThreads % 32 == 0 && kColumns % 32 == 0 && kCeThreads % 32 == 0, "blocks are whole warps");
  static_assert(kCeWarps <= 32, "the cross-warp reduction reads one value per warp");
};

// ---- column sum (deterministic, the CPU's order) --------------------------------------------

// partial (chunks, C): partial[k][c] = Σ_{r in chunk k, ascending} src[r][c]; grid (C / kColumns, chunks)
static __global__ void column_sum_chunks_kernel(float* __restrict__ partial, const float* __restrict__ src, int R,
                                                int C) {
  const int c = blockIdx.x * ClassifierTraits::kColumns + threadIdx.x;
  if (c >= C) return;
  const int r0 = blockIdx.y * ClassifierTraits::kRowChunk;
  const int r1 = min(R, r0 + ClassifierTraits::kRowChunk);
  float acc = 0.f;
  for (int r = r0; r < r1; ++r) acc += src[(size_t)r * C + c];
  partial[(size_t)blockIdx.y * C + c] = acc;
}

// dst[c] = ((dst[c] + partial[0][c]) + partial[1][c]) + …  (the CPU adds each chunk into dst in turn)
static __global__ void column_sum_combine_kernel(float* __restrict__ dst, const float* __restrict__ partial, int chunks,
                                                 int C) {
  const int c = blockIdx.x * ClassifierTraits::kColumns + threadIdx.x;
  if (c >= C) return;
  float acc = dst[c];
  for (int k = 0; k < chunks; ++k) acc += partial[(size_t)k * C + c];
  dst[c] = acc;
}

// ---- token pooling -----------------------------------------------------------------------------

// pooled (S, D) ← x (S, T, D); grid (S, D / kColumns): one thread per (s, d), tokens summed in order
static __global__ void pool_tokens_forward_kernel(float* __restrict__ pooled, const float* __restrict__ x, int T, int D,
                                                  bool mean, float inv_tokens) {
  const int s = blockIdx.x;
  const int d = blockIdx.y * ClassifierTraits::kColumns + threadIdx.x;
  if (d >= D) return;
  const float* xs = x + (size_t)s * T * D + d;  // token t at xs[t·D]
  float v;
  if (mean) {
    float acc = 0.f;
    for (int t = 1; t < T; ++t) acc += xs[(size_t)t * D];
    v = acc * inv_tokens;
  } else {
    v = xs[0];
  }
  pooled[(size_t)s * D + d] = v;
}

// dx (S, T, D) ← dpooled (S, D); grid S·T: one block per token row, threads over d
static __global__ void pool_tokens_backward_kernel(float* __restrict__ dx, const float* __restrict__ dpooled, int T,
                                                   int D, bool mean, float inv_tokens) {
  const int row = blockIdx.x;  // s·T + t
  const int s = row / T, t = row % T;
  const bool has_grad = mean ? t > 0 : t == 0;
  const float* g = dpooled + (size_t)s * D;
  float* out = dx + (size_t)row * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) out[d] = has_grad ? (mean ? g[d] * inv_tokens : g[d]) : 0.f;
}

// ---- drop path: per-row scales -------------------------------------------------------------------

// out (S, n) = res + keep[s] · branch; grid (x blocks striding over n, y striding over s).
// out may alias res or branch. __fadd_rn/__fmul_rn: two roundings as the CPU loop, not one FMA.
static __global__ void residual_scaled_forward_kernel(float* out, const float* res, const float* branch,
                                                      const float* __restrict__ keep, int S, size_t n) {
  for (int s = blockIdx.y; s < S; s += gridDim.y) {
    const float k = keep[s];
    const size_t o = (size_t)s * n;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
      out[o + i] = __fadd_rn(res[o + i], __fmul_rn(k, branch[o + i]));
  }
}

// out (S, n) = keep[s] · inp; same grid; out may alias inp
static __global__ void scale_rows_kernel(float* out, const float* inp, const float* __restrict__ keep, int S,
                                         size_t n) {
  for (int s = blockIdx.y; s < S; s += gridDim.y) {
    const float k = keep[s];
    const size_t o = (size_t)s * n;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
      out[o + i] = k * inp[o + i];
  }
}

// ---- softmax cross-entropy -----------------------------------------------------------------------

// The same value in every thread of the block: per-warp results combined in warp order (deterministic).
// shared: kCeWarps values, used by this one call.
__device__ __forceinline__ float ce_block_max(float v, float* shared) {
  v = warp_max(v);
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = v;
  __syncthreads();
  float m = shared[0];
#pragma unroll
  for (int w = 1; w < ClassifierTraits::kCeWarps; ++w) m = fmaxf(m, shared[w]);
  return m;
}
__device__ __forceinline__ float ce_block_sum(float v, float* shared) {
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = v;
  __syncthreads();
  float total = shared[0];
#pragma unroll
  for (int w = 1; w < ClassifierTraits::kCeWarps; ++w) total += shared[w];
  return total;
}

// One block per row b: logits, targets, dlogits (B, C); row_loss (B) = Σ_c t (lse − z) in double.
// Three passes over the row (max, Σ exp, write), the second and third from L1/L2.
// dlogits may alias logits (each element read, then written, by one thread in the last pass).
static __global__ void __launch_bounds__(ClassifierTraits::kCeThreads)
    cross_entropy_rows_kernel(float* dlogits, double* __restrict__ row_loss, const float* logits,
                              const float* __restrict__ targets, int C, float batch) {
  __shared__ float sh_max[ClassifierTraits::kCeWarps];
  __shared__ float sh_sum[ClassifierTraits::kCeWarps];
  __shared__ double sh_loss[ClassifierTraits::kCeWarps];
  const size_t row = (size_t)blockIdx.x * C;
  const float* z = logits + row;
  const float* t = targets + row;
  float* dz = dlogits + row;

  float m = -INFINITY;
  for (int c = threadIdx.x; c < C; c += blockDim.x) m = fmaxf(m, z[c]);
  m = ce_block_max(m, sh_max);
  float s = 0.f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) s += expf(z[c] - m);
  // log Σ exp(z − m), kept relative to the max: lse = m + log_sum rounded in float32 would lose
  // ~3e-5 absolute at |z| ~ 1e3 and shift every log-probability by it
  const float log_sum = logf(ce_block_sum(s, sh_sum));

  double loss = 0.0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float shifted = z[c] - m, tc = t[c];
    loss += (double)(tc * (log_sum - shifted));
    dz[c] = (expf(shifted - log_sum) - tc) / batch;
  }
  for (int offset = 16; offset > 0; offset >>= 1) loss += __shfl_xor_sync(0xffffffffu, loss, offset);
  if (threadIdx.x % 32 == 0) sh_loss[threadIdx.x / 32] = loss;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = sh_loss[0];
    for (int w = 1; w < ClassifierTraits::kCeWarps; ++w) total += sh_loss[w];
    row_loss[blockIdx.x] = total;
  }
}

// ---- launchers ------------------------------------------------------------------------------------

namespace classifier_detail {

[[noreturn]] inline void bad(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string(op) + ": " + what);
}
inline void non_negative(const char* op, const char* name, long long v) {
  if (v < 0) bad(op, std::string(name) + " must be >= 0, got " + std::to_string(v));
}

// (x blocks over n, y blocks over s) for the per-row scale kernels
inline dim3 row_scale_grid(int S, size_t n) {
  using CT = ClassifierTraits;
  const size_t x = std::min<size_t>((n + CT::kThreads - 1) / CT::kThreads, CT::kMaxBlocksPerRow);
  return dim3((unsigned)x, (unsigned)std::min(S, CT::kMaxGridY));
}

}  // namespace classifier_detail

inline size_t column_sum_chunked_scratch_floats(int R, int C) {
  if (R <= 0 || C <= 0) return 0;
  return (size_t)ceil_div(R, ClassifierTraits::kRowChunk) * C;
}

// dst (C) += Σ_r src (R, C) in the CPU backend's order; scratch: column_sum_chunked_scratch_floats(R, C)
inline void column_sum_accumulate_chunked(float* dst, const float* src, int R, int C, float* scratch,
                                          cudaStream_t stream) {
  using CT = ClassifierTraits;
  constexpr const char* op = "column_sum_accumulate";
  classifier_detail::non_negative(op, "R", R);
  classifier_detail::non_negative(op, "C", C);
  if (R == 0 || C == 0) return;
  const int chunks = ceil_div(R, CT::kRowChunk);
  if (chunks > CT::kMaxGridY) classifier_detail::bad(op, "R = " + std::to_string(R) + " exceeds the grid");
  column_sum_chunks_kernel<<<dim3(ceil_div(C, CT::kColumns), chunks), CT::kColumns, 0, stream>>>(scratch, src, R, C);
  EMAE_CHECK_LAUNCH("column_sum_chunks_kernel");
  column_sum_combine_kernel<<<ceil_div(C, CT::kColumns), CT::kColumns, 0, stream>>>(dst, scratch, chunks, C);
  EMAE_CHECK_LAUNCH("column_sum_combine_kernel");
}

inline void check_pool_shape(const char* op, int S, int T, int D, bool mean) {
  classifier_detail::non_negative(op, "S", S);
  classifier_detail::non_negative(op, "D", D);
  if (T < 1 || (mean && T < 2))
    classifier_detail::bad(op, std::string("T must be >= ") + (mean ? "2 (a mean over tokens 1..T−1)" : "1") +
                                   ", got " + std::to_string(T));
  if ((long long)S * T > 0x7fffffffLL)
    classifier_detail::bad(op, "S·T = " + std::to_string((long long)S * T) + " exceeds the grid (2^31 − 1)");
}

// pooled (S, D) from x (S, T, D): mean over tokens 1..T−1 when mean, else token 0
inline void pool_tokens_forward(float* pooled, const float* x, int S, int T, int D, bool mean, cudaStream_t stream) {
  using CT = ClassifierTraits;
  check_pool_shape("pool_tokens_forward", S, T, D, mean);
  if (S == 0 || D == 0) return;
  const float inv_tokens = mean ? 1.f / (float)(T - 1) : 1.f;  // as the CPU: T(1) / T(T − 1)
  pool_tokens_forward_kernel<<<dim3(S, ceil_div(D, CT::kColumns)), CT::kColumns, 0, stream>>>(pooled, x, T, D, mean,
                                                                                               inv_tokens);
  EMAE_CHECK_LAUNCH("pool_tokens_forward_kernel");
}

// dx (S, T, D) assigned from dpooled (S, D)
inline void pool_tokens_backward(float* dx, const float* dpooled, int S, int T, int D, bool mean, cudaStream_t stream) {
  using CT = ClassifierTraits;
  check_pool_shape("pool_tokens_backward", S, T, D, mean);
  if (S == 0 || D == 0) return;
  const float inv_tokens = mean ? 1.f / (float)(T - 1) : 1.f;
  pool_tokens_backward_kernel<<<S * T, CT::kColumns, 0, stream>>>(dx, dpooled, T, D, mean, inv_tokens);
  EMAE_CHECK_LAUNCH("pool_tokens_backward_kernel");
}

// out (S, n) = res + keep[s] · branch; out may alias res or branch
inline void residual_scaled_forward(float* out, const float* res, const float* branch, const float* keep, int S,
                                    size_t n, cudaStream_t stream) {
  classifier_detail::non_negative("residual_scaled_forward", "S", S);
  if (S == 0 || n == 0) return;
  residual_scaled_forward_kernel<<<classifier_detail::row_scale_grid(S, n), ClassifierTraits::kThreads, 0, stream>>>(
      out, res, branch, keep, S, n);
  EMAE_CHECK_LAUNCH("residual_scaled_forward_kernel");
}

// out (S, n) = keep[s] · inp; out may alias inp
inline void scale_rows(float* out, const float* inp, const float* keep, int S, size_t n, cudaStream_t stream) {
  classifier_detail::non_negative("scale_rows", "S", S);
  if (S == 0 || n == 0) return;
  scale_rows_kernel<<<classifier_detail::row_scale_grid(S, n), ClassifierTraits::kThreads, 0, stream>>>(out, inp, keep,
                                                                                                         S, n);
  EMAE_CHECK_LAUNCH("scale_rows_kernel");
}

inline size_t cross_entropy_scratch_doubles(int B) { return (size_t)std::max(B, 0) + 1; }

// *out = total / B: the mean, written where the optimizer reads it (EMAE_CUDA_STEP_SYNC=once)
static __global__ void mean_of_total_kernel(double* __restrict__ out, const double* __restrict__ total, int B) {
  *out = *total / B;
}

// Enqueues the per-row kernel and the fixed-tree sum: dlogits (B, C) = (softmax − targets) / B,
// Σ_b loss_b into scratch[B], returned. scratch: cross_entropy_scratch_doubles(B) doubles (the
// per-row losses, then their sum).
inline const double* cross_entropy_sum(float* dlogits, const float* logits, const float* targets, int B, int C,
                                       double* scratch, cudaStream_t stream) {
  constexpr const char* op = "cross_entropy_forward_backward";
  if (B < 1) classifier_detail::bad(op, "B must be >= 1, got " + std::to_string(B));
  if (C < 1) classifier_detail::bad(op, "C must be >= 1, got " + std::to_string(C));
  double* row_loss = scratch;
  double* total = scratch + B;
  cross_entropy_rows_kernel<<<B, ClassifierTraits::kCeThreads, 0, stream>>>(dlogits, row_loss, logits, targets, C,
                                                                            (float)B);
  EMAE_CHECK_LAUNCH("cross_entropy_rows_kernel");
  sum_doubles_kernel<<<1, ClassifierTraits::kSumThreads, 0, stream>>>(total, row_loss, B);
  EMAE_CHECK_LAUNCH("sum_doubles_kernel");
  return total;
}

// Returns mean_b loss_b (one host synchronization: EMAE_CUDA_STEP_SYNC=host, the verified flow).
inline double cross_entropy_forward_backward(float* dlogits, const float* logits, const float* targets, int B, int C,
                                             double* scratch, cudaStream_t stream) {
  const double* total = cross_entropy_sum(dlogits, logits, targets, B, C, scratch, stream);
  double host = 0.0;
  EMAE_CUDA_CHECK(cudaMemcpyAsync(&host, total, sizeof(host), cudaMemcpyDeviceToHost, stream));
  EMAE_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host / B;
}

// mean_b loss_b into *loss (device memory) without waiting (EMAE_CUDA_STEP_SYNC=once).
inline void cross_entropy_forward_backward_into(double* loss, float* dlogits, const float* logits,
                                                const float* targets, int B, int C, double* scratch,
                                                cudaStream_t stream) {
  const double* total = cross_entropy_sum(dlogits, logits, targets, B, C, scratch, stream);
  mean_of_total_kernel<<<1, 1, 0, stream>>>(loss, total, B);
  EMAE_CHECK_LAUNCH("mean_of_total_kernel");
}

}  // namespace emae::cuda
