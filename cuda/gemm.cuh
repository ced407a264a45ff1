// Tensor-core GEMM for the training step (v1): fp32 in global memory, bf16 operands in shared
// memory, mma.sync m16n8k16 with fp32 accumulation. GemmParams carries activation views (core/act.h):
// this kernel (the mma path) takes fp32 views only; the bf16 paths (gemm_dispatch.cuh) also take
// bf16 operands, a bf16 C and bf16 GELU buffers (issue 11).
//   C (M, N) = [C +] op(A) (M, K) · op(B) (K, N) [+ bias (N)] [+ residual (M, N), leading dim ldc]
// Invariants:
//   - shared-memory tiles keep the global orientation (A as [BM][BK] when K-contiguous, [BK][BM]
//     when M-contiguous; B as [BN][BK] or [BK][BN]); ldmatrix (.trans for the non-K-contiguous
//     cases) turns either into the mma fragments;
//   - global loads are fp32 (float4 when aligned), coalesced along the contiguous dimension,
//     converted to bf16 on the way into shared memory; the next K-tile is loaded into registers while the current one is
//     multiplied (double-buffered shared memory, one barrier per K-step);
//   - any M, N, K ≥ 0 and strides ≥ the stored row length: out-of-range elements load as 0 and
//     are never stored; K == 0 still writes C = [C +] bias + residual (or 0);
//   - deterministic: every output is summed in a fixed order (split-K partials are reduced in
//     split order, column sums in a fixed tree), so a run repeats bit for bit;
//   - forward outputs are assigned; dweight and dbias accumulate (+=), dinp is assigned;
//   - the epilogue (what happens to an output after its K sum: C, bias, residual, GELU) is written
//     once, epilogue_store() below, and called by every kernel's direct store (this one,
//     gemm_sm80.cuh, gemm_sm90.cuh) and by the split-K reduce, so it is applied exactly once per
//     output and never to a split's partial sum; this kernel has no GELU (gemm() refuses it).
// The interface (GemmParams, same meaning as cpu::GemmParams) is what a later wgmma (sm_90a)
// kernel will implement too.
#pragma once
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "core/act.h"
#include "core/elementwise.h"
#include "cuda/common.cuh"

namespace emae::cuda {

struct GemmParams {
  bool trans_a = false;             // A stored (K, M) (M-contiguous) instead of (M, K)
  bool trans_b = false;             // B stored (N, K) (K-contiguous) instead of (K, N)
  int M = 0, N = 0, K = 0;
  // Views: fp32, or bf16 on the bf16 paths only (gemm() refuses them). Strides count elements.
  ActIn A; int lda = 0;             // row stride of A as stored
  ActIn B; int ldb = 0;             // row stride of B as stored
  Act C; int ldc = 0;               // row stride of C (and of residual); a bf16 C is rounded once, after
                                    // the whole epilogue, and excludes accumulate and residual
  bool accumulate = false;          // C += … instead of C = … (fp32 C)
  const float* bias = nullptr;      // (N) or null
  const float* residual = nullptr;  // (M, N) at ldc, or null (fp32: the residual stream, so C is fp32 too)
  // GELU in the epilogue (at most one of the two; the MLP's fc1 forward and fc2 input gradient):
  Act gelu_out;                     // (M, N) at ldc, or null: gelu(C's new value in fp32, before any rounding)
                                    // (C keeps the pre-activation)
  ActIn gelu_inp;                   // (M, N) at ldc, or null: C's new value is multiplied by gelu'(gelu_inp)
  float* a_sums = nullptr;          // (M) or null: a_sums[m] += Σ_k op(A)(m, k) of A as stored (a bf16 A
                                    // widened to fp32), summed as column_sum_accumulate does (the bias
                                    // gradient of a dweight GEMM); needs trans_a and
                                    // workspace_floats ≥ column_sum_scratch_floats(K, M)
  float* workspace = nullptr;       // split-K partials ([splits][M][N] fp32), or null: no split-K
  size_t workspace_floats = 0;      // floats at workspace; splits are reduced until they fit
};

// Whether p asks for a GELU in its epilogue: the tile kernels then run their kGelu instantiation
// (the GELU's erf code inlined at every store site of an unrolled epilogue is large, so the plain
// instantiation does without it).
template <class Params>
__host__ __device__ __forceinline__ bool gelu_epilogue(const Params& p) {
  return p.gelu_out.data != nullptr || p.gelu_inp.data != nullptr;
}

namespace gemm_detail {

// A stored element as fp32 (bf16 widens exactly).
__host__ __device__ __forceinline__ float widen(float x) { return x; }
__host__ __device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }

// Element `at` of a view as fp32, and x stored into one (bf16: rounded to nearest even). kTyped
// false: the view is known to be fp32 (the mma kernel), so its type is not read.
template <bool kTyped>
__host__ __device__ __forceinline__ float load_elem(ActIn v, size_t at) {
  if (kTyped && v.dtype == DType::kBF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(v.data)[at]);
  return static_cast<const float*>(v.data)[at];
}
template <bool kTyped>
__host__ __device__ __forceinline__ void store_elem(Act v, size_t at, float x) {
  if (kTyped && v.dtype == DType::kBF16) static_cast<__nv_bfloat16*>(v.data)[at] = __float2bfloat16_rn(x);
  else static_cast<float*>(v.data)[at] = x;
}

// The element type of an epilogue view fixed at compile time (a kernel instantiation per type, so
// its stores have no run-time type branch), or kAny: read from the view.
enum class ViewType { kAny, kF32, kBF16 };
template <ViewType kT>
__host__ __device__ __forceinline__ float load_as(ActIn v, size_t at) {
  if constexpr (kT == ViewType::kAny) return load_elem<true>(v, at);
  else if constexpr (kT == ViewType::kBF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(v.data)[at]);
  else return static_cast<const float*>(v.data)[at];
}
template <ViewType kT>
__host__ __device__ __forceinline__ void store_as(Act v, size_t at, float x) {
  if constexpr (kT == ViewType::kAny) store_elem<true>(v, at, x);
  else if constexpr (kT == ViewType::kBF16) static_cast<__nv_bfloat16*>(v.data)[at] = __float2bfloat16_rn(x);
  else static_cast<float*>(v.data)[at] = x;
}

}  // namespace gemm_detail

