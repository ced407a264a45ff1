// Multi-head self-attention on tensor cores (v1, issue 12): FlashAttention-2's algorithm with bf16
// mma.sync m16n8k16 and fp32 accumulation, for the Backend contract of attention.cuh (the same
// shapes, layouts, saved lse and scratch), so either path can run a step:
//   qkv  (S, T, 3, H, dh)  out (S, T, H, dh) assigned   lse (S, H, T) assigned (natural log)
//   dout (S, T, H, dh)     dqkv (S, T, 3, H, dh) assigned, every element
//   scratch (S, H, T)      D_i = Σ_d dout_i·out_i (written by the query kernel, read by the key kernel)
// EMAE_CUDA_ATTENTION=auto|simt|tc chooses the path (select_attention_path below); auto (or unset)
// is simt, attention.cuh's fp32 kernels, verified on an H100, until a device run verifies tc.
//
// Storage (Elem, the template argument of the parameter block and the launchers): qkv, out, dout
// and dqkv are all fp32 (float) or all bf16 (__nv_bfloat16, issue 11's bf16 activations); lse and
// the scratch D are fp32 either way.
// Invariants:
//   - fp32 storage: each operand is rounded to bf16 once, on its way into shared memory (the
//     "other side": keys/values, or queries/dout in the key kernel) or straight into mma A
//     fragments (the warp's own 16 rows); bf16 storage: the rows are copied as they are (16-byte
//     vectors into shared memory, 32-bit pairs into A fragments) and outputs are rounded to bf16
//     once, on store; products accumulate in fp32 either way;
//   - softmax statistics are fp32: the running max m (raw score units), the sum l, lse = m·scale + ln l;
//     exponentials are exp2 of scores scaled by scale·log2(e); the T×T scores and probabilities
//     live in registers only (the C fragment of one step is the A fragment of the next product);
//   - deterministic: no atomics. dq is summed by the query kernel over keys in order, dk and dv by
//     the key kernel over queries in order; D_i is computed once (query kernel, in fp32 from the
//     stored dout and out) and read by the key kernel; every output element is written by one thread;
//   - any T ≥ 1: own rows past T load as zeros (finite scores) and are never written; other-side
//     rows past T are staged as zero rows (up to the next multiple of 16) and get p = 0 (score −inf
//     in the forward, p forced to 0 in the query kernel, −lse·log2e = −inf staged for them in the
//     key kernel), so no product ever reads unstaged shared memory;
//   - head dims 32, 64, 128 (the template kD); any other head dim runs attention.cuh's kernels;
//   - the kernel bodies are __host__ __device__ templates over an Ops policy (thread and block
//     indices, barrier, shuffle, ldmatrix, mma, shared memory): DeviceOps maps them onto the
//     intrinsics; cuda/dev/attention_tc_emulate.cu runs the same bodies on the CPU against an
//     emulated warp (PTX fragment semantics) to check the index mapping without a GPU.
//
// Work split (the three kernels alike): one block per (sequence·head = grid.x, slab of own rows =
// grid.y), 4 warps. A round gives each warp one 16-row tile of own rows (queries; keys in the key
// kernel); a block runs `rounds` rounds (64 rows each). The other side is staged in shared memory
// as bf16 rows of kLd = dh + 8 elements (odd multiples of 16 bytes: conflict-free ldmatrix), in
// chunks of kMaxStaged rows zero-padded to a multiple of 16. When T ≤ kMaxStaged (MAE: T = 50 and
// 197 at dh 32/64) the whole other side is one chunk, staged once per block, and one block covers
// the whole sequence (rounds = ceil(T/64)); longer sequences use one round per block and restage
// the chunks (FlashAttention's streaming). Within a chunk a warp walks the staged rows in steps of
// kStep rows (online softmax once per step), the last < kStep rows in steps of 16.
//   forward   S = Q·Kᵀ (K rows via ldmatrix), online softmax, O += P·V (V via ldmatrix.trans)
//   query     S = Q·Kᵀ, dP = dO·Vᵀ, P = exp(S − lse), dS = P∘(dP − D), dQ += dS·K; D_i written
//   key       Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, Pᵀ, dSᵀ, dV += Pᵀ·dO, dK += dSᵀ·Q (queries, dout, lse, D staged)
// The backward runs the query kernel, then the key kernel (stream order carries D).
#pragma once
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "core/act.h"
#include "cuda/attention.cuh"
#include "cuda/common.cuh"
#include "cuda/env_switch.h"
#include "cuda/gemm.cuh"

namespace emae::cuda {

template <int kD>
struct AttentionTcTraits {
  static constexpr int kHeadDim = kD;
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kTile = 16;                     // own rows of a warp per round (mma m16)
  static constexpr int kRoundRows = kWarps * kTile;    // own rows of a block per round
  static constexpr int kMaxRounds = 4;                 // rounds of a block (own rows ≤ 256)
  static constexpr int kMaxStaged = kD <= 64 ? 256 : 128;  // other-side rows of one staged chunk
  static constexpr int kLd = kD + 8;                   // bf16 per staged row
  static constexpr int kKSteps = kD / 16;              // k16 steps over dh (Q·Kᵀ, dO·Vᵀ, K·Qᵀ, V·dOᵀ)
  static constexpr int kDTiles = kD / 8;               // n8 tiles over dh (O, dQ, dK, dV)
  // Rows per step: the compiler issues a step's ldmatrix loads ahead of its mma and exp work, so
  // the B fragments in flight grow with the step; larger head dims take smaller steps to fit the
  // register caps below without spills.
  static constexpr int kFwdStep = kD <= 32 ? 64 : 32;  // keys per online-softmax step, forward
  static constexpr int kDqStep = kD <= 32 ? 64 : kD <= 64 ? 32 : 16;   // keys per step, query kernel
  static constexpr int kKvStep = kD <= 32 ? 32 : 16;   // queries per step, key kernel
  static constexpr int kTailStep = 16;                 // the last rows of a chunk
  // The warp's own A fragments (q, dout, k, v: 4 registers per k16 step and operand) live in
  // registers, or, where that costs occupancy or spills, each lane parks them in a private
  // shared-memory slot (one 16-byte load per k16 step; written and read by the same lane, no
  // synchronization). ptxas (CUDA 13, sm_80, no register cap): with own fragments in registers the
  // dh = 64 backward kernels took 231–247 registers, in shared memory 163–168; dh = 128 spilled.
  static constexpr bool kFwdOwnInSmem = kD > 64;   // forward
  static constexpr bool kBwdOwnInSmem = kD >= 64;  // query and key kernels
  static constexpr int kOwnSlotBytes = kKSteps * 32 * 16;  // one operand of one warp
  // the key kernel accumulates dv and dk in two passes for dh = 128 (see KvPart)
  static constexpr bool kSplitKv = kD > 64;
  // Resident blocks per SM asked of ptxas (__launch_bounds__), i.e. a register cap of
  // 65536 / (128·n): 3 → 168 registers (12 warps per SM), 2 → 255. The largest n at which ptxas
  // (CUDA 13) reports no spills for sm_80, sm_90 and sm_90a alike; without a bound ptxas's own
  // choice for sm_90 spills (e.g. 128 registers for the dh = 32 forward).
  static constexpr int kFwdMinBlocks = kD <= 64 ? 3 : 2;
  static constexpr int kDqMinBlocks = kD <= 64 ? 3 : 2;
  static constexpr int kKvMinBlocks = kD <= 32 ? 3 : 2;
  static constexpr float kLog2e = 1.4426950408889634f;

