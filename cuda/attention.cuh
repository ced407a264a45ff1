// Multi-head self-attention forward and backward, flash-style, fp32 on CUDA cores (v1). The T×T
// scores never reach global memory: the forward runs an online softmax over chunks of keys and
// saves the log-sum-exp; the backward recomputes the probabilities from it.
// Storage (Elem): qkv, out, dout and dqkv are all fp32 (float, the path verified on an H100) or all
// bf16 (__nv_bfloat16, issue 11): bf16 elements are widened on load (into the fp32 shared tiles
// and registers), all math is fp32, and outputs are rounded to nearest even once, on store. lse
// and the scratch D stay fp32.
//
// Shapes (D = H·dh, scale = 1/√dh; the CPU reference is native/cpu/ops.cc attention_*):
//   qkv  (S, T, 3, H, dh)  token row of 3D floats: q at h·dh, k at D + h·dh, v at 2D + h·dh
//   out  (S, T, H, dh)     assigned: softmax(q·kᵀ·scale)·v per (sequence, head)
//   lse  (S, H, T)         assigned: m + log Σ_j exp(s_ij − m), s_ij = q_i·k_j·scale, m = max_j s_ij
//   dout (S, T, H, dh)
//   dqkv (S, T, 3, H, dh)  assigned, every element: dq from the query-side pass, dk and dv from the
//                          key-side pass; each element is written by exactly one thread, no atomics,
//                          so the result is deterministic
//   scratch (S, H, T)      D_i = Σ_d dout_i·out_i
// Backward: p_ij = exp(s_ij − lse_i); ds_ij = p_ij (dout_i·v_j − D_i);
//   dq_i = scale Σ_j ds_ij k_j;  dk_j = scale Σ_i ds_ij q_i;  dv_j = Σ_i p_ij dout_i.
//
// Work split: one block per (sequence·head = grid.x, slab of 32 rows = grid.y); 4 warps × 8 rows.
// The "other side" (keys for the forward and the query pass, queries for the key pass) is staged
// in shared memory 32 rows at a time, so shared memory is bounded by dh alone, for any T.
//   - dot products over dh: lane = one staged row, the warp's 8 own rows read as float4 broadcasts
//     (1 + 8 loads feed 32 FMAs);
//   - weighted sums over the staged rows: lanes over dh (d = lane + 32r), the 32 weights of each
//     own row go through a per-warp shared tile and are read 4 at a time as float4 broadcasts.
// Shared tiles are (32, ld) with ld = roundup(dh, 8) + 4 ≡ 4 (mod 8): float4 rows stay 16-byte
// aligned, and the 8 lanes of a float4 phase reading 8 different rows hit 8 disjoint bank quads.
// Columns [dh, roundup(dh, 4)) and rows past T are staged as zeros, so the float4 loops need no
// tail handling; rows past T are computed on zeros (finite) and never written.
#pragma once
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda/common.cuh"