// The epilogue of output (row, col) whose K sum is v; the only description of it (see the
// invariants). Params: GemmParams or GemmBf16Params. In this order, all in fp32:
//   v [+ C] [+ bias] [+ residual] [· gelu'(gelu_inp)] → C;  gelu(C's new value) → gelu_out
// then each store is rounded once to its view's type (bf16 C, gelu_out; gelu_inp is read widened).
// kGelu: the GELU fields are read; without it they must be null (gelu_epilogue(p) is false).
// kC, kG: the types of C and of the GELU view (gelu_out or gelu_inp, whichever is set), fixed at
// compile time by a tile kernel's instantiation (epilogue_types()), or ViewType::kAny: read from
// the views (the split-K reduce). Host-callable so that the CPU emulations (cuda/dev/*_emulate.cu)
// run this very code.
template <bool kGelu, gemm_detail::ViewType kC, gemm_detail::ViewType kG, class Params>
__host__ __device__ __forceinline__ void epilogue_store_as(const Params& p, int row, int col, float v) {
  using gemm_detail::load_as;
  using gemm_detail::store_as;
  const size_t at = (size_t)row * p.ldc + col;
  if (p.accumulate) v += static_cast<const float*>(p.C.data)[at];  // accumulate: fp32 C (checked)
  if (p.bias) v += p.bias[col];
  if (p.residual) v += p.residual[at];
  if constexpr (kGelu) {
    if (p.gelu_inp.data) v *= gelu_grad(load_as<kG>(p.gelu_inp, at));
  }
  store_as<kC>(p.C, at, v);
  if constexpr (kGelu) {
    if (p.gelu_out.data) store_as<kG>(p.gelu_out, at, gelu(v));
  }
}
// kTyped false: every view is fp32 (the mma kernel, whose gemm() refuses others) and no type is read;
// true: the types are read from the views.
template <bool kGelu, bool kTyped = true, class Params>
__host__ __device__ __forceinline__ void epilogue_store(const Params& p, int row, int col, float v) {
  constexpr gemm_detail::ViewType kT = kTyped ? gemm_detail::ViewType::kAny : gemm_detail::ViewType::kF32;
  epilogue_store_as<kGelu, kT, kT>(p, row, col, v);
}

// Output idx (row-major in M × N) of a split-K GEMM: its `splits` partials added in split order,
// then the epilogue, GELU included when asked (gemm_reduce_kernel's body; host-callable for the
// emulations).
template <class Params>
__host__ __device__ __forceinline__ void reduce_output(const Params& p, int splits, const float* __restrict__ partial,
                                                       size_t idx) {
  const size_t total = (size_t)p.M * p.N;
  float v = 0.f;
  for (int z = 0; z < splits; ++z) v += partial[(size_t)z * total + idx];
  epilogue_store<true>(p, (int)(idx / p.N), (int)(idx % p.N), v);
}