  static_assert(kD % 16 == 0, "dh is whole k16 steps");
  static_assert(kDTiles % 2 == 0, "one ldmatrix.x4 feeds two n8 tiles over dh");
  static_assert(kLd * 2 % 16 == 0, "staged rows are 16-byte aligned (ldmatrix, 8-byte bf16x4 stores)");
  static_assert(kLd * 2 / 16 % 2 == 1, "an odd number of 16-byte units per row: the 8 rows of an ldmatrix "
                                       "phase hit 8 different bank quads");
  static_assert(kFwdStep % 16 == 0 && kDqStep % 16 == 0 && kKvStep % 16 == 0 && kTailStep == 16,
                "steps are whole k16 slices of the staged rows (P·V, dS·K, Pᵀ·dO, dSᵀ·Q)");
  static_assert(kMaxStaged % kFwdStep == 0 && kMaxStaged % kDqStep == 0 && kMaxStaged % kKvStep == 0,
                "full chunks are whole steps");
  static_assert(kMaxStaged <= kMaxRounds * kRoundRows, "a sequence that fits one chunk fits one block's rounds");
  static_assert(kThreads == 128, "the staging loops stride by 128 threads");
};

// Launch geometry for T (shared by the launchers and the CPU emulation).
struct AttentionTcPlan {
  int rounds;         // 64-row rounds per block
  int grid_y;         // blocks per (sequence, head)
  int chunks;         // staged chunks of the other side
  int cap;            // staged rows (chunk capacity, a multiple of 16)
  size_t tiles;       // bytes of the two staged bf16 tiles (cap × kLd each)
  size_t smem_fwd;    // bytes: forward (tiles, own q slots)
  size_t smem_q;      // bytes: query kernel (tiles, own q and dout slots)
  size_t smem_kv;     // bytes: key kernel (tiles, per-row −lse·log2e and D, own k and v slots)
};

template <int kD>
__host__ __device__ constexpr AttentionTcPlan attention_tc_plan(int T) {
  using Tr = AttentionTcTraits<kD>;
  const int rows16 = (T + 15) / 16 * 16;
  const bool resident = T <= Tr::kMaxStaged;
  const int rounds = resident ? (T + Tr::kRoundRows - 1) / Tr::kRoundRows : 1;
  const int cap = resident ? rows16 : Tr::kMaxStaged;
  const size_t tiles = 2 * (size_t)cap * Tr::kLd * sizeof(__nv_bfloat16);  // a multiple of 16: cap % 16 == 0
  const size_t slots = (size_t)Tr::kWarps * Tr::kOwnSlotBytes;  // one operand, all warps
  const size_t own_fwd = Tr::kFwdOwnInSmem ? slots : 0, own_bwd = Tr::kBwdOwnInSmem ? slots : 0;
  return {rounds,
          (T + rounds * Tr::kRoundRows - 1) / (rounds * Tr::kRoundRows),
          (T + Tr::kMaxStaged - 1) / Tr::kMaxStaged,
          cap,
          tiles,
          tiles + own_fwd,
          tiles + 2 * own_bwd,
          tiles + 2 * (size_t)cap * sizeof(float) + 2 * own_bwd};
}

static_assert(attention_tc_plan<32>(AttentionTcTraits<32>::kMaxStaged).smem_kv <= 160 * 1024 &&
                  attention_tc_plan<64>(AttentionTcTraits<64>::kMaxStaged).smem_kv <= 160 * 1024 &&
                  attention_tc_plan<128>(AttentionTcTraits<128>::kMaxStaged).smem_kv <= 160 * 1024,
              "the largest staging fits the opt-in shared memory of sm_80 (163 KB)");

// One parameter block for the three kernels (each reads the fields its comment names). Elem: the
// storage of qkv, dout, out and dqkv, float or __nv_bfloat16.
template <typename Elem>
struct AttentionTcParams {
  const Elem* qkv = nullptr;       // (S, T, 3, H, dh) all kernels
  const Elem* dout = nullptr;      // (S, T, H, dh) backward
  const Elem* out_fwd = nullptr;   // (S, T, H, dh) backward: the forward's out (for D)
  const float* lse_fwd = nullptr;  // (S, H, T) backward: the forward's lse
  Elem* out = nullptr;             // (S, T, H, dh) forward, assigned
  float* lse = nullptr;            // (S, H, T) forward, assigned
  Elem* dqkv = nullptr;            // (S, T, 3, H, dh) backward, assigned (dq: query kernel; dk, dv: key kernel)
  float* delta = nullptr;          // (S, H, T) backward: D, written by the query kernel, read by the key kernel
  int S = 0, T = 0, H = 0;
  int rounds = 1;                  // AttentionTcPlan::rounds
  float scale = 0.f;               // 1/√dh
  bool vec = false;                // every pointer 16-byte aligned: 16-byte staging loads (float4, or 8 bf16),
                                   // paired fragment loads/stores (float2, or two bf16 as 32 bits)
};

namespace attention_tc_detail {

using bf16_t = __nv_bfloat16;

__host__ __device__ constexpr int imin(int a, int b) { return a < b ? a : b; }
__host__ __device__ constexpr int round16(int n) { return (n + 15) / 16 * 16; }

// ---- fragment coordinates (PTX ISA, mma.m16n8k16, 16-bit A/B, fp32 C/D); g = lane/4, t = lane%4
// C/D element r ∈ [0, 4): row g + 8·(r/2), column 2t + r%2
__host__ __device__ constexpr int frag_c_row(int lane, int r) { return lane / 4 + 8 * (r / 2); }
__host__ __device__ constexpr int frag_c_col(int lane, int r) { return 2 * (lane % 4) + r % 2; }
// A register ra ∈ [0, 4) (two bf16, low half first): row g + 8·(ra%2), columns 2t + 8·(ra/2) + {0, 1}
__host__ __device__ constexpr int frag_a_row(int lane, int ra) { return lane / 4 + 8 * (ra % 2); }
__host__ __device__ constexpr int frag_a_col(int lane, int ra) { return 2 * (lane % 4) + 8 * (ra / 2); }
// ldmatrix.x4 row address of `lane` in a 16×16 block of a row-major bf16 tile:
//   B stored [n][k] (non-trans): matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7),
//   (n 8-15, k 8-15) → registers {b0b1, b2b3} of n8 tile 0, then of n8 tile 1
__host__ __device__ constexpr int ldsm_b_row(int lane) { return lane % 8 + lane / 16 * 8; }
__host__ __device__ constexpr int ldsm_b_col(int lane) { return lane / 8 % 2 * 8; }
//   B stored [k][n] (.trans): matrices (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15),
//   (k 8-15, n 8-15) → the same register order
__host__ __device__ constexpr int ldsm_bt_row(int lane) { return lane % 8 + lane / 8 % 2 * 8; }
__host__ __device__ constexpr int ldsm_bt_col(int lane) { return lane / 16 * 8; }
// two fp32 → two bf16 (round to nearest even), lo in the low half
__host__ __device__ inline uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, sizeof(u));
  return u;
}
// A (16 × k16) from the C fragments of two adjacent n8 tiles (columns 0-7 and 8-15)
__host__ __device__ inline void c_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack_bf16(c0[0], c0[1]);  // row g,     columns 2t, 2t+1
  a[1] = pack_bf16(c0[2], c0[3]);  // row g + 8, columns 2t, 2t+1
  a[2] = pack_bf16(c1[0], c1[1]);  // row g,     columns 8 + 2t, 8 + 2t+1
  a[3] = pack_bf16(c1[2], c1[3]);  // row g + 8
}

