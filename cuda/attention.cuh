// Multi-head self-attention forward and backward (fp32 on CUDA cores, v1), flash-style: the
// T×T scores never reach global memory; the forward keeps an online softmax over key chunks and
// saves the log-sum-exp, the backward recomputes the probabilities from it.
//   qkv  (S, T, 3, H, dh)   q at h·dh, k at D + h·dh, v at 2D + h·dh of each 3D-wide row (D = H·dh)
//   out  (S, T, H, dh)      softmax(q·kᵀ/√dh)·v
//   lse  (S, H, T)          max + log Σ exp(score − max) of each scaled score row
//   dqkv (S, T, 3D)         assigned: dq from a query-side pass, dk and dv from a key-side pass
//                           (no atomics: deterministic)
// Invariants: one block per (sequence·head, 32-row slab); 8 warps × 4 rows, each warp working on
// its 4 rows at once (one shared-memory read feeds 4 FMAs); keys (or queries)
// staged in shared memory 32 at a time, rows padded to dh + 1 floats so that lanes reading
// different rows hit different banks; lanes run over keys for scores and over dh for sums.
#pragma once
#include <stdexcept>

#include "cuda/common.cuh"

namespace emae::cuda {

struct AttentionTraits {
  static constexpr int kWarps = 8;
  static constexpr int kRowsPerWarp = 4;
  static constexpr int kRows = kWarps * kRowsPerWarp;  // query (or key) rows per block
  static constexpr int kChunk = 32;                    // keys (or queries) staged per step: one per lane
  static constexpr int kMaxHeadDim = 128;
  static constexpr int kDimsPerLane = kMaxHeadDim / 32;
  static_assert(kChunk == 32, "one staged row per lane");
  static_assert(kRows == kChunk, "row slabs and staged chunks share the smem row layout");
  static_assert(kMaxHeadDim % 32 == 0, "head dims split over lanes");
};

namespace attention_detail {

using AT = AttentionTraits;

// stage rows [r0, r0 + 32) of one head's q, k or v (part 0, 1, 2) into dst (32, dh + 1), scaled;
// rows past T are zero
__device__ __forceinline__ void stage(float* dst, const float* __restrict__ base, int part, int r0, int T, int h,
                                      int dh, int D, float scale) {
  const int ld = dh + 1;
  for (int idx = threadIdx.x; idx < AT::kChunk * dh; idx += blockDim.x) {
    const int r = idx / dh, d = idx % dh;
    dst[r * ld + d] = r0 + r < T ? scale * base[(size_t)(r0 + r) * 3 * D + part * D + h * dh + d] : 0.f;
  }
}

// dst (32, dh + 1) = rows [r0, r0 + 32) of a (S·T, D) tensor's head h (dout or out)
__device__ __forceinline__ void stage_rows(float* dst, const float* __restrict__ base, int r0, int T, int h, int dh,
                                           int D) {
  const int ld = dh + 1;
  for (int idx = threadIdx.x; idx < AT::kChunk * dh; idx += blockDim.x) {
    const int r = idx / dh, d = idx % dh;
    dst[r * ld + d] = r0 + r < T ? base[(size_t)(r0 + r) * D + h * dh + d] : 0.f;
  }
}

__global__ void __launch_bounds__(256) attention_forward_kernel(float* __restrict__ out, float* __restrict__ lse,
                                                                const float* __restrict__ qkv, int T, int H, int dh) {
  extern __shared__ float smem[];
  const int ld = dh + 1, D = H * dh;
  float* qs = smem;                  // (32, ld) this block's queries, pre-scaled
  float* ks = qs + AT::kChunk * ld;  // (32, ld) key chunk
  float* vs = ks + AT::kChunk * ld;  // (32, ld) value chunk
  const int s = blockIdx.x / H, h = blockIdx.x % H, q0 = blockIdx.y * AT::kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* base = qkv + (size_t)s * T * 3 * D;
  stage(qs, base, 0, q0, T, h, dh, D, rsqrtf((float)dh));

  float m[AT::kRowsPerWarp], l[AT::kRowsPerWarp], o[AT::kRowsPerWarp][AT::kDimsPerLane];
#pragma unroll
  for (int w = 0; w < AT::kRowsPerWarp; ++w) {
    m[w] = -INFINITY;
    l[w] = 0.f;
#pragma unroll
    for (int r = 0; r < AT::kDimsPerLane; ++r) o[w][r] = 0.f;
  }
  for (int k0 = 0; k0 < T; k0 += AT::kChunk) {
    __syncthreads();  // the previous chunk is no longer read (and qs is staged)
    stage(ks, base, 1, k0, T, h, dh, D, 1.f);
    stage(vs, base, 2, k0, T, h, dh, D, 1.f);
    __syncthreads();
    const bool key_valid = k0 + lane < T;
    const int keys = min(AT::kChunk, T - k0);
    // the warp's 4 rows together: each k or v element read from shared memory feeds 4 FMAs
    // (rows past T compute on zero queries and are never written)
    const float* q_rows = qs + warp * AT::kRowsPerWarp * ld;
    float sc[AT::kRowsPerWarp] = {};
    for (int d = 0; d < dh; ++d) {
      const float k = ks[lane * ld + d];
#pragma unroll
      for (int w = 0; w < AT::kRowsPerWarp; ++w) sc[w] += q_rows[w * ld + d] * k;
    }
    float p[AT::kRowsPerWarp];
#pragma unroll
    for (int w = 0; w < AT::kRowsPerWarp; ++w) {
      const float s_w = key_valid ? sc[w] : -INFINITY;
      const float m_new = fmaxf(m[w], warp_max(s_w));
      p[w] = key_valid ? __expf(s_w - m_new) : 0.f;
      const float corr = __expf(m[w] - m_new);  // 0 on the first chunk (m = −inf)
      l[w] = l[w] * corr + warp_sum(p[w]);
#pragma unroll
      for (int r = 0; r < AT::kDimsPerLane; ++r) o[w][r] *= corr;
      m[w] = m_new;
    }
    for (int j = 0; j < keys; ++j) {
      float pj[AT::kRowsPerWarp];
#pragma unroll
      for (int w = 0; w < AT::kRowsPerWarp; ++w) pj[w] = __shfl_sync(0xffffffffu, p[w], j);
#pragma unroll
      for (int r = 0; r < AT::kDimsPerLane; ++r) {
        const int d = lane + 32 * r;
        if (d < dh) {
          const float v = vs[j * ld + d];
#pragma unroll
          for (int w = 0; w < AT::kRowsPerWarp; ++w) o[w][r] += pj[w] * v;
        }
      }
    }
  }
#pragma unroll
  for (int w = 0; w < AT::kRowsPerWarp; ++w) {
    const int i = q0 + warp * AT::kRowsPerWarp + w;
    if (i >= T) continue;
    const float inv = 1.f / l[w];
    float* dst = out + ((size_t)s * T + i) * D + h * dh;
#pragma unroll
    for (int r = 0; r < AT::kDimsPerLane; ++r) {
      const int d = lane + 32 * r;
      if (d < dh) dst[d] = o[w][r] * inv;
    }
    if (lane == 0) lse[((size_t)s * H + h) * T + i] = m[w] + logf(l[w]);
  }
}

// delta (S, H, T) = Σ_d dout · out per row
__global__ void attention_delta_kernel(float* __restrict__ delta, const float* __restrict__ dout,
                                       const float* __restrict__ out, int S, int T, int H, int dh) {
  const long long row = (long long)blockIdx.x * AT::kWarps + threadIdx.x / 32;  // (s, h, i)
  const int lane = threadIdx.x % 32;
  if (row >= (long long)S * H * T) return;
  const int i = (int)(row % T);
  const long long sh = row / T;
  const int h = (int)(sh % H), s = (int)(sh / H);
  const size_t at = ((size_t)s * T + i) * H * dh + (size_t)h * dh;
  float acc = 0.f;
  for (int d = lane; d < dh; d += 32) acc += dout[at + d] * out[at + d];
  acc = warp_sum(acc);
  if (lane == 0) delta[row] = acc;
}

// dq_i = scale · Σ_j p_ij (dp_ij − D_i) k_j
__global__ void __launch_bounds__(256) attention_backward_q_kernel(float* __restrict__ dqkv,
                                                                   const float* __restrict__ dout,
                                                                   const float* __restrict__ qkv,
                                                                   const float* __restrict__ lse,
                                                                   const float* __restrict__ delta, int T, int H,
                                                                   int dh) {
  extern __shared__ float smem[];
  const int ld = dh + 1, D = H * dh;
  const float scale = rsqrtf((float)dh);
  float* qs = smem;                    // (32, ld) queries, pre-scaled
  float* dos = qs + AT::kChunk * ld;   // (32, ld) dout rows of these queries
  float* ks = dos + AT::kChunk * ld;   // (32, ld) key chunk
  float* vs = ks + AT::kChunk * ld;    // (32, ld) value chunk
  const int s = blockIdx.x / H, h = blockIdx.x % H, q0 = blockIdx.y * AT::kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* base = qkv + (size_t)s * T * 3 * D;
  stage(qs, base, 0, q0, T, h, dh, D, scale);
  stage_rows(dos, dout + (size_t)s * T * D, q0, T, h, dh, D);

  float dq[AT::kRowsPerWarp][AT::kDimsPerLane];
  float row_lse[AT::kRowsPerWarp], row_delta[AT::kRowsPerWarp];
#pragma unroll
  for (int w = 0; w < AT::kRowsPerWarp; ++w) {
    const int i = q0 + warp * AT::kRowsPerWarp + w;
    row_lse[w] = i < T ? lse[((size_t)s * H + h) * T + i] : 0.f;
    row_delta[w] = i < T ? delta[((size_t)s * H + h) * T + i] : 0.f;
#pragma unroll
    for (int r = 0; r < AT::kDimsPerLane; ++r) dq[w][r] = 0.f;
  }
  for (int k0 = 0; k0 < T; k0 += AT::kChunk) {
    __syncthreads();
    stage(ks, base, 1, k0, T, h, dh, D, 1.f);
    stage(vs, base, 2, k0, T, h, dh, D, 1.f);
    __syncthreads();
    const bool key_valid = k0 + lane < T;
    const int keys = min(AT::kChunk, T - k0);
    const float* q_rows = qs + warp * AT::kRowsPerWarp * ld;
    const float* do_rows = dos + warp * AT::kRowsPerWarp * ld;
    float sc[AT::kRowsPerWarp] = {}, dp[AT::kRowsPerWarp] = {};
    for (int d = 0; d < dh; ++d) {
      const float k = ks[lane * ld + d], v = vs[lane * ld + d];
#pragma unroll
      for (int w = 0; w < AT::kRowsPerWarp; ++w) {
        sc[w] += q_rows[w * ld + d] * k;
        dp[w] += do_rows[w * ld + d] * v;
      }
    }
    float ds[AT::kRowsPerWarp];
#pragma unroll
    for (int w = 0; w < AT::kRowsPerWarp; ++w)
      ds[w] = key_valid ? __expf(sc[w] - row_lse[w]) * (dp[w] - row_delta[w]) : 0.f;
    for (int j = 0; j < keys; ++j) {
      float dsj[AT::kRowsPerWarp];
#pragma unroll
      for (int w = 0; w < AT::kRowsPerWarp; ++w) dsj[w] = __shfl_sync(0xffffffffu, ds[w], j);
#pragma unroll
      for (int r = 0; r < AT::kDimsPerLane; ++r) {
        const int d = lane + 32 * r;
        if (d < dh) {
          const float k = ks[j * ld + d];
#pragma unroll
          for (int w = 0; w < AT::kRowsPerWarp; ++w) dq[w][r] += dsj[w] * k;
        }
      }
    }
  }
#pragma unroll
  for (int w = 0; w < AT::kRowsPerWarp; ++w) {
    const int i = q0 + warp * AT::kRowsPerWarp + w;
    if (i >= T) continue;
    float* dst = dqkv + ((size_t)s * T + i) * 3 * D + h * dh;
#pragma unroll
    for (int r = 0; r < AT::kDimsPerLane; ++r) {
      const int d = lane + 32 * r;
      if (d < dh) dst[d] = scale * dq[w][r];
    }
  }
}

// dk_j = scale · Σ_i ds_ij q_i; dv_j = Σ_i p_ij dout_i (one block per 32 keys, queries staged)
__global__ void __launch_bounds__(256) attention_backward_kv_kernel(float* __restrict__ dqkv,
                                                                    const float* __restrict__ dout,
                                                                    const float* __restrict__ qkv,
                                                                    const float* __restrict__ lse,
                                                                    const float* __restrict__ delta, int T, int H,
                                                                    int dh) {
  extern __shared__ float smem[];
  const int ld = dh + 1, D = H * dh;
  const float scale = rsqrtf((float)dh);
  float* ks = smem;                    // (32, ld) this block's keys
  float* vs = ks + AT::kChunk * ld;    // (32, ld) this block's values
  float* qs = vs + AT::kChunk * ld;    // (32, ld) query chunk, pre-scaled
  float* dos = qs + AT::kChunk * ld;   // (32, ld) dout of the query chunk
  float* lse_c = dos + AT::kChunk * ld;  // (32)
  float* delta_c = lse_c + AT::kChunk;   // (32)
  const int s = blockIdx.x / H, h = blockIdx.x % H, j0 = blockIdx.y * AT::kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* base = qkv + (size_t)s * T * 3 * D;
  stage(ks, base, 1, j0, T, h, dh, D, 1.f);
  stage(vs, base, 2, j0, T, h, dh, D, 1.f);

  float dk[AT::kRowsPerWarp][AT::kDimsPerLane], dv[AT::kRowsPerWarp][AT::kDimsPerLane];
#pragma unroll
  for (int w = 0; w < AT::kRowsPerWarp; ++w)
#pragma unroll
    for (int r = 0; r < AT::kDimsPerLane; ++r) dk[w][r] = dv[w][r] = 0.f;

  for (int i0 = 0; i0 < T; i0 += AT::kChunk) {
    __syncthreads();
    stage(qs, base, 0, i0, T, h, dh, D, scale);
    stage_rows(dos, dout + (size_t)s * T * D, i0, T, h, dh, D);
    if (threadIdx.x < AT::kChunk) {
      const int i = i0 + threadIdx.x;
      lse_c[threadIdx.x] = i < T ? lse[((size_t)s * H + h) * T + i] : 0.f;
      delta_c[threadIdx.x] = i < T ? delta[((size_t)s * H + h) * T + i] : 0.f;
    }
    __syncthreads();
    const bool query_valid = i0 + lane < T;
    const int queries = min(AT::kChunk, T - i0);
    // lane = query; the warp's 4 keys together (keys past T compute on zeros, never written)
    const float* k_rows = ks + warp * AT::kRowsPerWarp * ld;
    const float* v_rows = vs + warp * AT::kRowsPerWarp * ld;
    float sc[AT::kRowsPerWarp] = {}, dp[AT::kRowsPerWarp] = {};
    for (int d = 0; d < dh; ++d) {
      const float q = qs[lane * ld + d], g = dos[lane * ld + d];
#pragma unroll
      for (int w = 0; w < AT::kRowsPerWarp; ++w) {
        sc[w] += q * k_rows[w * ld + d];
        dp[w] += g * v_rows[w * ld + d];
      }
    }
    float p[AT::kRowsPerWarp], ds[AT::kRowsPerWarp];
#pragma unroll
    for (int w = 0; w < AT::kRowsPerWarp; ++w) {
      p[w] = query_valid ? __expf(sc[w] - lse_c[lane]) : 0.f;
      ds[w] = p[w] * (dp[w] - delta_c[lane]);
    }
    for (int i = 0; i < queries; ++i) {
      float pi[AT::kRowsPerWarp], dsi[AT::kRowsPerWarp];
#pragma unroll
      for (int w = 0; w < AT::kRowsPerWarp; ++w) {
        pi[w] = __shfl_sync(0xffffffffu, p[w], i);
        dsi[w] = __shfl_sync(0xffffffffu, ds[w], i);
      }
#pragma unroll
      for (int r = 0; r < AT::kDimsPerLane; ++r) {
        const int d = lane + 32 * r;
        if (d < dh) {
          const float g = dos[i * ld + d], q = qs[i * ld + d];  // q is pre-scaled: dk = scale · Σ ds q
#pragma unroll
          for (int w = 0; w < AT::kRowsPerWarp; ++w) {
            dv[w][r] += pi[w] * g;
            dk[w][r] += dsi[w] * q;
          }
        }
      }
    }
  }
#pragma unroll
  for (int w = 0; w < AT::kRowsPerWarp; ++w) {
    const int j = j0 + warp * AT::kRowsPerWarp + w;
    if (j >= T) continue;
    float* row = dqkv + ((size_t)s * T + j) * 3 * D + h * dh;
#pragma unroll
    for (int r = 0; r < AT::kDimsPerLane; ++r) {
      const int d = lane + 32 * r;
      if (d < dh) {
        row[D + d] = dk[w][r];
        row[2 * D + d] = dv[w][r];
      }
    }
  }
}

inline void check_args(int S, int T, int H, int dh) {
  if (S < 1 || T < 1 || H < 1) throw std::invalid_argument("attention: S, T and H must be >= 1");
  if (dh < 1 || dh > AttentionTraits::kMaxHeadDim)
    throw std::invalid_argument("attention: head dim " + std::to_string(dh) + " outside 1.." +
                                std::to_string(AttentionTraits::kMaxHeadDim));
  if ((long long)S * H > 0x7fffffffLL) throw std::invalid_argument("attention: S·H too large for the grid");
  if (ceil_div(T, AttentionTraits::kRows) > 65535) throw std::invalid_argument("attention: T too large");
}

// dynamic shared memory of `tiles` (32, dh + 1) tiles plus `extra` floats, opted in above 48 KB
template <typename Kernel>
inline size_t smem_bytes(Kernel kernel, int tiles, int dh, int extra) {
  const size_t bytes = ((size_t)tiles * AttentionTraits::kChunk * (dh + 1) + extra) * sizeof(float);
  if (bytes > 48 * 1024)
    EMAE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  return bytes;
}

}  // namespace attention_detail

inline size_t attention_backward_scratch_floats(int S, int T, int H) { return (size_t)S * H * T; }

inline void attention_forward(float* out, float* lse, const float* qkv, int S, int T, int H, int dh,
                              cudaStream_t stream) {
  using namespace attention_detail;
  check_args(S, T, H, dh);
  const dim3 grid(S * H, ceil_div(T, AT::kRows));
  const size_t smem = smem_bytes(attention_forward_kernel, 3, dh, 0);
  attention_forward_kernel<<<grid, 32 * AT::kWarps, smem, stream>>>(out, lse, qkv, T, H, dh);
  EMAE_CHECK_LAUNCH("attention_forward_kernel");
}

// scratch: attention_backward_scratch_floats(S, T, H) floats
inline void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out, const float* lse,
                               int S, int T, int H, int dh, float* scratch, cudaStream_t stream) {
  using namespace attention_detail;
  check_args(S, T, H, dh);
  const long long rows = (long long)S * H * T;
  attention_delta_kernel<<<ceil_div(rows, AT::kWarps), 32 * AT::kWarps, 0, stream>>>(scratch, dout, out, S, T, H, dh);
  EMAE_CHECK_LAUNCH("attention_delta_kernel");
  const dim3 grid(S * H, ceil_div(T, AT::kRows));
  const size_t smem_q = smem_bytes(attention_backward_q_kernel, 4, dh, 0);
  attention_backward_q_kernel<<<grid, 32 * AT::kWarps, smem_q, stream>>>(dqkv, dout, qkv, lse, scratch, T, H, dh);
  EMAE_CHECK_LAUNCH("attention_backward_q_kernel");
  const size_t smem_kv = smem_bytes(attention_backward_kv_kernel, 4, dh, 2 * AT::kChunk);
  attention_backward_kv_kernel<<<grid, 32 * AT::kWarps, smem_kv, stream>>>(dqkv, dout, qkv, lse, scratch, T, H, dh);
  EMAE_CHECK_LAUNCH("attention_backward_kv_kernel");
}

}  // namespace emae::cuda