struct GemmTraits {
  static constexpr int kBM = 128, kBN = 128, kBK = 32;
  static constexpr int kWarpsM = 2, kWarpsN = 4;       // warp grid over the block tile
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kWarpM = kBM / kWarpsM;          // 64 rows per warp
  static constexpr int kWarpN = kBN / kWarpsN;          // 32 columns per warp
  static constexpr int kTilesM = kWarpM / 16;           // m16 tiles per warp
  static constexpr int kTilesN = kWarpN / 8;            // n8 tiles per warp
  static constexpr int kPad = 8;                        // bf16 per smem row: conflict-free ldmatrix
  static constexpr int kLoadsA = kBM * kBK / kThreads;  // fp32 elements per thread per K-tile
  static constexpr int kLoadsB = kBN * kBK / kThreads;
  static_assert(kBK % 16 == 0, "K-tile is whole mma k16 steps");
  static_assert(kWarpM % 16 == 0 && kWarpN % 16 == 0, "B fragments load two n8 tiles per ldmatrix.x4");
  static_assert((kBM * kBK) % kThreads == 0 && (kBN * kBK) % kThreads == 0, "even load split");
  static_assert(kBK % 4 == 0 && kBM % 4 == 0 && kBN % 4 == 0, "loads move groups of 4 contiguous floats");
  static_assert((kBK + kPad) * 2 % 16 == 0 && (kBM + kPad) * 2 % 16 == 0 && (kBN + kPad) * 2 % 16 == 0,
                "ldmatrix rows are 16-byte aligned");
};