// The GPU side of the Ops policy.
struct DeviceOps {
  unsigned char* shared;
  __device__ __forceinline__ int thread() const { return threadIdx.x; }
  __device__ __forceinline__ int block_x() const { return blockIdx.x; }
  __device__ __forceinline__ int block_y() const { return blockIdx.y; }
  __device__ __forceinline__ unsigned char* smem() const { return shared; }
  __device__ __forceinline__ void sync() const { __syncthreads(); }
  __device__ __forceinline__ float shfl_xor(float v, int mask) const { return __shfl_xor_sync(0xffffffffu, v, mask); }
  __device__ __forceinline__ void ldsm(uint32_t (&r)[4], const bf16_t* p) const { gemm_detail::ldmatrix_x4(r, p); }
  __device__ __forceinline__ void ldsm_t(uint32_t (&r)[4], const bf16_t* p) const {
    gemm_detail::ldmatrix_x4_trans(r, p);
  }
  __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) const {
    gemm_detail::mma_bf16(d, a, b0, b1);
  }
};

// ---- global ↔ registers ------------------------------------------------------------------------

// two fp32 at p (8-byte aligned when vec)
__host__ __device__ inline float2 load2(const float* p, bool vec) {
  if (vec) return *reinterpret_cast<const float2*>(p);
  return make_float2(p[0], p[1]);
}
__host__ __device__ inline void store2(float* p, float x, float y, bool vec) {
  if (vec) {
    *reinterpret_cast<float2*>(p) = make_float2(x, y);
  } else {
    p[0] = x;
    p[1] = y;
  }
}
// two bf16 at p as one register, element p[0] in the low half (4-byte aligned when vec)
__host__ __device__ inline uint32_t load2_bits(const bf16_t* p, bool vec) {
  if (vec) return *reinterpret_cast<const uint32_t*>(p);
  uint16_t lo, hi;
  memcpy(&lo, p, 2);
  memcpy(&hi, p + 1, 2);
  return (uint32_t)lo | (uint32_t)hi << 16;
}
// x, y rounded to bf16 (nearest even) at p[0], p[1]
__host__ __device__ inline void store2(bf16_t* p, float x, float y, bool vec) {
  const uint32_t u = pack_bf16(x, y);
  if (vec) {
    *reinterpret_cast<uint32_t*>(p) = u;
  } else {
    const uint16_t lo = (uint16_t)(u & 0xffffu), hi = (uint16_t)(u >> 16);
    memcpy(p, &lo, 2);
    memcpy(p + 1, &hi, 2);
  }
}
// the low and high bf16 of a register, widened
__host__ __device__ inline float bf16_lo(uint32_t u) {
  const uint32_t w = u << 16;
  float f;
  memcpy(&f, &w, 4);
  return f;
}
__host__ __device__ inline float bf16_hi(uint32_t u) {
  const uint32_t w = u & 0xffff0000u;
  float f;
  memcpy(&f, &w, 4);
  return f;
}

// The warp's own A operand (16 rows × dh): kD/16 fragments of 4 registers, in registers or in this
// lane's shared-memory slot (AttentionTcTraits::k*OwnInSmem). kUnroll: k16 steps unrolled together
// in a product over dh (all of them for registers: static indices; 2 from shared memory, which
// bounds the ldmatrix results in flight).
template <int kD, bool kInSmem>
struct OwnFrags {
  static constexpr int kUnroll = kD / 16;
  uint32_t a[kD / 16][4];
  __host__ __device__ explicit OwnFrags(unsigned char*, int) {}
  __host__ __device__ void set(int kk, const uint32_t (&v)[4]) {
#pragma unroll
    for (int r = 0; r < 4; ++r) a[kk][r] = v[r];
  }
  __host__ __device__ void get(int kk, uint32_t (&v)[4]) const {
#pragma unroll
    for (int r = 0; r < 4; ++r) v[r] = a[kk][r];
  }
};
template <int kD>
struct OwnFrags<kD, true> {
  static constexpr int kUnroll = 2;
  uint4* slot;  // [kD/16][32] uint4 of this warp; lane l uses [kk][l]
  int lane;
  __host__ __device__ OwnFrags(unsigned char* warp_slot, int lane_) : slot(reinterpret_cast<uint4*>(warp_slot)), lane(lane_) {}
  __host__ __device__ void set(int kk, const uint32_t (&v)[4]) { slot[kk * 32 + lane] = make_uint4(v[0], v[1], v[2], v[3]); }
  __host__ __device__ void get(int kk, uint32_t (&v)[4]) const {
    const uint4 u = slot[kk * 32 + lane];
    v[0] = u.x;
    v[1] = u.y;
    v[2] = u.z;
    v[3] = u.w;
  }
};

// own ← rows [row0, row0 + 16) as A fragments, row r at src + r·stride: zeros past T.
// With dot: also the fp32 partial Σ src·dot over this lane's elements of rows g and g + 8 (dot:
// the same layout at dot + r·dot_stride), for D_i = Σ_d dout·out.
template <int kD, bool kDot, class Own, class Elem>
__host__ __device__ inline void load_own(Own& own, const Elem* src, size_t stride, int row0, int T, int lane, bool vec,
                                         const Elem* dot = nullptr, size_t dot_stride = 0, float* partial = nullptr) {
  if (kDot) partial[0] = partial[1] = 0.f;
#pragma unroll
  for (int kk = 0; kk < kD / 16; ++kk) {
    uint32_t a[4];
#pragma unroll
    for (int ra = 0; ra < 4; ++ra) {
      const int row = row0 + frag_a_row(lane, ra), col = 16 * kk + frag_a_col(lane, ra);
      if constexpr (std::is_same_v<Elem, float>) {  // rounded to bf16 here
        float2 v = make_float2(0.f, 0.f);
        if (row < T) {
          v = load2(src + (size_t)row * stride + col, vec);
          if (kDot) {
            const float2 w = load2(dot + (size_t)row * dot_stride + col, vec);
            partial[ra % 2] = fmaf(v.y, w.y, fmaf(v.x, w.x, partial[ra % 2]));
          }
        }
        a[ra] = pack_bf16(v.x, v.y);
      } else {  // already bf16: the pair is the register
        uint32_t v = 0;
        if (row < T) {
          v = load2_bits(src + (size_t)row * stride + col, vec);
          if (kDot) {
            const uint32_t w = load2_bits(dot + (size_t)row * dot_stride + col, vec);
            partial[ra % 2] = fmaf(bf16_hi(v), bf16_hi(w), fmaf(bf16_lo(v), bf16_lo(w), partial[ra % 2]));
          }
        }
        a[ra] = v;
      }
    }
    own.set(kk, a);
  }
}