namespace emae::cuda {

struct AttentionTraits {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kRowsPerWarp = 8;               // own rows (queries, or keys in the key pass)
  static constexpr int kRows = kWarps * kRowsPerWarp;  // rows of a block's slab
  static constexpr int kChunk = 32;                    // staged rows per step: one per lane
  static constexpr int kMaxHeadDim = 128;
  static constexpr int kMaxDimsPerLane = kMaxHeadDim / 32;  // d = lane + 32r, r < kDims (a template
                                                            // argument: ceil(dh / 32))
  __host__ __device__ static constexpr int round4(int n) { return (n + 3) / 4 * 4; }
  // leading dimension of a (32, dh) shared tile
  __host__ __device__ static constexpr int ld(int dh) { return (dh + 7) / 8 * 8 + 4; }
  // shared-memory floats: one (32, ld) tile, the per-warp (R, 32) weight tiles, each kernel's total
  __host__ __device__ static constexpr int tile(int dh) { return kChunk * ld(dh); }
  __host__ __device__ static constexpr int weights() { return kWarps * kRowsPerWarp * kChunk; }
  static constexpr size_t forward_smem_floats(int dh) { return 3 * (size_t)tile(dh) + weights(); }
  static constexpr size_t backward_q_smem_floats(int dh) { return 4 * (size_t)tile(dh) + weights(); }
  static constexpr size_t backward_kv_smem_floats(int dh) {
    return 4 * (size_t)tile(dh) + 2 * (size_t)weights() + 2 * kChunk;
  }
  // Resident blocks per SM asked of ptxas (__launch_bounds__' second argument). fp32: 0, i.e. none,
  // as verified on an H100 (ptxas's own register choice spills 4–72 bytes in some of them, e.g. the
  // forward at kDims 3, 4); bf16: 1, under which ptxas (CUDA 13) spills in none of them for sm_80,
  // sm_90, sm_90a (126–254 registers: fewer resident warps than fp32's 72–168, unmeasured).
  template <typename Elem>
  static constexpr int kMinBlocks = std::is_same_v<Elem, float> ? 0 : 1;
};

static_assert(AttentionTraits::kChunk == 32, "one staged row per lane");
static_assert(AttentionTraits::kRows == AttentionTraits::kChunk,
              "slab tiles and chunk tiles are staged by the same function");
static_assert(AttentionTraits::kMaxHeadDim % 32 == 0, "head dims split over the 32 lanes");
static_assert(AttentionTraits::kChunk % 4 == 0, "weight tiles are read as float4");
static_assert(AttentionTraits::ld(1) % 8 == 4 && AttentionTraits::ld(32) % 8 == 4 && AttentionTraits::ld(80) % 8 == 4 &&
                  AttentionTraits::ld(AttentionTraits::kMaxHeadDim) % 8 == 4,
              "ld ≡ 4 (mod 8): conflict-free float4 reads of 8 different rows per phase");
static_assert(AttentionTraits::ld(AttentionTraits::kMaxHeadDim) >= AttentionTraits::round4(AttentionTraits::kMaxHeadDim),
              "a zero-padded row fits the tile");
static_assert(AttentionTraits::backward_kv_smem_floats(AttentionTraits::kMaxHeadDim) * sizeof(float) <= 160 * 1024,
              "the largest kernel fits the opt-in shared memory of sm_80 (163 KB)");

namespace attention_detail {

using AT = AttentionTraits;

__device__ __forceinline__ float dot4(float4 a, float4 b, float acc) {
  return fmaf(a.w, b.w, fmaf(a.z, b.z, fmaf(a.y, b.y, fmaf(a.x, b.x, acc))));
}

__device__ __forceinline__ float4 ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }

// Element access per storage type: fp32 as is; bf16 widened to fp32 on load, rounded to nearest
// even on store.
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float ldg_elem(const float* p) { return __ldg(p); }
__device__ __forceinline__ float ldg_elem(const __nv_bfloat16* p) { return __bfloat162float(__ldg(p)); }
__device__ __forceinline__ void store_elem(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_elem(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
// elements [4c, 4c + 4) of a row: one float4 (16-byte aligned) or four bf16 as one uint2 (8-byte aligned)
__device__ __forceinline__ float4 ldg_group4(const float* row, int c) {
  return __ldg(reinterpret_cast<const float4*>(row) + c);
}
__device__ __forceinline__ float4 ldg_group4(const __nv_bfloat16* row, int c) {
  const uint2 u = __ldg(reinterpret_cast<const uint2*>(row) + c);
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}

// dst (32, ld) ← mul · rows [r0, r0 + 32) of one head, row r starting at src + r·stride (elements);
// rows ≥ T and columns [dh, round4(dh)) are zeros. vec4: dh % 4 == 0, src aligned to 4 elements
// and stride % 4 == 0 (float4 loads, or uint2 loads of four bf16).
// Called by the whole block; the caller synchronizes.
template <typename Elem>
__device__ __forceinline__ void stage_tile(float* __restrict__ dst, const Elem* __restrict__ src, size_t stride,
                                           int r0, int T, int dh, float mul, bool vec4) {
  const int ld = AT::ld(dh);
  if (vec4) {
    const int n4 = dh / 4;
    for (int idx = threadIdx.x; idx < AT::kChunk * n4; idx += blockDim.x) {
      const int r = idx / n4, c = idx - r * n4;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (r0 + r < T) {
        v = ldg_group4(src + (size_t)(r0 + r) * stride, c);
        v.x *= mul;
        v.y *= mul;
        v.z *= mul;
        v.w *= mul;
      }
      *reinterpret_cast<float4*>(dst + r * ld + 4 * c) = v;
    }
  } else {
    const int w = AT::round4(dh);
    for (int idx = threadIdx.x; idx < AT::kChunk * w; idx += blockDim.x) {
      const int r = idx / w, d = idx - r * w;
      dst[r * ld + d] = r0 + r < T && d < dh ? mul * ldg_elem(src + (size_t)(r0 + r) * stride + d) : 0.f;
    }
  }
}

// out, lse of the 32 queries [q0, q0 + 32) of one (s, h)
template <int kDims, typename Elem>
static __global__ void __launch_bounds__(AT::kThreads, AT::kMinBlocks<Elem>)
    attention_forward_kernel(Elem* __restrict__ out, float* __restrict__ lse, const Elem* __restrict__ qkv, int T,
                             int H, int dh, float scale, bool vec4) {
  extern __shared__ float4 attention_smem[];
  constexpr int R = AT::kRowsPerWarp;
  static_assert(kDims >= 1 && kDims <= AT::kMaxDimsPerLane, "kDims = ceil(dh / 32)");
  const int ld = AT::ld(dh), n4 = AT::round4(dh), D = H * dh;
  float* qs = reinterpret_cast<float*>(attention_smem);  // (32, ld) the slab's queries, × scale
  float* ks = qs + AT::tile(dh);                         // (32, ld) key chunk
  float* vs = ks + AT::tile(dh);                         // (32, ld) value chunk
  float* ps = vs + AT::tile(dh);                         // (warps, R, 32) probabilities of the chunk
  const int s = blockIdx.x / H, h = blockIdx.x % H, q0 = blockIdx.y * AT::kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const size_t stride = 3 * (size_t)D;
  const Elem* base = qkv + (size_t)s * T * stride + (size_t)h * dh;
  const float* q_rows = qs + warp * R * ld;  // (R, ld) this warp's queries
  float* pw = ps + warp * R * AT::kChunk;    // (R, 32) this warp's weights
  stage_tile(qs, base, stride, q0, T, dh, scale, vec4);

  // running max m (warp-uniform), this lane's share of the running sum l, the output o
  float m[R], l[R], o[R][kDims];
#pragma unroll
  for (int w = 0; w < R; ++w) {
    m[w] = -INFINITY;
    l[w] = 0.f;
#pragma unroll
    for (int r = 0; r < kDims; ++r) o[w][r] = 0.f;
  }
  for (int k0 = 0; k0 < T; k0 += AT::kChunk) {
    __syncthreads();  // the previous chunk (and this warp's weights) are no longer read; qs staged
    stage_tile(ks, base + D, stride, k0, T, dh, 1.f, vec4);
    stage_tile(vs, base + 2 * D, stride, k0, T, dh, 1.f, vec4);
    __syncthreads();
    // scores of key k0 + lane against the warp's R queries
    float sc[R];
#pragma unroll
    for (int w = 0; w < R; ++w) sc[w] = 0.f;
    for (int d = 0; d < n4; d += 4) {
      const float4 k = ld4(ks + lane * ld + d);
#pragma unroll
      for (int w = 0; w < R; ++w) sc[w] = dot4(ld4(q_rows + w * ld + d), k, sc[w]);
    }
    const bool key_valid = k0 + lane < T;
#pragma unroll
    for (int w = 0; w < R; ++w) {
      const float s_w = key_valid ? sc[w] : -INFINITY;
      const float m_new = fmaxf(m[w], warp_max(s_w));  // finite: key k0 (lane 0) is valid
      const float corr = expf(m[w] - m_new);           // 0 on the first chunk (m = −inf)
      const float p = key_valid ? expf(s_w - m_new) : 0.f;
      l[w] = l[w] * corr + p;
#pragma unroll
      for (int r = 0; r < kDims; ++r) o[w][r] *= corr;
      m[w] = m_new;
      pw[w * AT::kChunk + lane] = p;
    }
    __syncwarp();
    // o += p · V over the chunk's keys (keys past T: p = 0 and v = 0)
    const int keys4 = min(AT::kChunk, AT::round4(T - k0));
    for (int j = 0; j < keys4; j += 4) {
      float4 p4[R];
#pragma unroll
      for (int w = 0; w < R; ++w) p4[w] = ld4(pw + w * AT::kChunk + j);
#pragma unroll
      for (int r = 0; r < kDims; ++r) {
        const int d = lane + 32 * r;
        if (d < dh) {
          const float v0 = vs[j * ld + d], v1 = vs[(j + 1) * ld + d], v2 = vs[(j + 2) * ld + d],
                      v3 = vs[(j + 3) * ld + d];
#pragma unroll
          for (int w = 0; w < R; ++w)
            o[w][r] = fmaf(p4[w].w, v3, fmaf(p4[w].z, v2, fmaf(p4[w].y, v1, fmaf(p4[w].x, v0, o[w][r]))));
        }
      }
    }
  }
#pragma unroll
  for (int w = 0; w < R; ++w) {
    const float l_row = warp_sum(l[w]);  // ≥ 1: the maximum's own term is exp(0)
    const int i = q0 + warp * R + w;
    if (i >= T) continue;
    const float inv = 1.f / l_row;
    Elem* dst = out + ((size_t)s * T + i) * D + (size_t)h * dh;
#pragma unroll
    for (int r = 0; r < kDims; ++r) {
      const int d = lane + 32 * r;
      if (d < dh) {
        const float v = o[w][r] * inv;
        store_elem(&dst[d], v);
      }
    }
    if (lane == 0) lse[((size_t)s * H + h) * T + i] = m[w] + logf(l_row);
  }
}

// delta (S, H, T) = Σ_d dout · out of each row; one warp per row
template <typename Elem>
static __global__ void __launch_bounds__(AT::kThreads)
    attention_delta_kernel(float* __restrict__ delta, const Elem* __restrict__ dout, const Elem* __restrict__ out,
                           int S, int T, int H, int dh) {
  const long long row = (long long)blockIdx.x * AT::kWarps + threadIdx.x / 32;  // (s, h, i)
  const int lane = threadIdx.x % 32;
  if (row >= (long long)S * H * T) return;
  const int i = (int)(row % T);
  const long long sh = row / T;
  const int h = (int)(sh % H), s = (int)(sh / H);
  const size_t at = ((size_t)s * T + i) * H * dh + (size_t)h * dh;
  float acc = 0.f;
  for (int d = lane; d < dh; d += 32) acc = fmaf(to_float(dout[at + d]), to_float(out[at + d]), acc);
  acc = warp_sum(acc);
  if (lane == 0) delta[row] = acc;
}

// query side: dq_i = scale Σ_j ds_ij k_j for the 32 queries [q0, q0 + 32) of one (s, h)
template <int kDims, typename Elem>
static __global__ void __launch_bounds__(AT::kThreads, AT::kMinBlocks<Elem>)
    attention_backward_q_kernel(Elem* __restrict__ dqkv, const Elem* __restrict__ dout,
                                const Elem* __restrict__ qkv, const float* __restrict__ lse,
                                const float* __restrict__ delta, int T, int H, int dh, float scale, bool vec4) {
  extern __shared__ float4 attention_smem[];
  constexpr int R = AT::kRowsPerWarp;
  static_assert(kDims >= 1 && kDims <= AT::kMaxDimsPerLane, "kDims = ceil(dh / 32)");
  const int ld = AT::ld(dh), n4 = AT::round4(dh), D = H * dh;
  float* qs = reinterpret_cast<float*>(attention_smem);  // (32, ld) the slab's queries, × scale
  float* dos = qs + AT::tile(dh);                        // (32, ld) their dout rows
  float* ks = dos + AT::tile(dh);                        // (32, ld) key chunk
  float* vs = ks + AT::tile(dh);                         // (32, ld) value chunk
  float* dss = vs + AT::tile(dh);                        // (warps, R, 32) ds of the chunk
  const int s = blockIdx.x / H, h = blockIdx.x % H, q0 = blockIdx.y * AT::kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const size_t stride = 3 * (size_t)D;
  const Elem* base = qkv + (size_t)s * T * stride + (size_t)h * dh;
  const float* q_rows = qs + warp * R * ld;
  const float* do_rows = dos + warp * R * ld;
  float* dsw = dss + warp * R * AT::kChunk;
  stage_tile(qs, base, stride, q0, T, dh, scale, vec4);
  stage_tile(dos, dout + (size_t)s * T * D + (size_t)h * dh, D, q0, T, dh, 1.f, vec4);

  float dq[R][kDims], row_lse[R], row_delta[R];
#pragma unroll
  for (int w = 0; w < R; ++w) {
    const int i = q0 + warp * R + w;
    row_lse[w] = i < T ? lse[((size_t)s * H + h) * T + i] : 0.f;
    row_delta[w] = i < T ? delta[((size_t)s * H + h) * T + i] : 0.f;
#pragma unroll
    for (int r = 0; r < kDims; ++r) dq[w][r] = 0.f;
  }
  for (int k0 = 0; k0 < T; k0 += AT::kChunk) {
    __syncthreads();
    stage_tile(ks, base + D, stride, k0, T, dh, 1.f, vec4);
    stage_tile(vs, base + 2 * D, stride, k0, T, dh, 1.f, vec4);
    __syncthreads();
    // key k0 + lane: score and dp = dout_i·v_j against the warp's R queries
    float sc[R], dp[R];
#pragma unroll
    for (int w = 0; w < R; ++w) sc[w] = dp[w] = 0.f;
    for (int d = 0; d < n4; d += 4) {
      const float4 k = ld4(ks + lane * ld + d), v = ld4(vs + lane * ld + d);
#pragma unroll
      for (int w = 0; w < R; ++w) {
        sc[w] = dot4(ld4(q_rows + w * ld + d), k, sc[w]);
        dp[w] = dot4(ld4(do_rows + w * ld + d), v, dp[w]);
      }
    }
    const bool key_valid = k0 + lane < T;
#pragma unroll
    for (int w = 0; w < R; ++w)
      dsw[w * AT::kChunk + lane] = key_valid ? expf(sc[w] - row_lse[w]) * (dp[w] - row_delta[w]) : 0.f;
    __syncwarp();
    const int keys4 = min(AT::kChunk, AT::round4(T - k0));
    for (int j = 0; j < keys4; j += 4) {
      float4 ds4[R];
#pragma unroll
      for (int w = 0; w < R; ++w) ds4[w] = ld4(dsw + w * AT::kChunk + j);
#pragma unroll
      for (int r = 0; r < kDims; ++r) {
        const int d = lane + 32 * r;
        if (d < dh) {
          const float k0_ = ks[j * ld + d], k1 = ks[(j + 1) * ld + d], k2 = ks[(j + 2) * ld + d],
                      k3 = ks[(j + 3) * ld + d];
#pragma unroll
          for (int w = 0; w < R; ++w)
            dq[w][r] = fmaf(ds4[w].w, k3, fmaf(ds4[w].z, k2, fmaf(ds4[w].y, k1, fmaf(ds4[w].x, k0_, dq[w][r]))));
        }
      }
    }
  }
#pragma unroll
  for (int w = 0; w < R; ++w) {
    const int i = q0 + warp * R + w;
    if (i >= T) continue;
    Elem* dst = dqkv + ((size_t)s * T + i) * stride + (size_t)h * dh;
#pragma unroll
    for (int r = 0; r < kDims; ++r) {
      const int d = lane + 32 * r;
      if (d < dh) {
        const float v = scale * dq[w][r];
        store_elem(&dst[d], v);
      }
    }
  }
}

// key side: dk_j = scale Σ_i ds_ij q_i, dv_j = Σ_i p_ij dout_i for the 32 keys [j0, j0 + 32) of one
// (s, h); queries staged 32 at a time
template <int kDims, typename Elem>
static __global__ void __launch_bounds__(AT::kThreads, AT::kMinBlocks<Elem>)
    attention_backward_kv_kernel(Elem* __restrict__ dqkv, const Elem* __restrict__ dout,
                                 const Elem* __restrict__ qkv, const float* __restrict__ lse,
                                 const float* __restrict__ delta, int T, int H, int dh, float scale, bool vec4) {
  extern __shared__ float4 attention_smem[];
  constexpr int R = AT::kRowsPerWarp;
  static_assert(kDims >= 1 && kDims <= AT::kMaxDimsPerLane, "kDims = ceil(dh / 32)");
  const int ld = AT::ld(dh), n4 = AT::round4(dh), D = H * dh;
  float* ks = reinterpret_cast<float*>(attention_smem);  // (32, ld) the slab's keys
  float* vs = ks + AT::tile(dh);                         // (32, ld) the slab's values
  float* qs = vs + AT::tile(dh);                         // (32, ld) query chunk, × scale
  float* dos = qs + AT::tile(dh);                        // (32, ld) dout of the query chunk
  float* ps = dos + AT::tile(dh);                        // (warps, R, 32) p of the chunk
  float* dss = ps + AT::weights();                       // (warps, R, 32) ds of the chunk
  float* lse_c = dss + AT::weights();                    // (32) lse of the query chunk
  float* delta_c = lse_c + AT::kChunk;                   // (32) delta of the query chunk
  const int s = blockIdx.x / H, h = blockIdx.x % H, j0 = blockIdx.y * AT::kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const size_t stride = 3 * (size_t)D;
  const Elem* base = qkv + (size_t)s * T * stride + (size_t)h * dh;
  const Elem* dout_base = dout + (size_t)s * T * D + (size_t)h * dh;
  const float* stats = lse + ((size_t)s * H + h) * T;
  const float* deltas = delta + ((size_t)s * H + h) * T;
  const float* k_rows = ks + warp * R * ld;
  const float* v_rows = vs + warp * R * ld;
  float* pw = ps + warp * R * AT::kChunk;
  float* dsw = dss + warp * R * AT::kChunk;
  stage_tile(ks, base + D, stride, j0, T, dh, 1.f, vec4);
  stage_tile(vs, base + 2 * D, stride, j0, T, dh, 1.f, vec4);

  float dk[R][kDims], dv[R][kDims];
#pragma unroll
  for (int w = 0; w < R; ++w)
#pragma unroll
    for (int r = 0; r < kDims; ++r) dk[w][r] = dv[w][r] = 0.f;

  for (int i0 = 0; i0 < T; i0 += AT::kChunk) {
    __syncthreads();
    stage_tile(qs, base, stride, i0, T, dh, scale, vec4);
    stage_tile(dos, dout_base, D, i0, T, dh, 1.f, vec4);
    if (threadIdx.x < AT::kChunk) {
      const int i = i0 + threadIdx.x;
      lse_c[threadIdx.x] = i < T ? stats[i] : 0.f;
      delta_c[threadIdx.x] = i < T ? deltas[i] : 0.f;
    }
    __syncthreads();
    // query i0 + lane: score and dp against the warp's R keys
    float sc[R], dp[R];
#pragma unroll
    for (int w = 0; w < R; ++w) sc[w] = dp[w] = 0.f;
    for (int d = 0; d < n4; d += 4) {
      const float4 q = ld4(qs + lane * ld + d), g = ld4(dos + lane * ld + d);
#pragma unroll
      for (int w = 0; w < R; ++w) {
        sc[w] = dot4(q, ld4(k_rows + w * ld + d), sc[w]);
        dp[w] = dot4(g, ld4(v_rows + w * ld + d), dp[w]);
      }
    }
    const bool query_valid = i0 + lane < T;
    const float l_i = lse_c[lane], delta_i = delta_c[lane];
#pragma unroll
    for (int w = 0; w < R; ++w) {
      const float p = query_valid ? expf(sc[w] - l_i) : 0.f;
      pw[w * AT::kChunk + lane] = p;
      dsw[w * AT::kChunk + lane] = p * (dp[w] - delta_i);
    }
    __syncwarp();
    // dv += p · dout, dk += ds · (scale q) over the chunk's queries (past T: p = ds = 0, rows zero)
    const int queries4 = min(AT::kChunk, AT::round4(T - i0));
    for (int i = 0; i < queries4; i += 4) {
      float4 p4[R], ds4[R];
#pragma unroll
      for (int w = 0; w < R; ++w) {
        p4[w] = ld4(pw + w * AT::kChunk + i);
        ds4[w] = ld4(dsw + w * AT::kChunk + i);
      }
#pragma unroll
      for (int r = 0; r < kDims; ++r) {
        const int d = lane + 32 * r;
        if (d < dh) {
          const float g0 = dos[i * ld + d], g1 = dos[(i + 1) * ld + d], g2 = dos[(i + 2) * ld + d],
                      g3 = dos[(i + 3) * ld + d];
          const float x0 = qs[i * ld + d], x1 = qs[(i + 1) * ld + d], x2 = qs[(i + 2) * ld + d],
                      x3 = qs[(i + 3) * ld + d];
#pragma unroll
          for (int w = 0; w < R; ++w) {
            dv[w][r] = fmaf(p4[w].w, g3, fmaf(p4[w].z, g2, fmaf(p4[w].y, g1, fmaf(p4[w].x, g0, dv[w][r]))));
            dk[w][r] = fmaf(ds4[w].w, x3, fmaf(ds4[w].z, x2, fmaf(ds4[w].y, x1, fmaf(ds4[w].x, x0, dk[w][r]))));
          }
        }
      }
    }
  }
#pragma unroll
  for (int w = 0; w < R; ++w) {
    const int j = j0 + warp * R + w;
    if (j >= T) continue;
    Elem* row = dqkv + ((size_t)s * T + j) * stride + (size_t)h * dh;
#pragma unroll
    for (int r = 0; r < kDims; ++r) {
      const int d = lane + 32 * r;
      if (d < dh) {
        store_elem(&row[D + d], dk[w][r]);  // q was staged × scale: dk = scale Σ ds q
        store_elem(&row[2 * D + d], dv[w][r]);
      }
    }
  }
}

inline void check_pointer(const void* p, const char* op, const char* name) {
  if (p == nullptr) throw std::invalid_argument(std::string(op) + ": " + name + " is null");
}

inline void check_shape(const char* op, int S, int T, int H, int dh) {
  const auto positive = [op](int v, const char* name) {
    if (v < 1) throw std::invalid_argument(std::string(op) + ": " + name + " must be >= 1, got " + std::to_string(v));
  };
  positive(S, "S");
  positive(T, "T");
  positive(H, "H");
  positive(dh, "dh");
  if (dh > AT::kMaxHeadDim)
    throw std::invalid_argument(std::string(op) + ": dh must be <= " + std::to_string(AT::kMaxHeadDim) + ", got " +
                                std::to_string(dh));
  if ((long long)S * H > 0x7fffffffLL)
    throw std::invalid_argument(std::string(op) + ": S·H = " + std::to_string((long long)S * H) +
                                " exceeds the grid (2^31 − 1)");
  if (ceil_div(T, AT::kRows) > 65535)
    throw std::invalid_argument(std::string(op) + ": T = " + std::to_string(T) + " exceeds the grid (" +
                                std::to_string(65535 * AT::kRows) + ")");
  if ((long long)S * H * T > 0x7fffffffLL * AT::kWarps)
    throw std::invalid_argument(std::string(op) + ": S·H·T = " + std::to_string((long long)S * H * T) +
                                " exceeds the grid of the row kernel");
  if ((long long)H * dh * 3 > 0x7fffffffLL)
    throw std::invalid_argument(std::string(op) + ": H·dh = " + std::to_string((long long)H * dh) + " too large");
}

inline bool aligned16(const void* p) { return ((uintptr_t)p & 15) == 0; }
// p can be read 4 elements at a time (float4, or uint2 for bf16)
template <typename Elem>
inline bool aligned_group4(const Elem* p) { return ((uintptr_t)p & (4 * sizeof(Elem) - 1)) == 0; }

// lets `kernel` launch with `bytes` of dynamic shared memory (an opt-in above the default 48 KB)
template <typename Kernel>
inline void opt_in_dynamic_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    EMAE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// bytes of dynamic shared memory for `floats`, opted in
template <typename Kernel>
inline size_t smem_bytes(Kernel kernel, size_t floats) {
  const size_t bytes = floats * sizeof(float);
  opt_in_dynamic_smem(kernel, bytes);
  return bytes;
}

inline float softmax_scale(int dh) { return (float)(1.0 / std::sqrt((double)dh)); }

// f(std::integral_constant<int, ceil(dh / 32)>{}): the kernels keep kDims accumulators per own row
// (d = lane + 32r), so dh = 32 holds 4× fewer registers than dh = 128.
template <typename F>
inline void dispatch_dims(const char* op, int dh, F&& f) {
  static_assert(AT::kMaxDimsPerLane == 4, "dispatch_dims covers kDims = 1..4");
  switch ((dh + 31) / 32) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    default: throw std::invalid_argument(std::string(op) + ": dh = " + std::to_string(dh) + " out of range");
  }
}

}  // namespace attention_detail

inline size_t attention_backward_scratch_floats(int S, int T, int H) { return (size_t)S * H * T; }

// out (S, T, H, dh), lse (S, H, T) ← qkv (S, T, 3, H, dh); both assigned. Elem: float or __nv_bfloat16.
template <typename Elem>
inline void attention_forward(Elem* out, float* lse, const Elem* qkv, int S, int T, int H, int dh,
                              cudaStream_t stream) {
  using namespace attention_detail;
  constexpr const char* op = "attention_forward";
  check_shape(op, S, T, H, dh);
  check_pointer(out, op, "out");
  check_pointer(lse, op, "lse");
  check_pointer(qkv, op, "qkv");
  const bool vec4 = dh % 4 == 0 && aligned_group4(qkv);
  const dim3 grid(S * H, ceil_div(T, AT::kRows));
  const float scale = softmax_scale(dh);
  dispatch_dims(op, dh, [&](auto dims) {
    constexpr int kDims = decltype(dims)::value;
    const size_t smem = smem_bytes(attention_forward_kernel<kDims, Elem>, AT::forward_smem_floats(dh));
    attention_forward_kernel<kDims, Elem><<<grid, AT::kThreads, smem, stream>>>(out, lse, qkv, T, H, dh, scale, vec4);
    EMAE_CHECK_LAUNCH("attention_forward_kernel");
  });
}

// dqkv (S, T, 3, H, dh) assigned ← dout (S, T, H, dh), the forward's qkv, out and lse;
// scratch: attention_backward_scratch_floats(S, T, H) floats. Elem: float or __nv_bfloat16.
template <typename Elem>
inline void attention_backward(Elem* dqkv, const Elem* dout, const Elem* qkv, const Elem* out, const float* lse,
                               int S, int T, int H, int dh, float* scratch, cudaStream_t stream) {
  using namespace attention_detail;
  constexpr const char* op = "attention_backward";
  check_shape(op, S, T, H, dh);
  check_pointer(dqkv, op, "dqkv");
  check_pointer(dout, op, "dout");
  check_pointer(qkv, op, "qkv");
  check_pointer(out, op, "out");
  check_pointer(lse, op, "lse");
  check_pointer(scratch, op, "scratch");
  const float scale = softmax_scale(dh);
  const bool vec4 = dh % 4 == 0 && aligned_group4(qkv) && aligned_group4(dout);
  const long long rows = (long long)S * H * T;
  attention_delta_kernel<Elem><<<ceil_div(rows, AT::kWarps), AT::kThreads, 0, stream>>>(scratch, dout, out, S, T, H, dh);
  EMAE_CHECK_LAUNCH("attention_delta_kernel");
  const dim3 grid(S * H, ceil_div(T, AT::kRows));
  dispatch_dims(op, dh, [&](auto dims) {
    constexpr int kDims = decltype(dims)::value;
    const size_t smem_q = smem_bytes(attention_backward_q_kernel<kDims, Elem>, AT::backward_q_smem_floats(dh));
    attention_backward_q_kernel<kDims, Elem>
        <<<grid, AT::kThreads, smem_q, stream>>>(dqkv, dout, qkv, lse, scratch, T, H, dh, scale, vec4);
    EMAE_CHECK_LAUNCH("attention_backward_q_kernel");
    const size_t smem_kv = smem_bytes(attention_backward_kv_kernel<kDims, Elem>, AT::backward_kv_smem_floats(dh));
    attention_backward_kv_kernel<kDims, Elem>
        <<<grid, AT::kThreads, smem_kv, stream>>>(dqkv, dout, qkv, lse, scratch, T, H, dh, scale, vec4);
    EMAE_CHECK_LAUNCH("attention_backward_kv_kernel");
  });
}

}  // namespace emae::cuda