namespace gemm_detail {

using T = GemmTraits;

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// D = A (16×16, row) · B (16×8, col) + D, bf16 in, fp32 accumulate
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Shared-memory tile of one operand: ROWS × COLS bf16 (+ pad) as stored.
template <bool KContig, int Outer>  // Outer = BM (for A) or BN (for B)
struct TileShape {
  static constexpr int kRows = KContig ? Outer : T::kBK;
  static constexpr int kCols = (KContig ? T::kBK : Outer) + T::kPad;
};

// One K-tile of an operand: each thread moves Loads fp32 values as Loads/4 groups of 4
// neighbours along the contiguous dimension (one float4 load when `vec` — the operand's base is
// 16-byte aligned and its row stride a multiple of 4 — and the group is in range; element by
// element otherwise). For operand A "outer" is M, for B it is N. KContig: stored (outer, K) with
// row stride ld; else stored (K, outer).
template <bool KContig, int Outer>
struct TileMap {
  static constexpr int kGroupsPerRow = (KContig ? T::kBK : Outer) / 4;  // float4 groups per stored row
  // group e → stored (row, col) of its first element in the tile
  __device__ __forceinline__ static void at(int e, int& row, int& col) {
    row = e / kGroupsPerRow;
    col = (e % kGroupsPerRow) * 4;
  }
};

template <bool KContig, int Outer, int Loads>
__device__ __forceinline__ void load_tile(float (&regs)[Loads], const float* __restrict__ src, int ld, int outer0,
                                          int outer_size, int k0, int K, bool vec) {
  static_assert(Loads % 4 == 0, "groups of 4");
#pragma unroll
  for (int g = 0; g < Loads / 4; ++g) {
    int row, col;
    TileMap<KContig, Outer>::at(threadIdx.x + g * T::kThreads, row, col);
    // global coordinates of the group's first element: rows of the stored matrix, columns contiguous
    const int grow = row + (KContig ? outer0 : k0), gcol = col + (KContig ? k0 : outer0);
    const int rows_total = KContig ? outer_size : K, cols_total = KContig ? K : outer_size;
    const float* p = src + (size_t)grow * ld + gcol;
    if (vec && grow < rows_total && gcol + 3 < cols_total) {
      const float4 v = *reinterpret_cast<const float4*>(p);
      regs[4 * g] = v.x; regs[4 * g + 1] = v.y; regs[4 * g + 2] = v.z; regs[4 * g + 3] = v.w;
    } else {
#pragma unroll
      for (int q = 0; q < 4; ++q) regs[4 * g + q] = grow < rows_total && gcol + q < cols_total ? p[q] : 0.f;
    }
  }
}

template <bool KContig, int Outer, int Loads>
__device__ __forceinline__ void store_tile(__nv_bfloat16* tile, const float (&regs)[Loads]) {
  constexpr int cols = TileShape<KContig, Outer>::kCols;
#pragma unroll
  for (int g = 0; g < Loads / 4; ++g) {
    int row, col;
    TileMap<KContig, Outer>::at(threadIdx.x + g * T::kThreads, row, col);
    __nv_bfloat162 lo = __floats2bfloat162_rn(regs[4 * g], regs[4 * g + 1]);
    __nv_bfloat162 hi = __floats2bfloat162_rn(regs[4 * g + 2], regs[4 * g + 3]);
    uint2 packed;
    packed.x = *reinterpret_cast<uint32_t*>(&lo);
    packed.y = *reinterpret_cast<uint32_t*>(&hi);
    *reinterpret_cast<uint2*>(tile + row * cols + col) = packed;  // 8-byte aligned: col % 4 == 0, rows 16-byte aligned
  }
}

template <bool AKContig, bool BKContig>
__global__ void __launch_bounds__(GemmTraits::kThreads, 2) gemm_kernel(const GemmParams p, bool swap_grid, int k_split,
                                                                    float* __restrict__ partial, bool vec_a,
                                                                    bool vec_b) {
  using SA = TileShape<AKContig, T::kBM>;
  using SB = TileShape<BKContig, T::kBN>;
  __shared__ __align__(16) __nv_bfloat16 a_tile[2][SA::kRows * SA::kCols];
  __shared__ __align__(16) __nv_bfloat16 b_tile[2][SB::kRows * SB::kCols];

  const int tile_m = swap_grid ? blockIdx.x : blockIdx.y;
  const int tile_n = swap_grid ? blockIdx.y : blockIdx.x;
  const int m0 = tile_m * T::kBM, n0 = tile_n * T::kBN;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_m = warp / T::kWarpsN, warp_n = warp % T::kWarpsN;
  const int wm0 = warp_m * T::kWarpM, wn0 = warp_n * T::kWarpN;  // warp tile origin in the block tile

  float acc[T::kTilesM][T::kTilesN][4];
#pragma unroll
  for (int i = 0; i < T::kTilesM; ++i)
#pragma unroll
    for (int j = 0; j < T::kTilesN; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;

  float a_regs[T::kLoadsA], b_regs[T::kLoadsB];
  const float* a_src = static_cast<const float*>(p.A.data);  // fp32 views (gemm() refuses others)
  const float* b_src = static_cast<const float*>(p.B.data);
  const int k_begin = blockIdx.z * k_split, k_end = min(p.K, k_begin + k_split);
  const int k_tiles = k_end > k_begin ? (k_end - k_begin + T::kBK - 1) / T::kBK : 0;
  if (k_tiles > 0) {
    load_tile<AKContig, T::kBM>(a_regs, a_src, p.lda, m0, p.M, k_begin, k_end, vec_a);
    load_tile<BKContig, T::kBN>(b_regs, b_src, p.ldb, n0, p.N, k_begin, k_end, vec_b);
    store_tile<AKContig, T::kBM>(a_tile[0], a_regs);
    store_tile<BKContig, T::kBN>(b_tile[0], b_regs);
  }
  __syncthreads();

  for (int kt = 0; kt < k_tiles; ++kt) {
    const int buf = kt & 1;
    const bool more = kt + 1 < k_tiles;
    if (more) {  // global loads for the next tile overlap the mma work below
      load_tile<AKContig, T::kBM>(a_regs, a_src, p.lda, m0, p.M, k_begin + (kt + 1) * T::kBK, k_end, vec_a);
      load_tile<BKContig, T::kBN>(b_regs, b_src, p.ldb, n0, p.N, k_begin + (kt + 1) * T::kBK, k_end, vec_b);
    }
    const __nv_bfloat16* at = a_tile[buf];
    const __nv_bfloat16* bt = b_tile[buf];
#pragma unroll
    for (int kk = 0; kk < T::kBK; kk += 16) {
      uint32_t a_frag[T::kTilesM][4];
#pragma unroll
      for (int i = 0; i < T::kTilesM; ++i) {
        const int mrow = wm0 + i * 16;
        if (AKContig) {
          // matrices: (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15)
          const int r = mrow + (lane % 16), c = kk + (lane / 16) * 8;
          ldmatrix_x4(a_frag[i], at + r * SA::kCols + c);
        } else {
          // stored [k][m]; the same four matrices, each read as 8 k-rows then transposed
          const int j = lane / 8;
          const int r = kk + (lane % 8) + (j / 2) * 8, c = mrow + (j % 2) * 8;
          ldmatrix_x4_trans(a_frag[i], at + r * SA::kCols + c);
        }
      }
#pragma unroll
      for (int jn = 0; jn < T::kTilesN; jn += 2) {
        const int ncol = wn0 + jn * 8;
        uint32_t b_frag[4];  // (n-tile jn: b0b1, b2b3), (n-tile jn+1: b0b1, b2b3)
        const int j = lane / 8;
        if (BKContig) {
          // stored [n][k]: matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
          const int r = ncol + (lane % 8) + (j / 2) * 8, c = kk + (j % 2) * 8;
          ldmatrix_x4(b_frag, bt + r * SB::kCols + c);
        } else {
          // stored [k][n]: the same four matrices as 8 k-rows each, transposed
          const int r = kk + (lane % 8) + (j % 2) * 8, c = ncol + (j / 2) * 8;
          ldmatrix_x4_trans(b_frag, bt + r * SB::kCols + c);
        }
#pragma unroll
        for (int i = 0; i < T::kTilesM; ++i) {
          mma_bf16(acc[i][jn], a_frag[i], b_frag[0], b_frag[1]);
          mma_bf16(acc[i][jn + 1], a_frag[i], b_frag[2], b_frag[3]);
        }
      }
    }
    if (more) {  // the other buffer was last read in iteration kt−1, before its closing barrier
      store_tile<AKContig, T::kBM>(a_tile[buf ^ 1], a_regs);
      store_tile<BKContig, T::kBN>(b_tile[buf ^ 1], b_regs);
    }
    __syncthreads();
  }

  // epilogue: c0c1 = (row g, cols 2t, 2t+1), c2c3 = (row g+8, same cols)
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int i = 0; i < T::kTilesM; ++i)
#pragma unroll
    for (int jn = 0; jn < T::kTilesN; ++jn)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int row = m0 + wm0 + i * 16 + g + (r / 2) * 8;
        const int col = n0 + wn0 + jn * 8 + 2 * t + (r % 2);
        if (row >= p.M || col >= p.N) continue;
        const float v = acc[i][jn][r];
        if (partial) {
          partial[((size_t)blockIdx.z * p.M + row) * p.N + col] = v;
          continue;
        }
        epilogue_store<false, false>(p, row, col, v);  // gemm() refuses the GELU fields and non-fp32 views
      }
}