// Rows [0, rows16) of a staged chunk (bf16, kLd per row) ← rows [r0, r0 + n) at src (row r at
// src + r·stride fp32), rows [n, rows16) zero. The whole block calls it; the caller synchronizes.
#pragma nv_exec_check_disable
template <int kD, class Ops>
__host__ __device__ inline void stage_rows(bf16_t* dst, const float* src, size_t stride, int r0, int n, int rows16,
                                           bool vec, Ops& ops) {
  using Tr = AttentionTcTraits<kD>;
  constexpr int kGroups = kD / 4;  // 4 fp32 → 4 bf16 (8 bytes) per thread and iteration
  for (int idx = ops.thread(); idx < rows16 * kGroups; idx += Tr::kThreads) {
    const int r = idx / kGroups, c = idx % kGroups * 4;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (r < n) {
      const float* p = src + (size_t)(r0 + r) * stride + c;
      if (vec) v = *reinterpret_cast<const float4*>(p);
      else v = make_float4(p[0], p[1], p[2], p[3]);
    }
    uint2 packed;
    packed.x = pack_bf16(v.x, v.y);
    packed.y = pack_bf16(v.z, v.w);
    *reinterpret_cast<uint2*>(dst + r * Tr::kLd + c) = packed;
  }
}
// The same from bf16 rows: copied as they are, 16 bytes (8 elements) per thread and iteration —
// one uint4 load when vec (row starts 16-byte aligned: base aligned, stride·2 and column·2
// multiples of 16), else eight 2-byte loads.
#pragma nv_exec_check_disable
template <int kD, class Ops>
__host__ __device__ inline void stage_rows(bf16_t* dst, const bf16_t* src, size_t stride, int r0, int n, int rows16,
                                           bool vec, Ops& ops) {
  using Tr = AttentionTcTraits<kD>;
  constexpr int kGroups = kD / 8;
  static_assert(kD % 8 == 0 && Tr::kLd % 8 == 0, "whole 16-byte groups per staged row");
  for (int idx = ops.thread(); idx < rows16 * kGroups; idx += Tr::kThreads) {
    const int r = idx / kGroups, c = idx % kGroups * 8;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (r < n) {
      const bf16_t* p = src + (size_t)(r0 + r) * stride + c;
      if (vec) {
        v = *reinterpret_cast<const uint4*>(p);
      } else {
        v.x = load2_bits(p, false);
        v.y = load2_bits(p + 2, false);
        v.z = load2_bits(p + 4, false);
        v.w = load2_bits(p + 6, false);
      }
    }
    *reinterpret_cast<uint4*>(dst + r * Tr::kLd + c) = v;
  }
}

// acc[nt] (16 own rows × kN staged rows) += A (own rows × dh) · staged rows [0, kN)ᵀ
#pragma nv_exec_check_disable
template <int kD, int kN, class Own, class Ops>
__host__ __device__ inline void rows_times_staged(float (&acc)[kN / 8][4], const Own& own, const bf16_t* staged,
                                                  int lane, Ops& ops) {
  using Tr = AttentionTcTraits<kD>;
#pragma unroll(Own::kUnroll)
  for (int kk = 0; kk < Tr::kKSteps; ++kk) {
    uint32_t a[4];
    own.get(kk, a);
#pragma unroll
    for (int nt = 0; nt < kN / 8; nt += 2) {
      uint32_t b[4];
      ops.ldsm(b, staged + (nt * 8 + ldsm_b_row(lane)) * Tr::kLd + 16 * kk + ldsm_b_col(lane));
      ops.mma(acc[nt], a, b[0], b[1]);
      ops.mma(acc[nt + 1], a, b[2], b[3]);
    }
  }
}

// acc[dt] (16 own rows × dh) += W (own rows × kN, as C fragments) · staged rows [0, kN)
#pragma nv_exec_check_disable
template <int kD, int kN, class Ops>
__host__ __device__ inline void weights_times_staged(float (&acc)[kD / 8][4], const float (&w)[kN / 8][4],
                                                     const bf16_t* staged, int lane, Ops& ops) {
  using Tr = AttentionTcTraits<kD>;
#pragma unroll
  for (int kc = 0; kc < kN / 16; ++kc) {
    uint32_t a[4];
    c_to_a(a, w[2 * kc], w[2 * kc + 1]);
#pragma unroll
    for (int dt = 0; dt < Tr::kDTiles; dt += 2) {
      uint32_t b[4];
      ops.ldsm_t(b, staged + (16 * kc + ldsm_bt_row(lane)) * Tr::kLd + dt * 8 + ldsm_bt_col(lane));
      ops.mma(acc[dt], a, b[0], b[1]);
      ops.mma(acc[dt + 1], a, b[2], b[3]);
    }
  }
}

// 1/x for x ≥ 1 (the softmax sum): MUFU.RCP on the device (2 ulp), no slow-path call
__host__ __device__ inline float reciprocal(float x) {
#ifdef __CUDA_ARCH__
  return __fdividef(1.f, x);
#else
  return 1.f / x;
#endif
}

#pragma nv_exec_check_disable
template <class Ops>
__host__ __device__ inline float quad_max(float v, Ops& ops) {
  v = fmaxf(v, ops.shfl_xor(v, 1));
  return fmaxf(v, ops.shfl_xor(v, 2));
}
#pragma nv_exec_check_disable
template <class Ops>
__host__ __device__ inline float quad_sum(float v, Ops& ops) {
  v += ops.shfl_xor(v, 1);
  return v + ops.shfl_xor(v, 2);
}

// ---- forward -------------------------------------------------------------------------------

// One step over staged keys [0, kN) (global key0 + …): scores, online softmax, o += p·v.
// m (raw score units), l (this lane's share), o: rows g (index 0) and g + 8 (index 1).
#pragma nv_exec_check_disable
template <int kD, int kN, class Own, class Ops>
__host__ __device__ inline void forward_step(float (&o)[kD / 8][4], float (&m)[2], float (&l)[2], const Own& qa,
                                             const bf16_t* ks, const bf16_t* vs,
                                             int key0, int T, float c, int lane, Ops& ops) {
  float s[kN / 8][4];
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
    for (int r = 0; r < 4; ++r) s[nt][r] = 0.f;
  rows_times_staged<kD, kN>(s, qa, ks, lane, ops);
  if (key0 + kN > T) {  // the step holding key T − 1: keys past it get −inf
#pragma unroll
    for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
      for (int r = 0; r < 4; ++r)
        if (key0 + nt * 8 + frag_c_col(lane, r) >= T) s[nt][r] = -INFINITY;
  }
  float mx[2] = {m[0], m[1]};
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt) {
    mx[0] = fmaxf(mx[0], fmaxf(s[nt][0], s[nt][1]));
    mx[1] = fmaxf(mx[1], fmaxf(s[nt][2], s[nt][3]));
  }
  float neg[2], corr[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    mx[i] = quad_max(mx[i], ops);  // finite: the step's first key is valid
    corr[i] = exp2f((m[i] - mx[i]) * c);  // 0 on the first step (m = −inf)
    m[i] = mx[i];
    l[i] *= corr[i];
    neg[i] = -mx[i] * c;
  }
#pragma unroll
  for (int dt = 0; dt < kD / 8; ++dt) {
    o[dt][0] *= corr[0];
    o[dt][1] *= corr[0];
    o[dt][2] *= corr[1];
    o[dt][3] *= corr[1];
  }
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      s[nt][r] = exp2f(fmaf(s[nt][r], c, neg[r / 2]));  // −inf → 0
      l[r / 2] += s[nt][r];
    }
  weights_times_staged<kD, kN>(o, s, vs, lane, ops);
}