// C = epilogue(Σ_z partial[z]), summed in split order (deterministic); splits 0: the epilogue of
// zero sums. Params: GemmParams or GemmBf16Params.
template <class Params>
__global__ void gemm_reduce_kernel(const Params p, int splits, const float* __restrict__ partial) {
  const size_t total = (size_t)p.M * p.N;
  for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x)
    reduce_output(p, splits, partial, idx);
}

// dbias (N) += Σ_r dout[r·N + c] without scratch: one block per 32-column slab, lane = column,
// warp w sums rows w, w + W, w + 2W, … into kUnroll independent accumulators (combined in a fixed
// order), then warp 0 adds the W per-warp sums in warp order: deterministic. Src: float or bf16
// (summed widened, in the same order).
struct ColumnSumTraits {
  static constexpr int kCols = 32;   // columns per block (one per lane)
  static constexpr int kWarps = 32;  // row-parallel warps per block
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kUnroll = 4;  // independent loads in flight per thread
  static_assert(kCols == 32, "one column per lane");
  static_assert(kThreads <= 1024, "block size limit");
};

template <class Src>  // a template, so the header defines no external-linkage kernel
__global__ void __launch_bounds__(ColumnSumTraits::kThreads) column_sum_slab_kernel(float* __restrict__ dst,
                                                                                  const Src* __restrict__ src,
                                                                                  int rows, int C) {
  using CS = ColumnSumTraits;
  __shared__ float warp_sums[CS::kWarps][CS::kCols];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int c = blockIdx.x * CS::kCols + lane;
  float acc[CS::kUnroll];
#pragma unroll
  for (int u = 0; u < CS::kUnroll; ++u) acc[u] = 0.f;
  if (c < C) {
    constexpr int kStep = CS::kWarps * CS::kUnroll;  // rows per round over all warps
    int r = warp;
    for (; r + (CS::kUnroll - 1) * CS::kWarps < rows; r += kStep) {
#pragma unroll
      for (int u = 0; u < CS::kUnroll; ++u) acc[u] += widen(src[(size_t)(r + u * CS::kWarps) * C + c]);
    }
    for (; r < rows; r += CS::kWarps) acc[0] += widen(src[(size_t)r * C + c]);  // fewer than kUnroll rows left
  }
  float v = 0.f;
#pragma unroll
  for (int u = 0; u < CS::kUnroll; ++u) v += acc[u];
  warp_sums[warp][lane] = v;
  __syncthreads();
  if (warp == 0 && c < C) {
    float s = 0.f;
    for (int w = 0; w < CS::kWarps; ++w) s += warp_sums[w][lane];
    dst[c] += s;
  }
}

// How many K-splits: enough blocks to fill the GPU twice when the output has few tiles and K is
// long (the weight-gradient GEMMs: K = rows), each split at least 512 deep.
inline int split_k_count(int tiles, int K, size_t workspace_floats, size_t MN) {
  constexpr int kTargetBlocks = 2 * 132, kMinSplitDepth = 512, kMaxSplits = 32;
  if (tiles >= kTargetBlocks / 2 || K < 2 * kMinSplitDepth) return 1;
  int splits = std::min({ceil_div(kTargetBlocks, tiles), K / kMinSplitDepth, kMaxSplits});
  while (splits > 1 && (size_t)splits * MN > workspace_floats) --splits;
  return std::max(splits, 1);
}

template <bool AKContig, bool BKContig>
inline void launch(const GemmParams& p, cudaStream_t stream) {
  const int tiles_m = ceil_div(p.M, T::kBM), tiles_n = ceil_div(p.N, T::kBN);
  const bool swap = tiles_m > 65535;  // grid.y is limited to 65535
  if ((swap ? tiles_n : tiles_m) > 65535) throw std::invalid_argument("gemm: matrix too large for the grid");
  const int splits = p.workspace ? split_k_count(tiles_m * tiles_n, p.K, p.workspace_floats, (size_t)p.M * p.N) : 1;
  const int k_split = splits > 1 ? ceil_div(ceil_div(p.K, splits), T::kBK) * T::kBK : std::max(p.K, 1);
  const int used_splits = splits > 1 ? ceil_div(p.K, k_split) : 1;
  const dim3 grid(swap ? tiles_m : tiles_n, swap ? tiles_n : tiles_m, used_splits);
  auto vectorizable = [](const void* ptr, int ld) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && ld % 4 == 0; };
  gemm_kernel<AKContig, BKContig><<<grid, T::kThreads, 0, stream>>>(
      p, swap, k_split, used_splits > 1 ? p.workspace : nullptr, vectorizable(p.A.data, p.lda),
      vectorizable(p.B.data, p.ldb));
  EMAE_CHECK_LAUNCH("gemm_kernel");
  if (used_splits > 1) {
    const int blocks = (int)std::min<size_t>(((size_t)p.M * p.N + 255) / 256, 132 * 16);
    gemm_reduce_kernel<<<blocks, 256, 0, stream>>>(p, used_splits, p.workspace);
    EMAE_CHECK_LAUNCH("gemm_reduce_kernel");
  }
}

}  // namespace gemm_detail