#pragma nv_exec_check_disable
template <int kD, class Ops, class Elem>
__host__ __device__ void forward_body(const AttentionTcParams<Elem>& p, Ops& ops) {
  using Tr = AttentionTcTraits<kD>;
  const int T = p.T, H = p.H, D = H * kD;
  const int lane = ops.thread() % 32, warp = ops.thread() / 32;
  const int s = ops.block_x() / H, h = ops.block_x() % H;
  const size_t stride = 3 * (size_t)D;
  const Elem* q_base = p.qkv + (size_t)s * T * stride + (size_t)h * kD;
  const AttentionTcPlan plan = attention_tc_plan<kD>(T);
  bf16_t* ks = reinterpret_cast<bf16_t*>(ops.smem());  // (cap, kLd) keys of the staged chunk
  bf16_t* vs = ks + plan.cap * Tr::kLd;                // (cap, kLd) values
  OwnFrags<kD, Tr::kFwdOwnInSmem> qa(ops.smem() + plan.tiles + warp * Tr::kOwnSlotBytes, lane);  // own queries
  const float c = p.scale * Tr::kLog2e;
  int staged = -1;
  for (int round = 0; round < p.rounds; ++round) {
    const int round0 = (ops.block_y() * p.rounds + round) * Tr::kRoundRows;
    if (round0 >= T) break;  // block-uniform
    const int q0 = round0 + warp * Tr::kTile;
    const bool active = q0 < T;  // warp-uniform; inactive warps still stage and synchronize
    if (active) load_own<kD, false>(qa, q_base, stride, q0, T, lane, p.vec);
    float o[Tr::kDTiles][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
    for (int dt = 0; dt < Tr::kDTiles; ++dt)
#pragma unroll
      for (int r = 0; r < 4; ++r) o[dt][r] = 0.f;
    for (int chunk = 0; chunk < plan.chunks; ++chunk) {
      const int c0 = chunk * Tr::kMaxStaged, n = imin(Tr::kMaxStaged, T - c0), rows16 = round16(n);
      if (chunk != staged) {
        ops.sync();  // the previous chunk is no longer read
        stage_rows<kD>(ks, q_base + D, stride, c0, n, rows16, p.vec, ops);
        stage_rows<kD>(vs, q_base + 2 * D, stride, c0, n, rows16, p.vec, ops);
        ops.sync();
        staged = chunk;
      }
      if (!active) continue;
      int j = 0;
#pragma unroll 1
      for (; j + Tr::kFwdStep <= rows16; j += Tr::kFwdStep)
        forward_step<kD, Tr::kFwdStep>(o, m, l, qa, ks + j * Tr::kLd, vs + j * Tr::kLd, c0 + j, T, c, lane, ops);
#pragma unroll 1
      for (; j < rows16; j += Tr::kTailStep)
        forward_step<kD, Tr::kTailStep>(o, m, l, qa, ks + j * Tr::kLd, vs + j * Tr::kLd, c0 + j, T, c, lane, ops);
    }
    if (!active) continue;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float l_row = quad_sum(l[i], ops);  // ≥ 1: the maximum's own term is exp(0)
      const int row = q0 + lane / 4 + 8 * i;
      if (row >= T) continue;
      const float inv = reciprocal(l_row);
      Elem* dst = p.out + ((size_t)s * T + row) * D + (size_t)h * kD + 2 * (lane % 4);
#pragma unroll
      for (int dt = 0; dt < Tr::kDTiles; ++dt) store2(dst + dt * 8, o[dt][2 * i] * inv, o[dt][2 * i + 1] * inv, p.vec);
      if (lane % 4 == 0) p.lse[((size_t)s * H + h) * T + row] = m[i] * p.scale + logf(l_row);
    }
  }
}

// ---- backward, query side: dq ----------------------------------------------------------------

#pragma nv_exec_check_disable
template <int kD, int kN, class Own, class Ops>
__host__ __device__ inline void dq_step(float (&dq)[kD / 8][4], const Own& qa, const Own& da, const float (&nlse)[2],
                                        const float (&delta)[2], const bf16_t* ks, const bf16_t* vs, int key0, int T,
                                        float c, int lane, Ops& ops) {
  float s[kN / 8][4], dp[kN / 8][4];
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
    for (int r = 0; r < 4; ++r) s[nt][r] = dp[nt][r] = 0.f;
  rows_times_staged<kD, kN>(s, qa, ks, lane, ops);   // q·k
  rows_times_staged<kD, kN>(dp, da, vs, lane, ops);  // dout·v
  const bool tail = key0 + kN > T;
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      // keys past T: their staged k rows are zero, so ds·k would add nothing; the mask keeps ds exact
      const bool valid = !tail || key0 + nt * 8 + frag_c_col(lane, r) < T;
      const float pr = valid ? exp2f(fmaf(s[nt][r], c, nlse[r / 2])) : 0.f;
      s[nt][r] = pr * (dp[nt][r] - delta[r / 2]);  // ds
    }
  weights_times_staged<kD, kN>(dq, s, ks, lane, ops);  // dq += ds·k
}

#pragma nv_exec_check_disable
template <int kD, class Ops, class Elem>
__host__ __device__ void backward_q_body(const AttentionTcParams<Elem>& p, Ops& ops) {
  using Tr = AttentionTcTraits<kD>;
  const int T = p.T, H = p.H, D = H * kD;
  const int lane = ops.thread() % 32, warp = ops.thread() / 32;
  const int s = ops.block_x() / H, h = ops.block_x() % H;
  const size_t stride = 3 * (size_t)D;
  const Elem* q_base = p.qkv + (size_t)s * T * stride + (size_t)h * kD;
  const size_t head_row = (size_t)s * T * D + (size_t)h * kD;  // (s, 0, h, 0) of out-shaped tensors
  const float* row_stats = p.lse_fwd + ((size_t)s * H + h) * T;
  const AttentionTcPlan plan = attention_tc_plan<kD>(T);
  bf16_t* ks = reinterpret_cast<bf16_t*>(ops.smem());
  bf16_t* vs = ks + plan.cap * Tr::kLd;
  unsigned char* own = ops.smem() + plan.tiles + 2 * warp * Tr::kOwnSlotBytes;
  OwnFrags<kD, Tr::kBwdOwnInSmem> qa(own, lane), da(own + Tr::kOwnSlotBytes, lane);  // own queries, dout rows
  const float c = p.scale * Tr::kLog2e;
  int staged = -1;
  for (int round = 0; round < p.rounds; ++round) {
    const int round0 = (ops.block_y() * p.rounds + round) * Tr::kRoundRows;
    if (round0 >= T) break;
    const int q0 = round0 + warp * Tr::kTile;
    const bool active = q0 < T;
    float nlse[2] = {0.f, 0.f}, delta[2] = {0.f, 0.f};
    if (active) {
      load_own<kD, false>(qa, q_base, stride, q0, T, lane, p.vec);
      load_own<kD, true>(da, p.dout + head_row, D, q0, T, lane, p.vec, p.out_fwd + head_row, D, delta);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        delta[i] = quad_sum(delta[i], ops);  // D of row g + 8i, in the same order on every lane
        const int row = q0 + lane / 4 + 8 * i;
        if (row < T) {
          nlse[i] = -row_stats[row] * Tr::kLog2e;
          if (lane % 4 == 0) p.delta[((size_t)s * H + h) * T + row] = delta[i];
        }
      }
    }
    float dq[Tr::kDTiles][4];
#pragma unroll
    for (int dt = 0; dt < Tr::kDTiles; ++dt)
#pragma unroll
      for (int r = 0; r < 4; ++r) dq[dt][r] = 0.f;
    for (int chunk = 0; chunk < plan.chunks; ++chunk) {
      const int c0 = chunk * Tr::kMaxStaged, n = imin(Tr::kMaxStaged, T - c0), rows16 = round16(n);
      if (chunk != staged) {
        ops.sync();
        stage_rows<kD>(ks, q_base + D, stride, c0, n, rows16, p.vec, ops);
        stage_rows<kD>(vs, q_base + 2 * D, stride, c0, n, rows16, p.vec, ops);
        ops.sync();
        staged = chunk;
      }
      if (!active) continue;
      int j = 0;
#pragma unroll 1
      for (; j + Tr::kDqStep <= rows16; j += Tr::kDqStep)
        dq_step<kD, Tr::kDqStep>(dq, qa, da, nlse, delta, ks + j * Tr::kLd, vs + j * Tr::kLd, c0 + j, T, c, lane, ops);
#pragma unroll 1
      for (; j < rows16; j += Tr::kTailStep)
        dq_step<kD, Tr::kTailStep>(dq, qa, da, nlse, delta, ks + j * Tr::kLd, vs + j * Tr::kLd, c0 + j, T, c, lane,
                                   ops);
    }
    if (!active) continue;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int row = q0 + lane / 4 + 8 * i;
      if (row >= T) continue;
      Elem* dst = p.dqkv + ((size_t)s * T + row) * stride + (size_t)h * kD + 2 * (lane % 4);
#pragma unroll
      for (int dt = 0; dt < Tr::kDTiles; ++dt)
        store2(dst + dt * 8, p.scale * dq[dt][2 * i], p.scale * dq[dt][2 * i + 1], p.vec);
    }
  }
}

// ---- backward, key side: dk, dv --------------------------------------------------------------

// What a key-side pass accumulates: both (dh ≤ 64), or, for dh = 128, dv in one pass and dk in a
// second (AttentionTcTraits::kSplitKv): 64 + 64 accumulators and a step's fragments do not fit 255
// registers; the second pass recomputes the scores (5 products instead of 4).
enum class KvPart { kBoth, kDv, kDk };

// One step over staged queries [0, kN): own rows are 16 keys. nl2[i] = −lse_i·log2e (−inf past T),
// dl[i] = D_i, indexed by the staged query. acc_dk and acc_dv may be the same array when only one
// of them is accumulated.
#pragma nv_exec_check_disable
template <int kD, int kN, KvPart kPart, class Own, class Ops>
__host__ __device__ inline void kv_step(float (&acc_dk)[kD / 8][4], float (&acc_dv)[kD / 8][4], const Own& ka,
                                        const Own& va, const bf16_t* qs, const bf16_t* dos, const float* nl2,
                                        const float* dl, float c, int lane, Ops& ops) {
  constexpr bool kDk = kPart != KvPart::kDv;
  float st[kN / 8][4], dpt[kN / 8][4];
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
    for (int r = 0; r < 4; ++r) st[nt][r] = dpt[nt][r] = 0.f;
  rows_times_staged<kD, kN>(st, ka, qs, lane, ops);                   // k·q
  if (kDk) rows_times_staged<kD, kN>(dpt, va, dos, lane, ops);        // v·dout
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt) {
    const int i = nt * 8 + frag_c_col(lane, 0);  // staged query of elements 0 and 2 (i + 1: 1 and 3)
    const float2 nl = *reinterpret_cast<const float2*>(nl2 + i);
    const float2 d = kDk ? *reinterpret_cast<const float2*>(dl + i) : make_float2(0.f, 0.f);
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const float pr = exp2f(fmaf(st[nt][r], c, r % 2 ? nl.y : nl.x));  // 0 past T (−inf)
      if (kDk) dpt[nt][r] = pr * (dpt[nt][r] - (r % 2 ? d.y : d.x));    // ds
      st[nt][r] = pr;
    }
  }
  if (kPart != KvPart::kDk) weights_times_staged<kD, kN>(acc_dv, st, dos, lane, ops);  // dv += p·dout
  if (kDk) weights_times_staged<kD, kN>(acc_dk, dpt, qs, lane, ops);                   // dk += ds·q
}

// All staged chunks for the warp's keys (own rows j0 …): queries, dout, −lse·log2e and D staged
// chunk by chunk (skipped when `staged` already holds the chunk), the steps of kv_step.
#pragma nv_exec_check_disable
template <int kD, KvPart kPart, class Own, class Ops, class Elem>
__host__ __device__ inline void kv_pass(float (&acc_dk)[kD / 8][4], float (&acc_dv)[kD / 8][4], const Own& ka,
                                        const Own& va, bool active, int& staged, const AttentionTcParams<Elem>& p,
                                        const AttentionTcPlan& plan, const Elem* q_base, const Elem* dout_base,
                                        const float* row_stats, const float* row_delta, bf16_t* qs, bf16_t* dos,
                                        float* nl2, float* dl, int lane, Ops& ops) {
  using Tr = AttentionTcTraits<kD>;
  const int T = p.T, D = p.H * kD;
  const float c = p.scale * Tr::kLog2e;
#pragma unroll
  for (int dt = 0; dt < Tr::kDTiles; ++dt)
#pragma unroll
    for (int r = 0; r < 4; ++r) acc_dk[dt][r] = acc_dv[dt][r] = 0.f;
  for (int chunk = 0; chunk < plan.chunks; ++chunk) {
    const int c0 = chunk * Tr::kMaxStaged, n = imin(Tr::kMaxStaged, T - c0), rows16 = round16(n);
    if (chunk != staged) {
      ops.sync();
      stage_rows<kD>(qs, q_base, 3 * (size_t)D, c0, n, rows16, p.vec, ops);
      stage_rows<kD>(dos, dout_base, D, c0, n, rows16, p.vec, ops);
      for (int i = ops.thread(); i < rows16; i += Tr::kThreads) {
        nl2[i] = i < n ? -row_stats[c0 + i] * Tr::kLog2e : -INFINITY;
        dl[i] = i < n ? row_delta[c0 + i] : 0.f;
      }
      ops.sync();
      staged = chunk;
    }
    if (!active) continue;
    int j = 0;
#pragma unroll 1
    for (; j + Tr::kKvStep <= rows16; j += Tr::kKvStep)
      kv_step<kD, Tr::kKvStep, kPart>(acc_dk, acc_dv, ka, va, qs + j * Tr::kLd, dos + j * Tr::kLd, nl2 + j, dl + j, c,
                                      lane, ops);
#pragma unroll 1
    for (; j < rows16; j += Tr::kTailStep)
      kv_step<kD, Tr::kTailStep, kPart>(acc_dk, acc_dv, ka, va, qs + j * Tr::kLd, dos + j * Tr::kLd, nl2 + j, dl + j,
                                        c, lane, ops);
  }
}