// Throws std::invalid_argument naming the first bad field; shared by every GEMM path.
inline void check_gemm_params(const GemmParams& p) {
  auto bad = [](const std::string& what) { throw std::invalid_argument("gemm: " + what); };
  if (p.M < 0) bad("M must be >= 0, got " + std::to_string(p.M));
  if (p.N < 0) bad("N must be >= 0, got " + std::to_string(p.N));
  if (p.K < 0) bad("K must be >= 0, got " + std::to_string(p.K));
  if (p.gelu_out && p.gelu_inp) bad("gelu_out and gelu_inp exclude each other (one GELU per epilogue)");
  if (!p.C.is_f32() && p.accumulate) bad("accumulate needs an fp32 C (a bf16 C is assigned)");
  if (!p.C.is_f32() && p.residual) bad("a residual needs an fp32 C (the residual stream is fp32)");
  if (p.workspace_floats > 0 && !p.workspace) bad("workspace is null but workspace_floats > 0");
  if (p.a_sums) {  // read even when N == 0
    if (!p.trans_a) bad("a_sums needs trans_a (A stored (K, M), the dweight layout)");
    const size_t need = column_sum_scratch_floats(p.K, p.M);
    if (p.workspace_floats < need)
      bad("a_sums needs a workspace of " + std::to_string(need) + " floats, got " + std::to_string(p.workspace_floats));
    if (p.M > 0 && p.K > 0 && (!p.A || p.lda < p.M)) bad("a_sums: A is null or lda < M");
  }
  if (p.M == 0 || p.N == 0) return;  // nothing to write, nothing read
  if (!p.C) bad("C is null");
  if (p.ldc < p.N) bad("ldc must be >= N (" + std::to_string(p.N) + "), got " + std::to_string(p.ldc));
  if (p.K > 0) {  // K == 0: A and B are never read
    if (!p.A) bad("A is null");
    if (!p.B) bad("B is null");
    const int a_row = p.trans_a ? p.M : p.K, b_row = p.trans_b ? p.K : p.N;  // stored row lengths
    if (p.lda < a_row) bad("lda must be >= " + std::to_string(a_row) + ", got " + std::to_string(p.lda));
    if (p.ldb < b_row) bad("ldb must be >= " + std::to_string(b_row) + ", got " + std::to_string(p.ldb));
  }
}

// Whether every view of p is fp32 (all the mma path reads and writes).
inline bool gemm_views_f32(const GemmParams& p) {
  return p.A.is_f32() && p.B.is_f32() && p.C.is_f32() && p.gelu_out.is_f32() && p.gelu_inp.is_f32();
}

inline void gemm(const GemmParams& p, cudaStream_t stream) {
  check_gemm_params(p);
  if (!gemm_views_f32(p))
    throw std::invalid_argument("gemm (mma path) reads and writes fp32: bf16 activations need EMAE_CUDA_GEMM=sm80 or sm90");
  if (gelu_epilogue(p))  // this kernel has no GELU instantiation: the backend composes gelu_forward/backward
    throw std::invalid_argument("gemm (mma path): gelu_out and gelu_inp need a bf16 path (sm80, sm90)");
  if (p.M > 0 && p.N > 0) {
    // A K-contiguous unless trans_a; B K-contiguous when trans_b
    const bool a_k = !p.trans_a, b_k = p.trans_b;
    if (a_k && b_k) gemm_detail::launch<true, true>(p, stream);
    else if (a_k) gemm_detail::launch<true, false>(p, stream);
    else if (b_k) gemm_detail::launch<false, true>(p, stream);
    else gemm_detail::launch<false, false>(p, stream);
  }
  // a pass of its own here (the bf16 paths fuse it into their conversion of A); after the product,
  // in stream order, as both use the workspace
  if (p.a_sums) column_sum_accumulate(p.a_sums, p.A.f32("gemm A"), p.K, p.M, p.lda, p.workspace, stream);
}

// The forward product of a linear layer: out (R, N) = inp (R, K) · weight (N, K)ᵀ + bias
inline GemmParams linear_forward_params(Act out, ActIn inp, ActIn weight, const float* bias, int R, int K, int N) {
  GemmParams p;
  p.trans_b = true;
  p.M = R; p.N = N; p.K = K;
  p.A = inp; p.lda = K; p.B = weight; p.ldb = K; p.C = out; p.ldc = N;
  p.bias = bias;
  return p;
}

// out (R, N) = inp (R, K) · weight (N, K)ᵀ + bias + residual; run(GemmParams) does the product
// (gemm() below, or another kernel path: gemm_dispatch.cuh). The views' types pass through to the
// GemmParams unchanged (all fp32: exactly the fp32 problem).
template <class Run>
inline void matmul_forward_with(Run&& run, Act out, ActIn inp, ActIn weight, const float* bias, const float* residual,
                                int R, int K, int N) {
  GemmParams p = linear_forward_params(out, inp, weight, bias, R, K, N);
  p.residual = residual;
  run(p);
}

// pre (R, N) = inp (R, K) · weight (N, K)ᵀ + bias;  act (R, N) = gelu(pre): one GEMM with the GELU in its epilogue
template <class Run>
inline void matmul_gelu_forward_with(Run&& run, Act pre, Act act, ActIn inp, ActIn weight, const float* bias, int R,
                                     int K, int N) {
  GemmParams p = linear_forward_params(pre, inp, weight, bias, R, K, N);
  p.gelu_out = act;
  run(p);
}