// rows [j0, j0 + 16) ∩ [0, T) of one part (1: dk, 2: dv) of dqkv ← mul · acc
template <int kD, class Elem>
__host__ __device__ inline void store_rows(Elem* dqkv_head, size_t stride, int j0, int T, int lane,
                                           const float (&acc)[kD / 8][4], float mul, bool vec) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = j0 + lane / 4 + 8 * i;
    if (row >= T) continue;
    Elem* dst = dqkv_head + (size_t)row * stride + 2 * (lane % 4);
#pragma unroll
    for (int dt = 0; dt < kD / 8; ++dt) store2(dst + dt * 8, mul * acc[dt][2 * i], mul * acc[dt][2 * i + 1], vec);
  }
}

#pragma nv_exec_check_disable
template <int kD, class Ops, class Elem>
__host__ __device__ void backward_kv_body(const AttentionTcParams<Elem>& p, Ops& ops) {
  using Tr = AttentionTcTraits<kD>;
  const int T = p.T, H = p.H, D = H * kD;
  const int lane = ops.thread() % 32, warp = ops.thread() / 32;
  const int s = ops.block_x() / H, h = ops.block_x() % H;
  const size_t stride = 3 * (size_t)D;
  const Elem* q_base = p.qkv + (size_t)s * T * stride + (size_t)h * kD;
  const Elem* dout_base = p.dout + (size_t)s * T * D + (size_t)h * kD;
  const float* row_stats = p.lse_fwd + ((size_t)s * H + h) * T;
  const float* row_delta = p.delta + ((size_t)s * H + h) * T;
  Elem* dk_head = p.dqkv + (size_t)s * T * stride + D + (size_t)h * kD;  // (s, 0, k, h, 0)
  Elem* dv_head = dk_head + D;
  const AttentionTcPlan plan = attention_tc_plan<kD>(T);
  bf16_t* qs = reinterpret_cast<bf16_t*>(ops.smem());  // (cap, kLd) queries of the staged chunk
  bf16_t* dos = qs + plan.cap * Tr::kLd;               // (cap, kLd) their dout rows
  float* nl2 = reinterpret_cast<float*>(dos + plan.cap * Tr::kLd);  // (cap) −lse·log2e
  float* dl = nl2 + plan.cap;                                         // (cap) D
  unsigned char* own = reinterpret_cast<unsigned char*>(dl + plan.cap) + 2 * warp * Tr::kOwnSlotBytes;
  OwnFrags<kD, Tr::kBwdOwnInSmem> ka(own, lane), va(own + Tr::kOwnSlotBytes, lane);  // own keys, values
  int staged = -1;
  for (int round = 0; round < p.rounds; ++round) {
    const int round0 = (ops.block_y() * p.rounds + round) * Tr::kRoundRows;
    if (round0 >= T) break;
    const int j0 = round0 + warp * Tr::kTile;  // the warp's 16 keys
    const bool active = j0 < T;
    if (active) {
      load_own<kD, false>(ka, q_base + D, stride, j0, T, lane, p.vec);
      load_own<kD, false>(va, q_base + 2 * D, stride, j0, T, lane, p.vec);
    }
    if constexpr (Tr::kSplitKv) {
      float acc[Tr::kDTiles][4];
      kv_pass<kD, KvPart::kDv>(acc, acc, ka, va, active, staged, p, plan, q_base, dout_base, row_stats, row_delta, qs,
                               dos, nl2, dl, lane, ops);
      if (active) store_rows<kD>(dv_head, stride, j0, T, lane, acc, 1.f, p.vec);
      kv_pass<kD, KvPart::kDk>(acc, acc, ka, va, active, staged, p, plan, q_base, dout_base, row_stats, row_delta, qs,
                               dos, nl2, dl, lane, ops);
      if (active) store_rows<kD>(dk_head, stride, j0, T, lane, acc, p.scale, p.vec);
    } else {
      float dk[Tr::kDTiles][4], dv[Tr::kDTiles][4];
      kv_pass<kD, KvPart::kBoth>(dk, dv, ka, va, active, staged, p, plan, q_base, dout_base, row_stats, row_delta, qs,
                                 dos, nl2, dl, lane, ops);
      if (active) {
        store_rows<kD>(dv_head, stride, j0, T, lane, dv, 1.f, p.vec);
        store_rows<kD>(dk_head, stride, j0, T, lane, dk, p.scale, p.vec);
      }
    }
  }
}

// ---- kernels and launchers -----------------------------------------------------------------

template <int kD, typename Elem>
static __global__ void __launch_bounds__(AttentionTcTraits<kD>::kThreads, AttentionTcTraits<kD>::kFwdMinBlocks)
    attention_tc_forward_kernel(const AttentionTcParams<Elem> p) {
  extern __shared__ __align__(16) unsigned char attention_tc_smem[];
  DeviceOps ops{attention_tc_smem};
  forward_body<kD>(p, ops);
}

template <int kD, typename Elem>
static __global__ void __launch_bounds__(AttentionTcTraits<kD>::kThreads, AttentionTcTraits<kD>::kDqMinBlocks)
    attention_tc_backward_q_kernel(const AttentionTcParams<Elem> p) {
  extern __shared__ __align__(16) unsigned char attention_tc_smem[];
  DeviceOps ops{attention_tc_smem};
  backward_q_body<kD>(p, ops);
}

template <int kD, typename Elem>
static __global__ void __launch_bounds__(AttentionTcTraits<kD>::kThreads, AttentionTcTraits<kD>::kKvMinBlocks)
    attention_tc_backward_kv_kernel(const AttentionTcParams<Elem> p) {
  extern __shared__ __align__(16) unsigned char attention_tc_smem[];
  DeviceOps ops{attention_tc_smem};
  backward_kv_body<kD>(p, ops);
}

// f(std::integral_constant<int, dh>{}) for the head dims with a tensor-core kernel; false otherwise
template <typename F>
inline bool dispatch_head_dim(int dh, F&& f) {
  switch (dh) {
    case 32: f(std::integral_constant<int, 32>{}); return true;
    case 64: f(std::integral_constant<int, 64>{}); return true;
    case 128: f(std::integral_constant<int, 128>{}); return true;
    default: return false;
  }
}

}  // namespace attention_tc_detail

inline bool attention_tc_supports(int dh) { return dh == 32 || dh == 64 || dh == 128; }

// The parameter block and plan of a call (the launchers; the CPU emulation builds the same).
template <typename Elem>
inline AttentionTcParams<Elem> attention_tc_params(int S, int T, int H, int dh) {
  AttentionTcParams<Elem> p;
  p.S = S;
  p.T = T;
  p.H = H;
  p.scale = attention_detail::softmax_scale(dh);
  attention_tc_detail::dispatch_head_dim(dh, [&](auto dims) { p.rounds = attention_tc_plan<decltype(dims)::value>(T).rounds; });
  return p;
}

// out (S, T, H, dh), lse (S, H, T) ← qkv (S, T, 3, H, dh); both assigned. Head dims without a
// tensor-core kernel run attention.cuh's. Elem: float or __nv_bfloat16.
template <typename Elem>
inline void attention_tc_forward(Elem* out, float* lse, const Elem* qkv, int S, int T, int H, int dh,
                                 cudaStream_t stream) {
  using namespace attention_tc_detail;
  constexpr const char* op = "attention_forward";
  attention_detail::check_shape(op, S, T, H, dh);
  attention_detail::check_pointer(out, op, "out");
  attention_detail::check_pointer(lse, op, "lse");
  attention_detail::check_pointer(qkv, op, "qkv");
  AttentionTcParams<Elem> p = attention_tc_params<Elem>(S, T, H, dh);
  p.qkv = qkv;
  p.out = out;
  p.lse = lse;
  p.vec = attention_detail::aligned16(qkv) && attention_detail::aligned16(out);
  const bool tc = dispatch_head_dim(dh, [&](auto dims) {
    constexpr int kD = decltype(dims)::value;
    const AttentionTcPlan plan = attention_tc_plan<kD>(T);
    attention_detail::opt_in_dynamic_smem(attention_tc_forward_kernel<kD, Elem>, plan.smem_fwd);
    attention_tc_forward_kernel<kD, Elem>
        <<<dim3(S * H, plan.grid_y), AttentionTcTraits<kD>::kThreads, plan.smem_fwd, stream>>>(p);
    EMAE_CHECK_LAUNCH("attention_tc_forward_kernel");
  });
  if (!tc) attention_forward(out, lse, qkv, S, T, H, dh, stream);
}

// dqkv (S, T, 3, H, dh) assigned ← dout, the forward's qkv, out and lse;
// scratch: attention_backward_scratch_floats(S, T, H) floats (D). Elem: float or __nv_bfloat16.
template <typename Elem>
inline void attention_tc_backward(Elem* dqkv, const Elem* dout, const Elem* qkv, const Elem* out,
                                  const float* lse, int S, int T, int H, int dh, float* scratch, cudaStream_t stream) {
  using namespace attention_tc_detail;
  constexpr const char* op = "attention_backward";
  attention_detail::check_shape(op, S, T, H, dh);
  attention_detail::check_pointer(dqkv, op, "dqkv");
  attention_detail::check_pointer(dout, op, "dout");
  attention_detail::check_pointer(qkv, op, "qkv");
  attention_detail::check_pointer(out, op, "out");
  attention_detail::check_pointer(lse, op, "lse");
  attention_detail::check_pointer(scratch, op, "scratch");
  AttentionTcParams<Elem> p = attention_tc_params<Elem>(S, T, H, dh);
  p.qkv = qkv;
  p.dout = dout;
  p.out_fwd = out;
  p.lse_fwd = lse;
  p.dqkv = dqkv;
  p.delta = scratch;
  p.vec = attention_detail::aligned16(qkv) && attention_detail::aligned16(dout) && attention_detail::aligned16(out) &&
          attention_detail::aligned16(dqkv);
  const bool tc = dispatch_head_dim(dh, [&](auto dims) {
    constexpr int kD = decltype(dims)::value;
    const AttentionTcPlan plan = attention_tc_plan<kD>(T);
    const dim3 grid(S * H, plan.grid_y);
    attention_detail::opt_in_dynamic_smem(attention_tc_backward_q_kernel<kD, Elem>, plan.smem_q);
    attention_tc_backward_q_kernel<kD, Elem><<<grid, AttentionTcTraits<kD>::kThreads, plan.smem_q, stream>>>(p);
    EMAE_CHECK_LAUNCH("attention_tc_backward_q_kernel");
    attention_detail::opt_in_dynamic_smem(attention_tc_backward_kv_kernel<kD, Elem>, plan.smem_kv);
    attention_tc_backward_kv_kernel<kD, Elem><<<grid, AttentionTcTraits<kD>::kThreads, plan.smem_kv, stream>>>(p);
    EMAE_CHECK_LAUNCH("attention_tc_backward_kv_kernel");
  });
  if (!tc) attention_backward(dqkv, dout, qkv, out, lse, S, T, H, dh, scratch, stream);
}

// ---- path selection ----------------------------------------------------------------------------

enum class AttentionPath { kSimt, kTc };

inline const char* attention_path_name(AttentionPath p) { return p == AttentionPath::kTc ? "tc" : "simt"; }

// EMAE_CUDA_ATTENTION: auto (or unset) and simt → attention.cuh; tc → this file's kernels (every
// device emae accepts, compute capability ≥ 8.0, runs them). Anything else is refused.
inline AttentionPath select_attention_path() {
  return env_switch("EMAE_CUDA_ATTENTION", {"auto", "simt", "tc"}) == "tc" ? AttentionPath::kTc : AttentionPath::kSimt;
}

namespace attention_tc_detail {

// The storage type shared by a call's views (null views are skipped: the launchers name them);
// a mix of fp32 and bf16 is refused.
inline DType common_storage(const char* op, std::initializer_list<std::pair<const char*, ActIn>> views) {
  const char* first = nullptr;
  DType type = DType::kF32;
  for (const auto& [name, view] : views) {
    if (!view) continue;
    if (first == nullptr) {
      first = name;
      type = view.dtype;
    } else if (view.dtype != type) {
      throw std::invalid_argument(std::string(op) + ": " + name + " is " + dtype_name(view.dtype) + " but " + first +
                                  " is " + dtype_name(type) +
                                  "; the attention's activations (qkv, out, dout, dqkv) are all fp32 or all bf16");
    }
  }
  return type;
}

template <typename Elem>
inline Elem* storage(Act v) { return static_cast<Elem*>(v.data); }
template <typename Elem>
inline const Elem* storage(ActIn v) { return static_cast<const Elem*>(v.data); }

}  // namespace attention_tc_detail

// out (S, T, H, dh), lse (S, H, T) ← qkv (S, T, 3, H, dh) on `path`; out and qkv both fp32 or both bf16
inline void attention_forward_on(AttentionPath path, Act out, float* lse, ActIn qkv, int S, int T, int H, int dh,
                                 cudaStream_t stream) {
  using namespace attention_tc_detail;
  const auto run = [&](auto elem) {
    using Elem = decltype(elem);
    if (path == AttentionPath::kTc)
      attention_tc_forward(storage<Elem>(out), lse, storage<Elem>(qkv), S, T, H, dh, stream);
    else
      attention_forward(storage<Elem>(out), lse, storage<Elem>(qkv), S, T, H, dh, stream);
  };
  if (common_storage("attention_forward", {{"qkv", qkv}, {"out", out}}) == DType::kBF16) run(bf16_t{});
  else run(float{});
}

// dqkv ← dout, the forward's qkv, out and lse on `path`; dqkv, dout, qkv and out all fp32 or all bf16;
// scratch: attention_backward_scratch_floats(S, T, H) floats
inline void attention_backward_on(AttentionPath path, Act dqkv, ActIn dout, ActIn qkv, ActIn out, const float* lse,
                                  int S, int T, int H, int dh, float* scratch, cudaStream_t stream) {
  using namespace attention_tc_detail;
  const auto run = [&](auto elem) {
    using Elem = decltype(elem);
    if (path == AttentionPath::kTc)
      attention_tc_backward(storage<Elem>(dqkv), storage<Elem>(dout), storage<Elem>(qkv), storage<Elem>(out), lse, S,
                            T, H, dh, scratch, stream);
    else
      attention_backward(storage<Elem>(dqkv), storage<Elem>(dout), storage<Elem>(qkv), storage<Elem>(out), lse, S, T,
                         H, dh, scratch, stream);
  };
  const DType type =
      common_storage("attention_backward", {{"qkv", qkv}, {"out", out}, {"dout", dout}, {"dqkv", dqkv}});
  if (type == DType::kBF16) run(bf16_t{});
  else run(float{});
}

}  // namespace emae::cuda