inline void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, const float* residual,
                           int R, int K, int N, cudaStream_t stream) {
  matmul_forward_with([&](const GemmParams& p) { gemm(p, stream); }, out, inp, weight, bias, residual, R, K, N);
}

// dbias (N) += column sums of dout (R, N), deterministic, no scratch; a bf16 dout is summed widened
// to fp32 in the same order (= the sums of an fp32 array holding its values, bit for bit)
inline void column_sum_accumulate_noscratch(float* dbias, ActIn dout, int R, int N, cudaStream_t stream) {
  if (R < 0) throw std::invalid_argument("column_sum_accumulate_noscratch: R must be >= 0");
  if (N < 0) throw std::invalid_argument("column_sum_accumulate_noscratch: N must be >= 0");
  if (R == 0 || N == 0) return;
  if (!dbias) throw std::invalid_argument("column_sum_accumulate_noscratch: dbias is null");
  if (!dout) throw std::invalid_argument("column_sum_accumulate_noscratch: dout is null");
  using CS = gemm_detail::ColumnSumTraits;
  const dim3 grid(ceil_div(N, CS::kCols));
  if (dout.is_bf16())
    gemm_detail::column_sum_slab_kernel<<<grid, CS::kThreads, 0, stream>>>(
        dbias, static_cast<const __nv_bfloat16*>(dout.data), R, N);
  else
    gemm_detail::column_sum_slab_kernel<<<grid, CS::kThreads, 0, stream>>>(dbias, dout.f32("dout"), R, N);
  EMAE_CHECK_LAUNCH("column_sum_slab_kernel");
}

// split-K partials for dweight (at most 32 splits of N × K), or the dbias column sums
inline size_t matmul_backward_scratch_floats(int R, int K, int N) {
  // split_k_count keeps splits · N · K ≤ (2·132 + tiles) · 128² when it splits at all
  const size_t split_partials = std::min((size_t)32 * N * K, (size_t)400 * 128 * 128);
  return std::max(column_sum_scratch_floats(R, N), split_partials);
}

// dinp (R, K) = dout (R, N) · weight (N, K) [⊙ gelu'(gelu_inp (R, K)) when given] (assigned;
// skipped when null); dweight (N, K) += doutᵀ · inp (split over the rows when N·K has few tiles);
// dbias (N) += Σ_rows dout (skipped when null; the dweight GEMM's a_sums when there is scratch).
// scratch: matmul_backward_scratch_floats(R, K, N) floats, used by one kernel at a time (stream
// order), or null (no split-K, dbias without scratch). dweight and dbias are fp32 (parameter
// gradients); the other views may be bf16 on the bf16 paths, dbias then summing dout's bf16 values
// widened to fp32, in the fp32 path's order.
template <class Run>
inline void matmul_backward_with(Run&& run, Act dinp, float* dweight, float* dbias, ActIn dout, ActIn inp,
                                 ActIn weight, int R, int K, int N, float* scratch, cudaStream_t stream,
                                 ActIn gelu_inp = nullptr) {
  if (dinp) {
    GemmParams p;
    p.M = R; p.N = K; p.K = N;
    p.A = dout; p.lda = N; p.B = weight; p.ldb = K; p.C = dinp; p.ldc = K;
    p.gelu_inp = gelu_inp;
    run(p);
  }
  GemmParams p;
  p.trans_a = true;
  p.M = N; p.N = K; p.K = R;
  p.A = dout; p.lda = N; p.B = inp; p.ldb = K; p.C = dweight; p.ldc = K; p.accumulate = true;
  p.workspace = scratch;
  p.workspace_floats = scratch ? matmul_backward_scratch_floats(R, K, N) : 0;
  if (scratch) p.a_sums = dbias;  // Σ_rows dout = the row sums of op(A) = doutᵀ
  run(p);
  if (dbias && !scratch) column_sum_accumulate_noscratch(dbias, dout, R, N, stream);
}

inline void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                            const float* weight, int R, int K, int N, float* scratch, cudaStream_t stream) {
  matmul_backward_with([&](const GemmParams& p) { gemm(p, stream); }, dinp, dweight, dbias, dout, inp, weight, R, K, N,
                       scratch, stream);
}

// The same without scratch: no split-K for dweight, dbias by column_sum_accumulate_noscratch.
inline void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                            const float* weight, int R, int K, int N, cudaStream_t stream) {
  matmul_backward(dinp, dweight, dbias, dout, inp, weight, R, K, N, static_cast<float*>(nullptr), stream);
}

}  // namespace emae::cuda
